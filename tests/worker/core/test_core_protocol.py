"""Wire protocol: control frames, client-frame parsing, close codes, envelopes, batches."""

from __future__ import annotations

import json
import random

import pytest

from clarion_worker.core.envelope import (
    BATCH_OVERHEAD_BYTES,
    batch_frame,
    render_body,
    sse_message,
    utf8_size,
    with_id,
)
from clarion_worker.core.events import Event
from clarion_worker.core.protocol import (
    PONG_FRAME,
    ClientFrameError,
    CloseCode,
    Ping,
    Pong,
    Resume,
    Subscribe,
    disconnect_label,
    error_frame,
    parse_client_frame,
    reconnect_frame,
    reset_frame,
    welcome_frame,
)


def parse(text: str | bytes) -> object:
    return parse_client_frame(text, max_bytes=4096)


def test_control_frames() -> None:
    welcome = json.loads(
        welcome_frame(connection_id="c1", replica_id="w-0", heartbeat_seconds=25.0, batch=True)
    )
    assert welcome == {
        "type": "welcome",
        "connectionId": "c1",
        "replicaId": "w-0",
        "heartbeatSeconds": 25,
        "resumable": True,
        "batch": True,
    }
    assert (
        json.loads(
            welcome_frame(connection_id="c", replica_id="r", heartbeat_seconds=2.5, batch=False)
        )["heartbeatSeconds"]
        == 2.5
    )
    assert json.loads(PONG_FRAME) == {"type": "pong"}
    assert json.loads(reconnect_frame(after_ms=1234)) == {
        "type": "reconnect",
        "reason": "drain",
        "afterMs": 1234,
    }
    assert json.loads(reset_frame("too_old")) == {"type": "reset", "reason": "too_old"}
    assert json.loads(error_frame(CloseCode.BAD_FRAME, "nope")) == {
        "type": "error",
        "code": 4009,
        "message": "nope",
    }


def test_client_frames() -> None:
    assert parse('{"type":"ping"}') == Ping()
    assert parse("ping") == Ping()
    assert parse(" ping\n") == Ping()
    assert parse('{"type":"pong"}') == Pong()
    assert parse('{"type":"resume","lastId":"AQA"}') == Resume("AQA")
    assert parse('{"type":"subscribe","eventTypes":["A","B","A"]}') == Subscribe(
        frozenset({"A", "B"})
    )
    assert parse('{"type":"subscribe","eventTypes":[]}') == Subscribe(None)
    assert parse('{"type":"subscribe"}') == Subscribe(None)


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        (b'{"type":"ping"}', CloseCode.UNSUPPORTED_DATA),
        ("x" * 4097, CloseCode.MESSAGE_TOO_BIG),
        ("é" * 2049, CloseCode.MESSAGE_TOO_BIG),  # 2049 chars, 4098 bytes
        ("pong!", CloseCode.BAD_FRAME),
        ("", CloseCode.BAD_FRAME),
        ("[1]", CloseCode.BAD_FRAME),
        ('{"type":"hello"}', CloseCode.BAD_FRAME),
        ('{"kind":"ping"}', CloseCode.BAD_FRAME),
        ('{"type":"resume"}', CloseCode.BAD_FRAME),
        ('{"type":"resume","lastId":5}', CloseCode.BAD_FRAME),
        ('{"type":"resume","lastId":""}', CloseCode.BAD_FRAME),
        ('{"type":"subscribe","eventTypes":"A"}', CloseCode.BAD_FRAME),
        ('{"type":"subscribe","eventTypes":[1]}', CloseCode.BAD_FRAME),
        ('{"type":"subscribe","eventTypes":[""]}', CloseCode.BAD_FRAME),
        ('{"type":"subscribe","eventTypes":' + json.dumps(["t"] * 257) + "}", CloseCode.BAD_FRAME),
        ('{"type":"ping","x":NaN}', CloseCode.BAD_FRAME),
        ("[" * 4000, CloseCode.BAD_FRAME),
    ],
)
def test_bad_client_frames(frame: str | bytes, code: CloseCode) -> None:
    with pytest.raises(ClientFrameError) as caught:
        parse(frame)
    assert caught.value.code is code
    assert caught.value.message


