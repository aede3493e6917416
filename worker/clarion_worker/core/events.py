"""Decoding one Kafka record into a routable ``Event``, once per record.

Routing facts (event type, organization, user) come from record headers or the key when
``routing`` names them, otherwise from the JSON value's fields. The JSON value is parsed
exactly once; its payload is re-serialized once here (``Event.data_json``) so every later
envelope splices the same string instead of serializing per recipient.

``RecordDecoder.decode`` raises only ``BadRecord``, whatever bytes it is given; the reason
is one of ``BAD_RECORD_REASONS`` (a metric label).

Audiences: ``organization`` events need an organization; ``user`` events need a user (an
organization on a user event narrows delivery further, see ``hub``); ``broadcast`` events
need neither. A ``user`` event that names no user follows its topic's ``withoutUser``
rule: ``organization`` (the default) routes it as an organization event to the members
of the organization it names (``Event.userless`` is set, so the edge counts it apart);
``reject`` skips it as ``missing_user``. Naming neither is always ``missing_user``.

The producer timestamp (``routing.timestampField``) is read by ``timestamps``: ISO-8601
with or without offset, Jackson's array form, epoch seconds, milliseconds, micro- or
nanoseconds. A value that is present but unusable leaves ``producer_ts_ms`` unset and
names the reason in ``Event.timestamp_problem`` (the edge counts and logs it); the
envelope then carries the Kafka timestamp.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Final, Literal, get_args

from clarion_contract.worker_config import Audience, WithoutUser
from clarion_worker.core.settings import RoutingSettings, WorkerSettings
from clarion_worker.core.timestamps import TimestampProblem, read_timestamp, resolve_zone

BadRecordReason = Literal[
    "not_json",
    "not_object",
    "oversized",
    "missing_organization",
    "missing_user",
    "missing_type",
    "empty",
]
BAD_RECORD_REASONS: Final[tuple[BadRecordReason, ...]] = get_args(BadRecordReason)
MAX_ROUTING_VALUE_LENGTH: Final = 256
#: The byte-order marks by which JSON decoding reads a record as UTF-16 or UTF-32.
_UTF16_MARKS: Final = (b"\xff\xfe", b"\xfe\xff")


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
    #: Why a timestamp the producer gave was ignored (``timestamps.TIMESTAMP_PROBLEMS``).
    timestamp_problem: TimestampProblem | None = None
    #: A ``user`` topic's event that named no user, routed to its organization.
    userless: bool = False


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
        without_user: Mapping[str, WithoutUser] | None = None,
    ) -> None:
        self._routing = routing
        self._audiences = dict(audiences)
        self._max_record_bytes = max_record_bytes
        #: Topics whose user events without a user go to their organization.
        self._userless_to_org = frozenset(
            topic
            for topic, audience in self._audiences.items()
            if audience == "user" and (without_user or {}).get(topic, "organization") != "reject"
        )
        self._zone = resolve_zone(routing.timestamp_zone)

    @classmethod
    def for_settings(cls, settings: WorkerSettings) -> RecordDecoder:
        """The decoder of a worker's channel: its routing, topics and record size limit."""
        return cls(
            settings.routing,
            {topic.name: topic.audience for topic in settings.topics},
            max_record_bytes=settings.limits.max_record_bytes,
            without_user={topic.name: topic.without_user for topic in settings.topics},
        )

    def concern_filter(
        self, organizations: Collection[str], user: str | None
    ) -> Callable[[RawRecord], bool]:
        """A test of a record's bytes, before any decoding, for a read-back to a client of
        ``organizations`` and ``user``: False only when decoding the record could not make
        it that client's event, so the read-back skips it undecoded. A resuming client
        reads back every record of its partitions, most of them other organizations' (19
        of 20 in the churn soak, where decoding them was half the worker's CPU).

        It judges only where a value's bytes are the value: the routing value comes from
        the JSON body (not a header or the key), the body is UTF-8 as JSON decoding reads
        it (no UTF-16 or UTF-32, which it detects by a byte-order mark or zero bytes at the
        start) and holds no backslash (so no escaped character: every JSON string's bytes
        are its value's UTF-8). Then a routing field equal to the client's organization or
        user has that value's bytes in the record. Anything else passes, to be decoded
        and judged by ``Hub.wants`` as before; event types are not looked at.
        """
        routing = self._routing
        orgs_in_body = not routing.organization_from_key and routing.organization_header is None
        users_in_body = routing.user_header is None
        wanted_orgs = tuple(org.encode("utf-8", "surrogatepass") for org in organizations)
        wanted_user = None if user is None else user.encode("utf-8", "surrogatepass")
        audiences = self._audiences

        def may_concern(record: RawRecord) -> bool:
            audience = audiences.get(record.topic)
            if audience is None or audience == "broadcast":
                return True
            value = record.value
            if not value or b"\\" in value or b"\x00" in value[:4] or value[:2] in _UTF16_MARKS:
                return True
            org_may = not orgs_in_body or any(org in value for org in wanted_orgs)
            if audience == "organization":
                return org_may
            # A user event is the client's only if it names the client's user, or names no
            # user and goes to its organization instead (``withoutUser``).
            user_may = not users_in_body or (wanted_user is not None and wanted_user in value)
            return user_may or org_may

        return may_concern

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
        userless = False
        if audience == "user" and user is None:
            if organization is None or record.topic not in self._userless_to_org:
                raise BadRecord("missing_user")
            audience, userless = "organization", True
        data_json = _dumps(body.get(routing.data_field))
        # Lone surrogates ("\ud800") parse fine but cannot be sent as UTF-8: refuse them here,
        # once, instead of failing in every connection's writer.
        if not data_json.isascii():
            data_json.encode("utf-8")
        reading = read_timestamp(
            body.get(routing.timestamp_field),
            self._zone,
            reference_ms=record.timestamp_ms,
            raw=value,
            field=routing.timestamp_field,
        )
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
            producer_ts_ms=reading.millis,
            timestamp_problem=reading.problem,
            userless=userless,
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
