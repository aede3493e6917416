"""Record decoding: seed shape, header/key routing, user events without a user, producer
timestamps (the forms themselves: test_core_timestamps), every bad-record reason, hostile
bytes."""

from __future__ import annotations

import json
import random

import pytest

from clarion_worker.core.events import BAD_RECORD_REASONS, BadRecord, RawRecord, RecordDecoder
from clarion_worker.core.settings import RoutingSettings, SettingsError, load_settings

AUDIENCES = {"approvals": "organization", "notes": "user", "news": "broadcast"}
KAFKA_TS = 1_773_500_000_000  # 2026-03-14T14:53:20Z, a few hours after SEED's timestamp


def decoder(
    routing: RoutingSettings | None = None,
    max_bytes: int = 10_000,
    without_user: dict[str, str] | None = None,
) -> RecordDecoder:
    return RecordDecoder(
        routing or RoutingSettings(),
        AUDIENCES,  # type: ignore[arg-type]
        max_record_bytes=max_bytes,
        without_user=without_user,  # type: ignore[arg-type]
    )


def record(value: object, topic: str = "approvals", **kw: object) -> RawRecord:
    raw = value if isinstance(value, bytes) or value is None else json.dumps(value).encode()
    return RawRecord(
        topic=topic,
        partition=kw.get("partition", 0),  # type: ignore[arg-type]
        offset=kw.get("offset", 5),  # type: ignore[arg-type]
        timestamp_ms=kw.get("kafka_ts", KAFKA_TS),  # type: ignore[arg-type]
        key=kw.get("key"),  # type: ignore[arg-type]
        value=raw,
        headers=kw.get("headers", ()),  # type: ignore[arg-type]
    )


SEED = {
    "type": "APPROVAL_PENDING",
    "organizationId": "org-1",
    "data": {"id": 7, "title": "Crédit"},
    "timestamp": "2026-03-14T10:00:00Z",
}


def test_seed_shape() -> None:
    event = decoder().decode(record(SEED, offset=42, partition=3))
    assert (event.topic, event.partition, event.offset) == ("approvals", 3, 42)
    assert event.type == "APPROVAL_PENDING"
    assert event.organization == "org-1"
    assert event.user is None
    assert event.audience == "organization"
    assert json.loads(event.data_json) == {"id": 7, "title": "Crédit"}
    assert "Crédit" in event.data_json  # ensure_ascii=False: no \\u escapes on the wire
    assert event.producer_ts_ms == 1_773_482_400_000
    assert event.timestamp_ms == KAFKA_TS


def test_user_notification() -> None:
    event = decoder().decode(record({**SEED, "userId": "u-1"}, topic="notes"))
    assert (event.audience, event.user, event.organization) == ("user", "u-1", "org-1")


# The seed's publishBroadcastNotification: the user notifications topic, an organization,
# no userId. UnionFlow means every member of that organization.
BROADCAST_NOTIFICATION = {
    "type": "BROADCAST_NOTIFICATION",
    "organizationId": "org-1",
    "data": {"title": "Maintenance"},
    "timestamp": "2026-03-14T10:00:00",
}


def test_user_event_without_user_goes_to_its_organization_by_default() -> None:
    event = decoder().decode(record(BROADCAST_NOTIFICATION, topic="notes"))
    assert (event.audience, event.organization, event.user) == ("organization", "org-1", None)
    assert event.userless
    assert not decoder().decode(record({**SEED, "userId": "u-1"}, topic="notes")).userless
    assert not decoder().decode(record(SEED)).userless


def test_user_event_without_user_is_rejected_when_the_topic_says_so() -> None:
    strict = decoder(without_user={"notes": "reject"})
    with pytest.raises(BadRecord) as caught:
        strict.decode(record(BROADCAST_NOTIFICATION, topic="notes"))
    assert caught.value.reason == "missing_user"
    assert strict.decode(record({**SEED, "userId": "u-1"}, topic="notes")).user == "u-1"


def test_user_event_naming_neither_user_nor_organization_is_missing_user() -> None:
    with pytest.raises(BadRecord) as caught:
        decoder().decode(record({"type": "BROADCAST_NOTIFICATION", "data": {}}, topic="notes"))
    assert caught.value.reason == "missing_user"


