"""Decoding one Kafka record into a routable ``Event``, once per record.

Routing facts (event type, organization, user) come from record headers or the key when
``routing`` names them, otherwise from the JSON value's fields. The JSON value is parsed
exactly once; its payload is re-serialized once here (``Event.data_json``) so every later
envelope splices the same string instead of serializing per recipient.

``RecordDecoder.decode`` raises only ``BadRecord``, whatever bytes it is given; the reason
is one of ``BAD_RECORD_REASONS`` (a metric label).

Audiences: ``organization`` events need an organization; ``user`` events need a user (an
organization on a user event narrows delivery further, see ``hub``); ``broadcast`` events
need neither.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Final, Literal

from clarion_contract.worker_config import Audience
from clarion_worker.core.settings import RoutingSettings

BadRecordReason = Literal[
    "not_json",
    "not_object",
    "oversized",
    "missing_organization",
    "missing_user",
    "missing_type",
    "empty",
]
BAD_RECORD_REASONS: Final[tuple[BadRecordReason, ...]] = (
    "not_json",
    "not_object",
    "oversized",
    "missing_organization",
    "missing_user",
    "missing_type",
    "empty",
)
MAX_ROUTING_VALUE_LENGTH: Final = 256


@dataclass(frozen=True, slots=True)
class RawRecord:
    """The parts of a Kafka record the core needs; built by the Kafka edge."""

    topic: str
    partition: int
    offset: int
    timestamp_ms: int | None
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...] = ()


@dataclass(frozen=True, slots=True)
class Event:
    """A decoded, routable event. ``data_json`` is the payload, already serialized."""

    topic: str
    partition: int
    offset: int
    timestamp_ms: int | None
    type: str
    organization: str | None
    user: str | None
    audience: Audience
    data_json: str
    producer_ts_ms: int | None


class BadRecord(Exception):  # noqa: N818 -- the name the edges and metrics use
    """The record cannot be delivered; ``reason`` is one of ``BAD_RECORD_REASONS``."""

    def __init__(self, reason: BadRecordReason, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason: BadRecordReason = reason


def _reject_constant(name: str) -> object:
    # NaN and Infinity are not JSON; browsers' JSON.parse would reject the envelope.
    raise ValueError(f"{name} is not JSON")


def _dumps(value: object) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


class RecordDecoder:
    """Decodes records of the channel's topics with one routing configuration."""

    def __init__(
        self,
        routing: RoutingSettings,
        audiences: Mapping[str, Audience],
        *,
        max_record_bytes: int,
    ) -> None:
        self._routing = routing
        self._audiences = dict(audiences)
        self._max_record_bytes = max_record_bytes

    def decode(self, record: RawRecord) -> Event:
        """The record as an ``Event``; raises ``BadRecord`` and nothing else for any bytes.

        A topic outside the channel is a bug in the edge, reported as ``LookupError``.
        """
        audience = self._audiences.get(record.topic)
        if audience is None:
            raise LookupError(f"topic {record.topic} is not in the channel")
        try:
            return self._decode(record, audience)
        except BadRecord:
            raise
        except Exception as error:  # hostile bytes must never crash the consumer loop
            raise BadRecord("not_json", type(error).__name__) from error

    def _decode(self, record: RawRecord, audience: Audience) -> Event:
        value = record.value
        if not value:
            raise BadRecord("empty")
        if len(value) > self._max_record_bytes:
            raise BadRecord("oversized", f"{len(value)} bytes")
        try:
            body = json.loads(value, parse_constant=_reject_constant)
        except (ValueError, RecursionError) as error:
            raise BadRecord("not_json", type(error).__name__) from error
        if not isinstance(body, dict):
            raise BadRecord("not_object")
        routing = self._routing
        headers = dict(record.headers) if record.headers else {}

        event_type = _routing_value(body, routing.type_field, headers, routing.type_header)
        if event_type is None:
            raise BadRecord("missing_type")
        if routing.organization_from_key:
            organization = _text(record.key)
        else:
            organization = _routing_value(
                body, routing.organization_field, headers, routing.organization_header
            )
        user = _routing_value(body, routing.user_field, headers, routing.user_header)
        if audience == "organization" and organization is None:
            raise BadRecord("missing_organization")
        if audience == "user" and user is None:
            raise BadRecord("missing_user")
        data_json = _dumps(body.get(routing.data_field))
        # Lone surrogates ("\ud800") parse fine but cannot be sent as UTF-8: refuse them here,
        # once, instead of failing in every connection's writer.
        if not data_json.isascii():
            data_json.encode("utf-8")
        return Event(
            topic=record.topic,
            partition=record.partition,
            offset=record.offset,
            timestamp_ms=record.timestamp_ms,
            type=event_type,
            organization=organization,
            user=user,
            audience=audience,
            data_json=data_json,
            producer_ts_ms=_timestamp_ms(body.get(routing.timestamp_field)),
        )


def _routing_value(
    body: Mapping[str, object], field: str, headers: Mapping[str, bytes], header: str | None
) -> str | None:
    if header is not None:
        return _text(headers.get(header))
    value = body.get(field)
    if not isinstance(value, str) or not value or len(value) > MAX_ROUTING_VALUE_LENGTH:
        return None
    if not value.isascii():
        value.encode("utf-8")  # lone surrogates: see above
    return value


def _text(raw: bytes | None) -> str | None:
    if not raw or len(raw) > MAX_ROUTING_VALUE_LENGTH:
        return None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return None


_MAX_EPOCH_MS: Final = 253402300799999  # 9999-12-31T23:59:59.999Z


def _timestamp_ms(value: object) -> int | None:
    """Producer timestamp as epoch milliseconds: ISO-8601 text or a number of ms."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        if value != value or not 0 <= value <= _MAX_EPOCH_MS:
            return None
        return int(value)
    if isinstance(value, str) and 10 <= len(value) <= 40:
        try:
            parsed = datetime.fromisoformat(value)
            if parsed.tzinfo is None:
                return None  # a wall-clock time without zone would be guessed; leave it out
            millis = int(parsed.timestamp() * 1000)
        except (ValueError, OverflowError):
            return None
        return millis if 0 <= millis <= _MAX_EPOCH_MS else None
    return None