def test_client_frame_parser_never_raises_anything_else() -> None:
    rng = random.Random(7)
    alphabet = '{}[]":,pingtyperesumelastIdsubscribeeventTypes\\u0000 1e9NaN'
    codes: set[CloseCode] = set()
    for _ in range(3000):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randrange(0, 60)))
        try:
            parse(text)
        except ClientFrameError as error:
            codes.add(error.code)
    assert codes == {CloseCode.BAD_FRAME}


def make_event(**kw: object) -> Event:
    base: dict[str, object] = {
        "topic": "approvals",
        "partition": 0,
        "offset": 1,
        "timestamp_ms": 1_700_000_000_500,
        "type": "APPROVAL_PENDING",
        "organization": "org-1",
        "user": None,
        "audience": "organization",
        "data_json": '{"title":"Crédit"}',
        "producer_ts_ms": 1_700_000_000_000,
    }
    base.update(kw)
    return Event(**base)  # type: ignore[arg-type]


def test_envelope_shape() -> None:
    envelope = with_id("AQID", render_body(make_event()))
    assert json.loads(envelope) == {
        "type": "event",
        "id": "AQID",
        "topic": "approvals",
        "eventType": "APPROVAL_PENDING",
        "organizationId": "org-1",
        "data": {"title": "Crédit"},
        "ts": 1_700_000_000_000,
        "kafkaTs": 1_700_000_000_500,
    }
    assert "Crédit" in envelope
    user_event = json.loads(with_id("x", render_body(make_event(user='u"1', producer_ts_ms=None))))
    assert user_event["userId"] == 'u"1'
    assert user_event["ts"] == 1_700_000_000_500  # falls back to the Kafka timestamp
    bare = json.loads(with_id("x", render_body(make_event(timestamp_ms=None, producer_ts_ms=None))))
    assert bare["ts"] is None
    assert "kafkaTs" not in bare


def test_batch_frame_joins_without_reserializing() -> None:
    items = [with_id(str(i), render_body(make_event(offset=i))) for i in range(3)]
    frame = batch_frame(items)
    assert json.loads(frame) == {"type": "batch", "events": [json.loads(i) for i in items]}
    assert utf8_size(frame) == BATCH_OVERHEAD_BYTES + sum(map(utf8_size, items)) + 2


def test_utf8_size_is_exact() -> None:
    for text in ["", "abc", "é", "日本", "😀x"]:
        assert utf8_size(text) == len(text.encode())


def test_sse_message() -> None:
    assert sse_message('{"a":1}', "ID") == 'id: ID\ndata: {"a":1}\n\n'
    assert sse_message('{"a":1}') == 'data: {"a":1}\n\n'
    envelope = with_id("x", render_body(make_event(data_json=json.dumps("line\nbreak"))))
    assert "\n" not in envelope  # one data line is enough


def test_welcome_carries_a_position_only_when_given() -> None:
    from clarion_worker.core.protocol import welcome_frame

    plain = json.loads(
        welcome_frame(connection_id="c", replica_id="r", heartbeat_seconds=25, batch=False)
    )
    live = json.loads(
        welcome_frame(
            connection_id="c", replica_id="r", heartbeat_seconds=25, batch=False, position="AQ"
        )
    )
    assert "position" not in plain
    assert live["position"] == "AQ"


def test_disconnect_labels_are_bounded() -> None:
    """A client picks its close code: the metric label must not become a client's choice."""
    assert disconnect_label(1009) == "1009"
    assert disconnect_label(1006) == "1006"
    assert disconnect_label(4008) == "4008"
    assert disconnect_label(1005) == "1000"  # a close frame without a code: a plain close
    assert disconnect_label(3999) == "other"
    assert disconnect_label(4321) == "other"
    assert error_frame(1009, "too big") == '{"type":"error","code":1009,"message":"too big"}'
