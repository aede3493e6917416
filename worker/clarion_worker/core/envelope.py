"""Event envelopes and batch frames, serialized once per event and shared by reference.

An envelope is ``{"type":"event","id":"<cursor>",`` + body, where the body
(``"topic":..,"eventType":..,"organizationId":..,"userId":..,"data":..,"ts":..,"kafkaTs":..}``)
is rendered once per event. Live delivery hands the same envelope ``str`` to every
recipient. Replay re-splices a different id onto the stored body (``with_id``), which is
one string concatenation, never a re-serialization.

``ts`` is the producer's timestamp in epoch ms (the Kafka timestamp when the producer gave
none); ``kafkaTs`` is the Kafka record timestamp when known. ``userId`` is present only on
events that carry one. ``organizationId`` is null on broadcast events without one.

Batch frames (``{"type":"batch","events":[...]}``) join pre-serialized envelopes.
"""

from __future__ import annotations

import json
from typing import Final

from clarion_worker.core.events import Event

_ENVELOPE_HEAD: Final = '{"type":"event","id":"'
#: What a batch frame puts around its comma-separated envelopes (``batch_frame``; the
#: write pass joins the same around encoded ones).
BATCH_HEAD: Final = '{"type":"batch","events":['
BATCH_TAIL: Final = "]}"
#: Bytes a batch frame adds around its events, plus one comma per event after the first.
BATCH_OVERHEAD_BYTES: Final = len(BATCH_HEAD) + len(BATCH_TAIL)


def _dumps(value: object) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def render_body(event: Event) -> str:
    """Everything after the id: rendered once per event (the payload is already JSON)."""
    ts = event.producer_ts_ms if event.producer_ts_ms is not None else event.timestamp_ms
    parts = [
        '"topic":',
        _dumps(event.topic),
        ',"eventType":',
        _dumps(event.type),
        ',"organizationId":',
        _dumps(event.organization),
    ]
    if event.user is not None:
        parts += [',"userId":', _dumps(event.user)]
    parts += [',"data":', event.data_json, ',"ts":', _dumps(ts)]
    if event.timestamp_ms is not None:
        parts += [',"kafkaTs":', str(event.timestamp_ms)]
    parts.append("}")
    return "".join(parts)


def with_id(event_id: str, body: str) -> str:
    """The full envelope; ``event_id`` is a cursor (base64url), so it needs no escaping."""
    return _ENVELOPE_HEAD + event_id + '",' + body


def batch_frame(envelopes: list[str]) -> str:
    """One frame carrying several pre-serialized envelopes, in order."""
    return BATCH_HEAD + ",".join(envelopes) + BATCH_TAIL


def utf8_size(text: str) -> int:
    """Exact UTF-8 size; the ASCII check avoids an encode for the common case."""
    return len(text) if text.isascii() else len(text.encode("utf-8"))


def sse_message(frame: str, event_id: str | None = None) -> str:
    """One Server-Sent Events message carrying a JSON frame (JSON text has no raw newlines).

    SSE clients send the last ``id`` back as ``Last-Event-ID``: the same cursor as ``resume``.
    """
    if event_id is None:
        return "data: " + frame + "\n\n"
    return "id: " + event_id + "\ndata: " + frame + "\n\n"


#: An SSE comment line: keeps idle proxies from cutting the stream, ignored by clients.
SSE_HEARTBEAT: Final = ": ping\n\n"
