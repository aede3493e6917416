"""The write pass's decisions with stand-in sockets: what is written, skipped or closed.

The real sockets are exercised by tests/worker/test_worker_integration.py (both write
paths); these pin the pass's rules, including that one failing client cannot stall it.
"""

from __future__ import annotations

import asyncio
import time

import pytest
from prometheus_client import CollectorRegistry

from clarion_worker.core.outbox import Item, Outbox, event_item
from clarion_worker.core.protocol import CloseCode
from clarion_worker.core.settings import LimitsSettings
from clarion_worker.direct import CLOSED, PAUSED, WRITABLE
from clarion_worker.flusher import Flusher
from clarion_worker.metrics import WorkerMetrics


class FakeSink:
    def __init__(self, state: int = WRITABLE, fail: bool = False) -> None:
        self._state = state
        self.fail = fail
        self.written: list[bytes] = []
        self.closed_with: tuple[int, str] | None = None

    def state(self) -> int:
        return self._state

    def write(self, data: bytes) -> None:
        if self.fail:
            raise RuntimeError("transport is closed")
        self.written.append(data)

    def close(self, code: int, reason: str, *, handshake_seconds: float) -> None:
        self.closed_with = (code, reason)


class FakeSession:
    """What the pass needs (``flusher.Writable``), nothing else. ``wrote`` records what
    the pass reported and answers whether it was replayed as ``replaying`` says (the
    session's own hand-over rule is tests/worker/test_sessions.py's)."""

    def __init__(self, sink: FakeSink, *, replaying: bool = False) -> None:
        self.sink = sink
        self.marked = False
        self.outbox = Outbox(max_events=100, max_bytes=10**6)
        self.batch = False
        self.close_code: CloseCode | None = None
        self.pending_close: CloseCode | None = None
        self.close_reason = ""
        self.replaying = replaying
        self.reported: list[tuple[int, int, int]] = []

    @property
    def events_written(self) -> bool:
        return any(events for _frames, events, _queued in self.reported)

    def wrote(self, frames: int, events: int, queued: int) -> bool:
        self.reported.append((frames, events, queued))
        return self.replaying

    def request_close(self, code: CloseCode, reason: str = "") -> None:
        self.close_code = code
        self.close_reason = reason


def flusher() -> Flusher:
    return Flusher(LimitsSettings(), WorkerMetrics.create(CollectorRegistry()))


EVENT = '{"type":"event","id":"x","data":1}'


async def test_a_failing_client_is_closed_and_the_others_still_get_their_frames() -> None:
    flush = flusher()
    broken, healthy = FakeSession(FakeSink(fail=True)), FakeSession(FakeSink())
    for session in (broken, healthy):
        session.outbox.offer(event_item(EVENT))
        flush.mark(session)  # type: ignore[arg-type]
    await asyncio.sleep(0)  # the pass runs with call_soon
    assert healthy.sink.written == [b"\x81" + bytes([len(EVENT)]) + EVENT.encode()]
    assert healthy.events_written
    assert broken.close_code is CloseCode.INTERNAL_ERROR
    assert not broken.marked
    assert not healthy.marked


async def test_paused_sockets_wait_lost_ones_are_skipped_closing_ones_flush_and_close() -> None:
    flush = flusher()
    paused = FakeSession(FakeSink(PAUSED))
    lost = FakeSession(FakeSink(CLOSED))
    closing = FakeSession(FakeSink(PAUSED))
    for session in (paused, lost, closing):
        session.outbox.offer(event_item(EVENT))
    closing.close_code = CloseCode.SLOW_CONSUMER  # must go out even into a full socket
    closing.close_reason = "slow"
    for session in (paused, lost, closing):
        flush.mark(session)  # type: ignore[arg-type]
    await asyncio.sleep(0)
    assert paused.sink.written == []
    assert len(paused.outbox) == 1  # kept until resume_writing marks it again
    assert lost.sink.written == []
    assert len(closing.sink.written) == 1
    assert closing.sink.closed_with == (int(CloseCode.SLOW_CONSUMER), "slow")
    paused.sink._state = WRITABLE
    flush.mark(paused)  # type: ignore[arg-type]
    await asyncio.sleep(0)
    assert len(paused.sink.written) == 1
    assert len(paused.outbox) == 0


async def test_a_drain_closes_only_once_the_queue_is_written() -> None:
    flush = flusher()
    session = FakeSession(FakeSink())
    session.outbox.offer_control('{"type":"reconnect"}')
    session.pending_close = CloseCode.DRAIN
    session.close_reason = "draining"
    flush.mark(session)  # type: ignore[arg-type]
    flush.mark(session)  # type: ignore[arg-type]  # marked twice: written once
    await asyncio.sleep(0)
    assert len(session.sink.written) == 1
    assert session.sink.closed_with == (int(CloseCode.DRAIN), "draining")


class BrokenSink(FakeSink):
    """A sink whose write fails the way a defect does, not the way a socket does."""

    def write(self, data: bytes) -> None:
        raise AttributeError("'DirectWebSocketProtocol' object has no attribute 'transport'")


async def test_a_defect_is_raised_not_turned_into_a_close_and_the_others_keep_their_turn() -> None:
    # A defect closing every client with 1011 would be a reconnect storm (issue 14 item 3).
    flush = flusher()
    broken, healthy = FakeSession(BrokenSink()), FakeSession(FakeSink())
    for session in (broken, healthy):
        session.outbox.offer(event_item(EVENT))
        flush.mark(session)  # type: ignore[arg-type]
    with pytest.raises(AttributeError):
        flush.flush()
    assert broken.close_code is None
    assert healthy.marked  # back in the queue of the next pass
    await asyncio.sleep(0)
    assert len(healthy.sink.written) == 1
    assert not healthy.marked


def _event(kafka_ms: int) -> Item:
    text = f'{{"type":"event","id":"x","data":1,"ts":{kafka_ms},"kafkaTs":{kafka_ms}}}'
    return event_item(text, kafka_ms)


async def test_replayed_frames_are_kept_out_of_live_delivery_latency() -> None:
    registry = CollectorRegistry()
    flush = Flusher(LimitsSettings(), WorkerMetrics.create(registry))
    hour_old = int(time.time() * 1000) - 3_600_000
    resuming = FakeSession(FakeSink(), replaying=True)
    frame = _event(hour_old)
    resuming.outbox.offer_replay(frame)
    resuming.outbox.offer_replay(frame)
    resuming.outbox.offer_control('{"type":"pong"}')
    flush.mark(resuming)  # type: ignore[arg-type]
    await asyncio.sleep(0)
    assert resuming.reported == [(3, 2, 0)]  # frames, events, left queued
    live_count = "clarion_worker_delivery_latency_seconds_count"
    replay_sum = "clarion_worker_replay_delivery_latency_seconds_sum"
    assert registry.get_sample_value(live_count, {"transport": "websocket"}) == 0
    assert (registry.get_sample_value(replay_sum, {"transport": "websocket"}) or 0) >= 3599
    resuming.replaying = False  # the session handed over to live
    recent = _event(int(time.time() * 1000))
    resuming.outbox.offer(recent)
    flush.mark(resuming)  # type: ignore[arg-type]
    await asyncio.sleep(0)
    assert resuming.reported[1:] == [(1, 1, 0)]
    assert registry.get_sample_value(live_count, {"transport": "websocket"}) == 1
    live_sum = "clarion_worker_delivery_latency_seconds_sum"
    assert (registry.get_sample_value(live_sum, {"transport": "websocket"}) or 0) < 60
