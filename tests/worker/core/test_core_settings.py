"""Settings: defaults, env overrides, every problem reported with its key path."""

from __future__ import annotations

import json
from typing import Any

import pytest

from clarion_contract.worker_config import CONFIG_API_VERSION
from clarion_worker.core.settings import (
    KEYS,
    MiB,
    SettingsError,
    key_reference,
    load_settings,
    parse_document,
)


def minimal(**extra: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "apiVersion": CONFIG_API_VERSION,
        "channel": "dashboard",
        "kafka": {"bootstrapServers": "kafka:9092"},
        "topics": [
            {"name": "approvals", "audience": "organization"},
            {"name": "notifications", "audience": "user"},
        ],
        "auth": {"mode": "none"},
    }
    doc.update(extra)
    return doc


def problems_of(doc: object, env: dict[str, str] | None = None) -> tuple[str, ...]:
    with pytest.raises(SettingsError) as caught:
        load_settings(doc, env or {}, hostname="worker-0")
    return caught.value.problems


def test_defaults() -> None:
    settings = load_settings(minimal(), {}, hostname="worker-0")
    assert settings.replica_id == "worker-0"
    assert settings.kafka.client_id == "clarion-dashboard"
    assert settings.kafka.security.protocol == "PLAINTEXT"
    assert settings.routing.type_field == "type"
    assert settings.routing.organization_field == "organizationId"
    assert settings.routing.user_field == "userId"
    assert settings.routing.data_field == "data"
    assert settings.routing.timestamp_field == "timestamp"
    assert settings.routing.type_header is None
    assert settings.routing.organization_from_key is False
    assert settings.server.websocket_path == "/ws/dashboard"
    assert settings.server.sse_path == "/sse/dashboard"
    assert settings.server.sse_enabled is True
    assert settings.auth.mode == "none"
    assert settings.auth.organizations_claim == "organizations"
    assert settings.auth.user_claim == "sub"
    assert settings.auth.leeway_seconds == 30
    limits = settings.limits
    assert (limits.max_connections, limits.queue_max_events, limits.queue_max_bytes) == (
        20000,
        1000,
        MiB,
    )
    assert (limits.max_client_frame_bytes, limits.max_record_bytes) == (4096, MiB)
    assert (limits.batch_max_events, limits.batch_max_bytes) == (64, 64 * 1024)
    assert settings.heartbeat.interval_seconds == 25
    assert settings.heartbeat.timeout_seconds == 10
    assert settings.resume.window_events == 10000
    assert settings.resume.max_replay_events == 100000
    assert settings.resume.max_replay_age_seconds == 86400
    assert settings.drain.window_seconds == 30
    assert settings.audience_of("notifications") == "user"
    assert settings.audience_of("nope") is None


def test_env_overrides_and_replica_id() -> None:
    env = {
        "CLARION_KAFKA__BOOTSTRAP_SERVERS": "k1:9092,k2:9092",
        "CLARION_LIMITS__MAX_CONNECTIONS": " 500 ",
        "CLARION_SERVER__SSE_ENABLED": "no",
        "CLARION_HEARTBEAT__INTERVAL_SECONDS": "12.5",
        "CLARION_AUTH__ALLOWED_ORIGINS": "https://a.example.com, *.example.org,",
        "CLARION_REPLICA_ID": "pod-7",
        "UNRELATED": "ignored",
    }
    settings = load_settings(minimal(), env, hostname="host")
    assert settings.kafka.bootstrap_servers == "k1:9092,k2:9092"
    assert settings.limits.max_connections == 500
    assert settings.server.sse_enabled is False
    assert settings.heartbeat.interval_seconds == 12.5
    assert settings.auth.allowed_origins == ("https://a.example.com", "*.example.org")
    assert settings.replica_id == "pod-7"


def test_env_overrides_a_missing_required_key() -> None:
    doc = minimal()
    del doc["kafka"]
    settings = load_settings(doc, {"CLARION_KAFKA__BOOTSTRAP_SERVERS": "k:1"}, hostname="h")
    assert settings.kafka.bootstrap_servers == "k:1"


