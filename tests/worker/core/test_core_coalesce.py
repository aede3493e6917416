"""The write pass's encoding: RFC 6455 frames, batching identical to the writer task's,
one build per distinct sequence, and what the metrics read from the items."""

from __future__ import annotations

import json
import random

import pytest
from websockets.frames import Frame, Opcode
from websockets.streams import StreamReader

from clarion_worker.core.coalesce import PassEncoder
from clarion_worker.core.envelope import BATCH_OVERHEAD_BYTES, utf8_size
from clarion_worker.core.outbox import Item, Outbox, control_item, event_item
from clarion_worker.core.wsframe import text_frame


def parse_frames(data: bytes) -> list[Frame]:
    """Frames as a WebSocket client reads them (websockets' own parser, unmasked)."""
    reader = StreamReader()
    reader.feed_data(data)
    reader.feed_eof()
    frames: list[Frame] = []
    while reader.buffer:  # at_eof() is a generator in websockets' sans-I/O reader
        parser = Frame.parse(reader.read_exact, mask=False)
        with pytest.raises(StopIteration) as done:
            next(parser)
        frames.append(done.value.value)
    return frames


def env(n: int, pad: str = "", kafka_ts: int | None = None) -> Item:
    tail = f',"kafkaTs":{kafka_ts}}}' if kafka_ts is not None else "}"
    return event_item('{"type":"event","id":"' + str(n) + '","data":"' + pad + '"' + tail, kafka_ts)


PONG = control_item('{"type":"pong"}')


@pytest.mark.parametrize("length", [0, 1, 125, 126, 127, 65535, 65536, 200_000])
def test_text_frames_parse_back_at_every_length_boundary(length: int) -> None:
    payload = ("é" * length).encode()[:length]
    (frame,) = parse_frames(text_frame(payload))
    assert frame.opcode is Opcode.TEXT
    assert frame.fin
    assert bytes(frame.data) == payload


def test_several_frames_in_one_write_parse_as_separate_messages() -> None:
    data = text_frame(b'{"a":1}') + text_frame(b"x" * 300) + text_frame(b"")
    assert [bytes(f.data) for f in parse_frames(data)] == [b'{"a":1}', b"x" * 300, b""]


def _writer_task_frames(
    items: list[Item], batch: bool, max_events: int, max_bytes: int
) -> list[str]:
    """What the per-connection writer would send for the same queue (the reference)."""
    box = Outbox(
        max_events=10**6,
        max_bytes=10**9,
        batch_max_events=max_events if batch else 1,
        batch_max_bytes=max_bytes,
    )
    for item in items:
        box.offer(item)
    frames: list[str] = []
    while (frame := box.take_frame(batch)) is not None:
        frames.append(frame)
    return frames


@pytest.mark.parametrize("seed", range(40))
def test_encoding_sends_exactly_what_the_writer_task_would(seed: int) -> None:
    rng = random.Random(seed)
    items: list[Item] = []
    for n in range(rng.randint(1, 40)):
        roll = rng.random()
        if roll < 0.75:
            items.append(env(n, rng.choice(["", "é", "x" * rng.randint(0, 300)])))
        elif roll < 0.9:
            items.append(PONG)
        else:
            items.append(control_item('{"type":"welcome","position":"' + str(n) + '"}'))
    batch = rng.random() < 0.7
    max_events = rng.randint(1, 10)
    max_bytes = BATCH_OVERHEAD_BYTES + rng.randint(1, 1500)
    encoder = PassEncoder(batch_max_events=max_events, batch_max_bytes=max_bytes)
    encoded = encoder.encode(tuple(items), batch)
    frames = [bytes(f.data).decode() for f in parse_frames(encoded.data)]
    assert frames == _writer_task_frames(items, batch, max_events, max_bytes)
    batches = [f for f in frames if f.startswith('{"type":"batch"')]
    assert encoded.batch_frames == len(batches)
    assert encoded.one_frames == len(frames) - len(batches)
    assert encoded.events == sum(1 for item in items if item.event)
    for frame in batches:
        assert len(json.loads(frame)["events"]) <= max_events
        assert utf8_size(frame) <= max_bytes


def test_one_build_per_distinct_sequence_and_per_mode() -> None:
    encoder = PassEncoder(batch_max_events=8, batch_max_bytes=10_000)
    a, b = env(1), env(2)
    first = encoder.encode((a, b), batch=True)
    assert encoder.encode((a, b), batch=True) is first  # every other recipient: no work
    plain = encoder.encode((a, b), batch=False)
    assert plain is not first
    assert [json.loads(f.data)["id"] for f in parse_frames(plain.data)] == ["1", "2"]
    (frame,) = parse_frames(first.data)
    assert [e["id"] for e in json.loads(frame.data)["events"]] == ["1", "2"]
    assert encoder.encode((a,), batch=True).data == text_frame(a.text.encode())


def test_counts_and_oldest_kafka_timestamp() -> None:
    encoder = PassEncoder(batch_max_events=2, batch_max_bytes=10_000)
    items = (PONG, env(1, kafka_ts=1000), env(2, kafka_ts=2000), env(3))
    encoded = encoder.encode(items, batch=True)
    assert (encoded.events, encoded.one_frames, encoded.batch_frames) == (3, 2, 1)
    assert encoded.oldest_kafka_ms == 1000
    control = encoder.encode((PONG,), batch=True)
    assert (control.events, control.oldest_kafka_ms) == (0, None)


def test_the_latency_sample_is_the_items_kafka_timestamp_never_read_from_its_text() -> None:
    # A payload key named kafkaTs cannot stand in for the record's timestamp, in an
    # event with one or without (issue 14 item 2).
    fooled = '{"type":"event","id":"1","data":{"kafkaTs":5},"ts":9}'
    encoder = PassEncoder(batch_max_events=10, batch_max_bytes=10_000)
    encoded = encoder.encode((event_item(fooled),), False)
    assert (encoded.events, encoded.oldest_kafka_ms) == (1, None)
    encoded = encoder.encode((event_item(fooled + ',"kafkaTs":8}', 7),), False)
    assert (encoded.events, encoded.oldest_kafka_ms) == (1, 7)


def test_take_all_empties_the_queue_and_rearms_the_ready_signal() -> None:
    ready: list[int] = []
    box = Outbox(max_events=3, max_bytes=100, on_ready=lambda: ready.append(1))
    a = Item("a", 1, True)
    box.offer(a)
    box.offer_control("b")
    assert [(item is a, item.text) for item in box.take_all()] == [(True, "a"), (False, "b")]
    assert (len(box), box.nbytes) == (0, 0)
    assert box.take_all() == ()
    assert box.offer(Item("c", 1, True))
    assert len(ready) == 2