def test_decoder_from_settings_takes_rule_and_zone() -> None:
    settings = load_settings(
        {
            "apiVersion": "clarion.dev/worker-config/v1",
            "channel": "c",
            "kafka": {"bootstrapServers": "127.0.0.1:9092"},
            "topics": [
                {"name": "notes", "audience": "user", "withoutUser": "reject"},
                {"name": "news", "audience": "user"},
            ],
            "routing": {"timestampZone": "Europe/Paris"},
            "auth": {"mode": "none"},
        },
        hostname="h",
    )
    each = RecordDecoder.for_settings(settings)
    with pytest.raises(BadRecord):
        each.decode(record(BROADCAST_NOTIFICATION, topic="notes"))
    event = each.decode(record(BROADCAST_NOTIFICATION, topic="news"))
    assert event.userless
    assert event.producer_ts_ms == 1_773_478_800_000  # 10:00 in Paris (UTC+1) is 09:00Z


def test_broadcast_needs_no_organization() -> None:
    event = decoder().decode(record({"type": "MAINTENANCE"}, topic="news"))
    assert (event.audience, event.organization, event.data_json) == ("broadcast", None, "null")


def test_configured_field_names() -> None:
    routing = RoutingSettings(
        type_field="kind", organization_field="tenant", data_field="body", timestamp_field="at"
    )
    event = decoder(routing).decode(
        record({"kind": "K", "tenant": "t-1", "body": [1], "at": 1_700_000_000_123})
    )
    assert (event.type, event.organization, event.data_json) == ("K", "t-1", "[1]")
    assert event.producer_ts_ms == 1_700_000_000_123


def test_headers_and_key_win_over_fields() -> None:
    routing = RoutingSettings(type_header="ce_type", user_header="user", organization_from_key=True)
    event = decoder(routing).decode(
        record(
            {**SEED, "userId": "ignored"},
            topic="notes",
            key=b"org-key",
            headers=(("ce_type", b"FROM_HEADER"), ("user", b"u-h")),
        )
    )
    assert (event.type, event.organization, event.user) == ("FROM_HEADER", "org-key", "u-h")
    routing = RoutingSettings(organization_header="org")
    event = decoder(routing).decode(record(SEED, headers=(("org", b"org-h"),)))
    assert event.organization == "org-h"


@pytest.mark.parametrize(
    ("value", "topic", "reason"),
    [
        (None, "approvals", "empty"),
        (b"", "approvals", "empty"),
        (b"{not json", "approvals", "not_json"),
        (b"\xff\xfe\x00garbage", "approvals", "not_json"),
        (b'{"type":"A","organizationId":"o","data":NaN}', "approvals", "not_json"),
        (b'{"type":"A","organizationId":"o","data":"\\ud800"}', "approvals", "not_json"),
        (b"[" * 9_000, "approvals", "not_json"),
        (b"[1,2]", "approvals", "not_object"),
        (b'"text"', "approvals", "not_object"),
        (json.dumps({"organizationId": "o"}).encode(), "approvals", "missing_type"),
        (json.dumps({"type": 5, "organizationId": "o"}).encode(), "approvals", "missing_type"),
        (json.dumps({"type": "", "organizationId": "o"}).encode(), "approvals", "missing_type"),
        (json.dumps({"type": "A"}).encode(), "approvals", "missing_organization"),
        (
            json.dumps({"type": "A", "organizationId": ["o"]}).encode(),
            "approvals",
            "missing_organization",
        ),
        (
            json.dumps({"type": "A", "organizationId": "o" * 300}).encode(),
            "approvals",
            "missing_organization",
        ),
        (json.dumps({"type": "A"}).encode(), "notes", "missing_user"),
        (b" " * 10_001, "approvals", "oversized"),
    ],
)
def test_bad_records(value: bytes | None, topic: str, reason: str) -> None:
    with pytest.raises(BadRecord) as caught:
        decoder().decode(record(value, topic=topic))
    assert caught.value.reason == reason
    assert reason in BAD_RECORD_REASONS


def test_header_routing_with_bad_header_bytes() -> None:
    routing = RoutingSettings(organization_header="org")
    with pytest.raises(BadRecord) as caught:
        decoder(routing).decode(record(SEED, headers=(("org", b"\xff\xfe"),)))
    assert caught.value.reason == "missing_organization"
    with pytest.raises(BadRecord) as caught:
        decoder(RoutingSettings(organization_from_key=True)).decode(record(SEED, key=None))
    assert caught.value.reason == "missing_organization"


