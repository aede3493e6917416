"""The wire protocol between the worker and its clients (JSON text frames).

Server to client (all built here, except the event envelope: see ``envelope``)::

    {"type":"welcome","connectionId":"c-1","replicaId":"worker-0","heartbeatSeconds":25,
     "resumable":true,"batch":false}
    {"type":"event","id":"<cursor>","topic":..,"eventType":..,"organizationId":..,
     "userId":..,"data":..,"ts":..,"kafkaTs":..}              (see envelope.py)
    {"type":"batch","events":[<event>,<event>,...]}           (clients that opted in)
    {"type":"pong"}
    {"type":"ping"}                                           (application heartbeat)
    {"type":"reconnect","reason":"drain","afterMs":1234}
    {"type":"reset","reason":"beyond_retention"}              (refetch state, then go live)
    {"type":"error","code":4009,"message":"..."}

Client to server: ``{"type":"ping"}`` or the bare text ``ping`` (answered with ``pong``),
``{"type":"pong"}`` (answer to a server ping), ``{"type":"resume","lastId":"<cursor>"}``,
``{"type":"subscribe","eventTypes":["A","B"]}`` (narrowing; empty or absent means all).
Anything else is a protocol violation reported as ``ClientFrameError``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Final

# The close codes are the contract's: the Python client (clarion-client) reads them too.
from clarion_contract.close_codes import CloseCode as CloseCode

#: 1005 ("no status") is what a peer's close frame without a code reads as: a plain close.
_NO_STATUS: Final = 1005
_KNOWN_CODES: Final = frozenset(int(code) for code in CloseCode)


def disconnect_label(code: int) -> str:
    """The ``code`` label of a disconnect: known codes as they are, 1005 as 1000, and any
    other (a client may close with any 3000-4999 code) as ``other``, so a client can never
    grow the metric's label set."""
    if code == _NO_STATUS:
        return str(int(CloseCode.NORMAL))
    return str(code) if code in _KNOWN_CODES else "other"


def _dumps(value: object) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


# ---- server -> client control frames -------------------------------------------------

PONG_FRAME: Final = '{"type":"pong"}'
PING_FRAME: Final = '{"type":"ping"}'


def welcome_frame(
    *,
    connection_id: str,
    replica_id: str,
    heartbeat_seconds: float,
    batch: bool,
    position: str | None = None,
) -> str:
    """The first frame of every session: identity, heartbeat cadence and negotiated features.

    ``position`` (sessions that start live) is a resume id for "now": a client that gets
    disconnected before its first event resumes from it instead of losing what was sent
    while it was away.
    """
    heartbeat: float | int = heartbeat_seconds
    if float(heartbeat_seconds).is_integer():
        heartbeat = int(heartbeat_seconds)  # "25" reads better than "25.0" for clients
    frame: dict[str, object] = {
        "type": "welcome",
        "connectionId": connection_id,
        "replicaId": replica_id,
        "heartbeatSeconds": heartbeat,
        "resumable": True,
        "batch": batch,
    }
    if position is not None:
        frame["position"] = position
    return _dumps(frame)


def reconnect_frame(*, after_ms: int, reason: str = "drain") -> str:
    """Advice to reconnect after ``after_ms`` (jittered by the drain plan)."""
    return _dumps({"type": "reconnect", "reason": reason, "afterMs": after_ms})


def reset_frame(reason: str) -> str:
    """The client's cursor cannot be honoured: it must refetch its state, then go live."""
    return _dumps({"type": "reset", "reason": reason})


def error_frame(code: int, message: str) -> str:
    """An error report, usually sent right before closing with the same ``code``."""
    return _dumps({"type": "error", "code": int(code), "message": message})


# ---- client -> server frames ---------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Ping:
    """Application-level ping from the client; answer with ``PONG_FRAME``."""


@dataclass(frozen=True, slots=True)
class Pong:
    """The client's answer to a server ``ping``."""


@dataclass(frozen=True, slots=True)
class Resume:
    """Resume after ``last_id`` (an opaque cursor from an earlier event id)."""

    last_id: str


@dataclass(frozen=True, slots=True)
class Subscribe:
    """Narrow the stream to ``event_types``; ``None`` means every type."""

    event_types: frozenset[str] | None


ClientFrame = Ping | Pong | Resume | Subscribe

MAX_SUBSCRIBED_TYPES: Final = 256
MAX_EVENT_TYPE_LENGTH: Final = 200
MAX_RESUME_ID_LENGTH: Final = 8192


class ClientFrameError(Exception):
    """A client frame broke the protocol; close the connection with ``code``."""

    def __init__(self, code: CloseCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


_PING: Final = Ping()
_PONG: Final = Pong()


def parse_client_frame(frame: str | bytes, *, max_bytes: int) -> ClientFrame:
    """Parse one client frame, defensively: size first, then JSON, then the known shapes."""
    if isinstance(frame, bytes | bytearray | memoryview):
        raise ClientFrameError(CloseCode.UNSUPPORTED_DATA, "binary frames are not supported")
    # len(str) <= encoded length, so the cheap check rejects most oversize frames first.
    if len(frame) > max_bytes or len(frame.encode("utf-8", "surrogatepass")) > max_bytes:
        raise ClientFrameError(CloseCode.MESSAGE_TOO_BIG, f"frame larger than {max_bytes} bytes")
    text = frame.strip()
    if text == "ping":  # the seed mobile client's bare text ping
        return _PING
    try:
        body = json.loads(text, parse_constant=_reject_constant)
    except (ValueError, RecursionError) as error:
        raise ClientFrameError(CloseCode.BAD_FRAME, "frame is not JSON") from error
    if not isinstance(body, dict):
        raise ClientFrameError(CloseCode.BAD_FRAME, "frame must be a JSON object")
    kind = body.get("type")
    if kind == "ping":
        return _PING
    if kind == "pong":
        return _PONG
    if kind == "resume":
        last_id = body.get("lastId")
        if not isinstance(last_id, str) or not last_id or len(last_id) > MAX_RESUME_ID_LENGTH:
            raise ClientFrameError(CloseCode.BAD_FRAME, "resume.lastId must be a non-empty string")
        return Resume(last_id)
    if kind == "subscribe":
        return Subscribe(_parse_event_types(body.get("eventTypes")))
    raise ClientFrameError(CloseCode.BAD_FRAME, f"unknown frame type {_short(kind)}")


def _parse_event_types(value: object) -> frozenset[str] | None:
    if value is None:
        return None
    if not isinstance(value, list):
        raise ClientFrameError(CloseCode.BAD_FRAME, "subscribe.eventTypes must be a list")
    if len(value) > MAX_SUBSCRIBED_TYPES:
        raise ClientFrameError(
            CloseCode.BAD_FRAME, f"subscribe.eventTypes allows at most {MAX_SUBSCRIBED_TYPES}"
        )
    for item in value:
        if not isinstance(item, str) or not item or len(item) > MAX_EVENT_TYPE_LENGTH:
            raise ClientFrameError(
                CloseCode.BAD_FRAME, "subscribe.eventTypes items must be non-empty strings"
            )
    # An empty list means "all types", the same as leaving the field out.
    return frozenset(value) if value else None


def _reject_constant(name: str) -> object:
    raise ValueError(f"{name} is not JSON")


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."
