"""Log lines never carry credentials (issue 12, item 6)."""

from __future__ import annotations

import json
import logging
import sys

import jwt
import pytest

from clarion_worker.logs import JsonFormatter, redact

TOKEN = jwt.encode({"sub": "alice", "exp": 4102444800}, "s" * 32, algorithm="HS256")


def _line(logger: str, msg: str, *args: object, **extra: object) -> str:
    record = logging.LogRecord(logger, logging.INFO, __file__, 1, msg, args, None)
    record.__dict__.update(extra)
    return JsonFormatter().format(record)


def test_uvicorns_per_connection_line_loses_the_query_token() -> None:
    # The exact call uvicorn's websockets-sansio protocol makes on every accept.
    line = _line(
        "uvicorn.error",
        '%s - "WebSocket %s" [accepted]',
        "127.0.0.1:50312",
        f"/ws/dashboard?access_token={TOKEN}&lastId=AQC",
    )
    assert TOKEN not in line
    assert TOKEN.split(".")[2] not in line
    message = json.loads(line)["msg"]  # still valid JSON, and still useful
    assert message == (
        '127.0.0.1:50312 - "WebSocket /ws/dashboard?access_token=[redacted]&lastId=AQC" [accepted]'
    )


@pytest.mark.parametrize(
    "text",
    [
        f"Authorization: Bearer {TOKEN}",
        f"subprotocols ['clarion.v1', 'bearer.{TOKEN}']",
        f"could not decode {TOKEN!r}",
        f"GET /sse/dashboard?ACCESS_TOKEN={TOKEN}",
    ],
)
def test_every_place_a_token_can_hide_is_redacted(text: str) -> None:
    assert TOKEN not in redact(text)
    line = _line("clarion.worker", "seen", detail=text)
    assert TOKEN not in line
    json.loads(line)


def test_exception_text_is_redacted_too() -> None:
    try:
        raise ValueError(f"bad token {TOKEN}")
    except ValueError:
        record = logging.LogRecord("x", logging.ERROR, __file__, 1, "boom", (), sys.exc_info())
    line = JsonFormatter().format(record)
    assert TOKEN not in line
    assert "bad token [redacted]" in json.loads(line)["exc"]


def test_a_line_keeps_its_fields_through_python_json_logger() -> None:
    # The shape operators' log queries rely on: ts, level, logger, msg, then the extras.
    record = logging.LogRecord(
        "clarion.worker", logging.WARNING, __file__, 1, "drained %s", ("x",), None
    )
    record.__dict__.update({"seconds": 1.5, "left": 2, "error": ValueError("gone")})
    line = json.loads(JsonFormatter().format(record))
    assert line == {
        "ts": round(record.created, 3),
        "level": "warning",
        "logger": "clarion.worker",
        "msg": "drained x",
        "seconds": 1.5,
        "left": 2,
        "error": "gone",
    }