@pytest.mark.parametrize(
    ("timestamp", "expected", "problem"),
    [
        ("2026-03-14T10:00:00+01:00", 1_773_478_800_000, None),
        ("2026-03-14T10:00:00", 1_773_482_400_000, None),  # zoneless: the zone setting (UTC)
        ([2026, 3, 14, 10, 0], 1_773_482_400_000, None),
        (1_773_482_400, 1_773_482_400_000, None),  # seconds, not 1970
        (1_773_482_400.5, 1_773_482_400_500, None),
        (None, None, None),
        ("yesterday", None, "unparsable"),
        (True, None, "wrong_type"),
        (-5, None, "implausible"),
        (float("inf"), None, "implausible"),
        (10**30, None, "implausible"),
        ("9999-12-31T23:59:59-23:59", None, "unparsable"),
    ],
)
def test_producer_timestamps(timestamp: object, expected: int | None, problem: str | None) -> None:
    body = json.dumps({**SEED, "timestamp": timestamp}, allow_nan=True).encode()
    if b"Infinity" in body:
        body = body.replace(b"Infinity", b"1e999")  # a legal JSON number that overflows
    event = decoder().decode(record(body))
    assert (event.producer_ts_ms, event.timestamp_problem) == (expected, problem)


def test_missing_timestamp_field() -> None:
    body = {key: value for key, value in SEED.items() if key != "timestamp"}
    event = decoder().decode(record(body))
    assert (event.producer_ts_ms, event.timestamp_problem) == (None, None)


def test_unknown_topic_is_an_edge_bug() -> None:
    with pytest.raises(LookupError):
        decoder().decode(record(SEED, topic="elsewhere"))


def _hostile_values(rng: random.Random) -> list[bytes]:
    pieces = [b"{", b"}", b"[", b"]", b'"', b"\\", b"\\u", b"d800", b":", b",", b"NaN",
              b"1e999999", b"-", b"0" * 5000, b"\x00", b"\xff", b"\xc3", b"type",
              b'"type":"X"', b'"organizationId":"o"', b'"data":', b"null", b"true"]  # fmt: skip
    values = [bytes(rng.getrandbits(8) for _ in range(rng.randrange(0, 64))) for _ in range(400)]
    values += [
        b"".join(rng.choice(pieces) for _ in range(rng.randrange(1, 40))) for _ in range(800)
    ]
    values += [
        b'{"type":"X","organizationId":"o","data":' + b"[" * 5000 + b"]" * 5000 + b"}",
        b'{"type":"X","organizationId":"o","data":' + b"9" * 5000 + b"}",
        b'{"type":"X","organizationId":"o","data":1}'.decode().encode("utf-16"),
        b'{"type":"X","organizationId":"o","data":1}'.decode().encode("utf-32"),
    ]
    return values


def test_decoder_raises_only_bad_record_on_hostile_bytes() -> None:
    rng = random.Random(20260314)
    decoders = [
        decoder(),
        decoder(RoutingSettings(type_header="t", organization_from_key=True, user_header="u")),
    ]
    decoded = 0
    reasons: set[str] = set()
    for value in _hostile_values(rng):
        for topic in AUDIENCES:
            for each in decoders:
                headers = (("t", value[:8]), ("u", value[-8:]))
                try:
                    event = each.decode(record(value, topic=topic, key=value[:5], headers=headers))
                except BadRecord as error:
                    reasons.add(error.reason)
                else:
                    decoded += 1
                    json.loads(event.data_json)  # what we accepted re-serializes as JSON
                    event.data_json.encode("utf-8")
    assert decoded > 0  # the corpus also exercises the success path
    assert reasons <= set(BAD_RECORD_REASONS)
    assert len(reasons) >= 4


def _doc(topics: list[dict[str, str]], **routing: str) -> dict[str, object]:
    return {
        "apiVersion": "clarion.dev/worker-config/v1",
        "channel": "c",
        "kafka": {"bootstrapServers": "127.0.0.1:9092"},
        "topics": topics,
        "routing": routing,
        "auth": {"mode": "none"},
    }


def test_settings_default_rule_and_zone() -> None:
    settings = load_settings(_doc([{"name": "n", "audience": "user"}]), hostname="h")
    assert settings.topics[0].without_user == "organization"
    assert settings.routing.timestamp_zone == "UTC"


@pytest.mark.parametrize(
    ("topics", "routing", "problem"),
    [
        (
            [{"name": "n", "audience": "user", "withoutUser": "everyone"}],
            {},
            "topics[0].withoutUser: must be one of organization, reject",
        ),
        (
            [{"name": "n", "audience": "organization", "withoutUser": "reject"}],
            {},
            "topics[0].withoutUser: only for topics of audience user",
        ),
        (
            [{"name": "n", "audience": "user"}],
            {"timestampZone": "Mars/Olympus"},
            "routing.timestampZone: 'Mars/Olympus': unknown time zone",
        ),
        (
            [{"name": "n", "audience": "user"}],
            {"timestampZone": "CET+1"},
            "routing.timestampZone: 'CET+1': unknown time zone",
        ),
    ],
)
def test_settings_refuse_bad_rule_or_zone(
    topics: list[dict[str, str]], routing: dict[str, str], problem: str
) -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings(_doc(topics, **routing), hostname="h")
    assert problem in caught.value.problems