def test_env_problems_are_named_by_variable() -> None:
    problems = problems_of(
        minimal(),
        {
            "CLARION_LIMITS__MAX_CONNECTIONS": "many",
            "CLARION_SERVER__SSE_ENABLED": "maybe",
            "CLARION_HEARTBEAT__TIMEOUT_SECONDS": "soon",
            "CLARION_LIMITS__MAX_CONECTIONS": "5",
        },
    )
    assert "CLARION_LIMITS__MAX_CONNECTIONS: must be an integer" in problems
    assert "CLARION_SERVER__SSE_ENABLED: must be true or false" in problems
    assert "CLARION_HEARTBEAT__TIMEOUT_SECONDS: must be a number" in problems
    assert "CLARION_LIMITS__MAX_CONECTIONS: unknown environment variable" in problems


def test_edge_env_names_are_tolerated() -> None:
    settings = load_settings(
        minimal(),
        {"CLARION_CONFIG_FILE": "/etc/x"},
        hostname="h",
        edge_env_names={"CLARION_CONFIG_FILE"},
    )
    assert settings.channel == "dashboard"


def test_all_problems_collected_with_paths() -> None:
    doc = minimal(
        apiVersion="clarion.dev/worker-config/v0",
        topics=[
            {"name": "ok", "audience": "organization"},
            {"name": "bad", "audience": "everyone"},
            {"name": "bad topic!", "audience": "user", "extra": 1},
            "nope",
            {"name": "ok", "audience": "user"},
        ],
        limits={"maxConnections": 0, "queueMaxEvents": True, "batchMaxBytes": 1.5},
        heartbeat={"intervalSeconds": "25"},
        server={"websocketPath": "ws"},
        routing={"typeFeild": "kind"},
    )
    problems = problems_of(doc)
    expected = {
        f"apiVersion: must be {CONFIG_API_VERSION}, not clarion.dev/worker-config/v0",
        "topics[1].audience: must be one of organization, user, broadcast",
        "topics[2].extra: unknown key",
        "topics[2].name: must be a Kafka topic name ([A-Za-z0-9._-], 1-249)",
        "topics[3]: must be an object",
        "limits.maxConnections: must be at least 1",
        "limits.queueMaxEvents: must be an integer",
        "limits.batchMaxBytes: must be an integer",
        "heartbeat.intervalSeconds: must be a number",
        "server.websocketPath: must start with /",
        "routing.typeFeild: unknown key",
    }
    assert expected <= set(problems), set(problems) ^ expected
    assert "SettingsError" not in str(problems)


def test_duplicate_topics_once_every_topic_is_valid() -> None:
    # A rule across list items runs once the items themselves are valid.
    doc = minimal(
        topics=[{"name": "ok", "audience": "organization"}, {"name": "ok", "audience": "user"}]
    )
    assert problems_of(doc) == ("topics[1].name: duplicate topic ok",)


def test_a_topic_that_fails_does_not_make_the_list_empty() -> None:
    # pydantic counts a list's items after validation: the failed one was also read as
    # "topics: must be a non-empty list".
    assert problems_of(minimal(topics=["nope"])) == ("topics[0]: must be an object",)


@pytest.mark.parametrize(
    ("doc", "problem"),
    [
        ([], "(document): must be an object"),
        ({**minimal(), "kafka": "kafka:9092"}, "kafka: must be an object"),
        ({**minimal(), "topics": []}, "topics: must be a non-empty list"),
        ({k: v for k, v in minimal().items() if k != "topics"}, "topics: required"),
        ({k: v for k, v in minimal().items() if k != "auth"}, "auth: required"),
        ({k: v for k, v in minimal().items() if k != "channel"}, "channel: required"),
        ({**minimal(), "channel": "  "}, "channel: must not be empty"),
        (
            {**minimal(), "auth": {"mode": "jwt"}},
            "auth: mode jwt needs hmacSecretFile, jwksUrl or jwksFile",
        ),
        ({**minimal(), "auth": {"mode": "oauth"}}, "auth.mode: must be one of jwt, none"),
        (
            {**minimal(), "resume": {"maxReplayAgeSeconds": float("nan")}},
            "resume.maxReplayAgeSeconds: must be finite",
        ),
        (
            {**minimal(), "limits": {"batchMaxEvents": 2000}},
            "limits.batchMaxEvents: must not exceed limits.queueMaxEvents",
        ),
        (
            {**minimal(), "server": {"ssePath": "/ws/dashboard"}},
            "server.ssePath: must differ from server.websocketPath",
        ),
        (
            {**minimal(), "routing": {"organizationFromKey": True, "organizationHeader": "org"}},
            "routing.organizationFromKey: set either organizationFromKey or organizationHeader, "
            "not both",
        ),
        (
            {**minimal(), "kafka": {"bootstrapServers": "k", "security": {"protocol": "SASL_SSL"}}},
            "kafka.security.saslMechanism: required with protocol SASL_SSL",
        ),
        ({**minimal(), 7: 1}, "7: keys must be strings"),  # type: ignore[misc]
    ],
)
def test_single_problem(doc: object, problem: str) -> None:
    assert problem in problems_of(doc)