def test_zone_from_the_environment() -> None:
    settings = load_settings(
        _doc([{"name": "n", "audience": "user"}]),
        {"CLARION_ROUTING__TIMESTAMP_ZONE": "Africa/Abidjan"},
        hostname="h",
    )
    assert settings.routing.timestamp_zone == "Africa/Abidjan"


# The read-back's test of a record's bytes (RecordDecoder.concern_filter): it may let
# through what is not the client's (decoding judges those), never skip what is.

_NAMES = ["o1", "o2", "org-1", "u1", "u2", "é", "o1\u00e9", "x"]


def _escaped(text: str, rng: random.Random) -> str:
    """``text`` as a JSON string, some characters written as \\u escapes."""
    out = []
    for char in text:
        out.append(f"\\u{ord(char):04x}" if rng.random() < 0.3 else char)
    return '"' + "".join(out) + '"'


def _concern_records(rng: random.Random) -> list[RawRecord]:
    records = []
    for _ in range(3000):
        fields = []
        if rng.random() < 0.9:
            fields.append('"type":"T"')
        for name in ("organizationId", "userId", "note"):
            if rng.random() < 0.7:
                value = rng.choice(_NAMES)
                text = _escaped(value, rng) if rng.random() < 0.2 else json.dumps(value)
                fields.append(f'"{name}":{text}')
        if rng.random() < 0.1:
            fields.append('"organizationId":7')
        rng.shuffle(fields)
        body = "{" + ",".join(fields) + ',"data":1}'
        encoding = rng.choice(["utf-8"] * 8 + ["utf-8-sig", "utf-16", "utf-16-be", "utf-32"])
        headers = (("org", rng.choice(_NAMES).encode()), ("user", rng.choice(_NAMES).encode()))
        records.append(
            record(
                body.encode(encoding),
                topic=rng.choice(list(AUDIENCES)),
                key=rng.choice(_NAMES).encode(),
                headers=headers,
            )
        )
    return records


@pytest.mark.parametrize(
    "routing",
    [
        RoutingSettings(),
        RoutingSettings(organization_from_key=True),
        RoutingSettings(organization_header="org", user_header="user"),
    ],
    ids=["body", "key", "headers"],
)
@pytest.mark.parametrize("without_user", ["organization", "reject"])
def test_concern_filter_never_skips_a_record_the_client_would_get(
    routing: RoutingSettings, without_user: str
) -> None:
    from clarion_worker.core.hub import Connection, Hub
    from clarion_worker.core.outbox import Outbox
    from clarion_worker.core.principal import Principal

    rng = random.Random(20261130)
    each = decoder(routing, without_user=dict.fromkeys(AUDIENCES, without_user))
    records = _concern_records(rng)
    skipped = 0
    for _ in range(40):
        orgs = frozenset(rng.sample(_NAMES, rng.randrange(0, 3)))
        user = rng.choice([None, *_NAMES])
        client = Connection("c", Principal(orgs, user), Outbox(max_events=1, max_bytes=1))
        concerns = each.concern_filter(orgs, user)
        for raw in records:
            if concerns(raw):
                continue
            skipped += 1
            try:
                event = each.decode(raw)
            except BadRecord:
                continue
            assert not Hub.wants(client, event), (raw, orgs, user)
    if routing == RoutingSettings():
        assert skipped > 10_000  # it does skip, where the body holds the routing values


def test_concern_filter_skips_other_organizations_plain_records() -> None:
    def utf8(value: dict[str, object], topic: str = "approvals") -> RawRecord:
        return record(json.dumps(value, ensure_ascii=False).encode(), topic=topic)

    concerns = decoder().concern_filter(frozenset({"org-1"}), "u1")
    assert concerns(utf8({**SEED, "organizationId": "org-1"}))
    assert not concerns(utf8({**SEED, "organizationId": "org-2"}))
    # Any escape (here json.dumps's \u00e9 for "é") leaves the record to the decoder.
    assert concerns(record({**SEED, "organizationId": "org-2"}))
    assert concerns(utf8({**SEED, "organizationId": "org-2"}, topic="news"))  # broadcast
    note = {"type": "N", "userId": "u2", "organizationId": "org-2", "data": 1}
    assert not concerns(utf8(note, topic="notes"))
    assert concerns(utf8({**note, "userId": "u1"}, topic="notes"))
    assert concerns(utf8({**note, "organizationId": "org-1"}, topic="notes"))  # withoutUser