def test_missing_hostname_and_replica_id_is_a_problem() -> None:
    with pytest.raises(SettingsError, match="CLARION_REPLICA_ID: required"):
        load_settings(minimal(), {})


def test_jwt_algorithm_defaults_by_key_source() -> None:
    hmac = load_settings(minimal(auth={"mode": "jwt", "hmacSecretFile": "/s"}), {}, hostname="h")
    assert hmac.auth.algorithms == ("HS256",)
    jwks = load_settings(
        minimal(auth={"mode": "jwt", "jwksUrl": "https://idp/jwks"}), {}, hostname="h"
    )
    assert jwks.auth.algorithms == ("RS256", "ES256")
    both = load_settings(
        minimal(auth={"mode": "jwt", "hmacSecretFile": "/s", "jwksFile": "/j"}), {}, hostname="h"
    )
    assert both.auth.algorithms == ("HS256", "RS256", "ES256")


def test_jwt_algorithms_must_match_key_sources() -> None:
    problems = problems_of(
        minimal(auth={"mode": "jwt", "hmacSecretFile": "/s", "algorithms": ["RS256", "none"]})
    )
    assert any(p.startswith("auth.algorithms: unsupported none") for p in problems)
    problems = problems_of(
        minimal(auth={"mode": "jwt", "hmacSecretFile": "/s", "algorithms": ["RS256"]})
    )
    assert "auth.algorithms: RS256 needs auth.jwksUrl or auth.jwksFile" in problems
    problems = problems_of(minimal(auth={"mode": "jwt", "jwksFile": "/j", "algorithms": ["HS256"]}))
    assert "auth.algorithms: HS256 needs auth.hmacSecretFile" in problems
    problems = problems_of(minimal(auth={"mode": "jwt", "jwksUrl": "ftp://x"}))
    assert "auth.jwksUrl: must be an http(s) URL" in problems


def test_parse_document_reads_json_and_yaml() -> None:
    as_json = parse_document(json.dumps(minimal()))
    as_yaml = parse_document(
        f"apiVersion: {CONFIG_API_VERSION}\nchannel: dashboard\nkafka:\n  bootstrapServers: k\n"
        "topics:\n  - {name: t, audience: broadcast}\nauth: {mode: none}\n"
    )
    assert load_settings(as_json, hostname="h").channel == "dashboard"
    assert load_settings(as_yaml, hostname="h").topics[0].audience == "broadcast"
    with pytest.raises(SettingsError, match="not valid JSON or YAML"):
        parse_document("a: [unclosed")


def test_key_reference_covers_every_key_with_env_names() -> None:
    rows = {row.key: row for row in key_reference()}
    assert set(rows) == {spec.path for spec in KEYS} | {
        "topics",
        "topics[].name",
        "topics[].audience",
        "topics[].withoutUser",
    }
    assert rows["limits.maxConnections"].default == "20000"
    assert rows["limits.maxConnections"].env == "CLARION_LIMITS__MAX_CONNECTIONS"
    assert rows["kafka.bootstrapServers"].env == "CLARION_KAFKA__BOOTSTRAP_SERVERS"
    assert rows["heartbeat.intervalSeconds"].default == "25"
    assert rows["server.sseEnabled"].default == "true"
    assert rows["auth.allowedOrigins"].default == "[]"
    assert rows["routing.typeHeader"].default == "unset"
    assert rows["apiVersion"].default == "required"
    assert all(row.meaning for row in rows.values())
    assert next(iter(rows)) == "apiVersion"


def test_every_documented_default_matches_the_loaded_settings() -> None:
    # Guards against the table and the dataclass defaults drifting apart.
    settings = load_settings(minimal(), hostname="h")
    assert settings.limits.queue_max_bytes == next(
        spec.default for spec in KEYS if spec.path == "limits.queueMaxBytes"
    )
    assert settings.resume.window_events == next(
        spec.default for spec in KEYS if spec.path == "resume.windowEvents"
    )


def test_settings_are_frozen() -> None:
    settings = load_settings(minimal(), hostname="h")
    with pytest.raises(ValueError, match="frozen"):
        settings.channel = "other"  # type: ignore[misc]
