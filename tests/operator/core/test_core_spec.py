"""Spec parsing: defaults applied by the operator, every problem reported with its path."""

from __future__ import annotations

from typing import Any

import pytest

from clarion_operator.core.errors import PermanentError
from clarion_operator.core.reasons import Reason
from clarion_operator.core.spec import (
    DEFAULT_LIMITS,
    DEFAULT_REQUESTS,
    AuthSpec,
    SpecError,
    parse_spec,
    validate_name,
)


def _paths(raw: Any, **kwargs: Any) -> list[str]:
    with pytest.raises(SpecError) as info:
        parse_spec(raw, **kwargs)
    return [p.path for p in info.value.problems]


def test_minimal_spec_gets_every_default(minimal_raw: dict[str, Any]) -> None:
    spec = parse_spec(minimal_raw)
    assert spec.kafka.bootstrap_servers == "kafka:9092"
    assert spec.kafka.client_id is None
    assert spec.kafka.security.protocol == "PLAINTEXT"
    (topic,) = spec.topics
    assert (topic.name, topic.partitions, topic.replication_factor) == ("orders", 6, None)
    assert dict(topic.config) == {}
    assert topic.audience == "organization"
    assert topic.deletion_policy == "Retain"
    assert spec.auth == AuthSpec(mode="none")
    assert spec.server.websocket_path == "/ws/dashboard"
    assert spec.server.sse_enabled is True
    assert spec.server.sse_path == "/sse/dashboard"
    w = spec.workers
    assert (w.image, w.replicas, w.drain_window_seconds) == ("ghcr.io/clarion/worker:0.1.0", 2, 30)
    assert w.autoscaling is None
    assert dict(w.resources.requests) == dict(DEFAULT_REQUESTS)
    assert dict(w.resources.limits) == dict(DEFAULT_LIMITS)
    assert spec.ingress.enabled is False
    assert spec.ingress.class_name == "nginx"
    assert spec.ingress.sticky_cookie_name == "clarion-affinity"
    assert spec.ingress.sticky_cookie_max_age_seconds == 3600
    assert spec.monitoring.service_monitor_enabled is False
    assert spec.monitoring.interval == "30s"


def test_full_spec(full_raw: dict[str, Any]) -> None:
    spec = parse_spec(full_raw)
    sec = spec.kafka.security
    assert sec.protocol == "SASL_SSL"
    assert sec.credentials is not None
    assert (sec.credentials.username_key, sec.credentials.password_key) == ("username", "password")
    assert sec.tls is not None
    assert (sec.tls.ca_key, sec.tls.cert_key, sec.tls.key_key) == ("ca.crt", "tls.crt", "tls.key")
    assert [t.name for t in spec.topics] == ["orders", "notices"]
    assert spec.topics[0].replication_factor == 3
    assert dict(spec.topics[0].config) == {"retention.ms": "86400000"}
    assert spec.auth.hmac_secret is not None
    assert spec.auth.algorithms == ("HS256",)
    # Integer quantities are kept as strings, the way the API server returns them.
    assert dict(spec.workers.resources.limits) == {"memory": "1073741824"}
    assert spec.routing.organization_from_key is True
    assert spec.ingress.annotations["x"] == "y"


def test_spec_is_frozen(minimal_raw: dict[str, Any]) -> None:
    spec = parse_spec(minimal_raw)
    with pytest.raises(AttributeError):
        spec.workers = spec.workers  # type: ignore[misc]
    with pytest.raises(TypeError):
        spec.topics[0].config["x"] = "y"  # type: ignore[index]


def test_spec_error_is_permanent_with_invalid_spec_reason() -> None:
    with pytest.raises(SpecError) as info:
        parse_spec({})
    assert isinstance(info.value, PermanentError)
    assert info.value.reason is Reason.INVALID_SPEC
    assert "spec.kafka: is required" in str(info.value)


def test_every_problem_is_listed_at_once() -> None:
    raw = {
        "kafka": {"bootstrapServers": 5},
        "topics": [{"name": "ok"}, {"name": "bad name", "partitions": 0}, {"name": "ok"}],
        "auth": {"mode": "maybe"},
        "workers": {"replicas": True, "drainWindowSeconds": -1},
        "server": {"websocketPath": "ws"},
    }
    # In the schema's order. A duplicate name is reported once every topic is valid.
    assert _paths(raw) == [
        "spec.kafka.bootstrapServers",
        "spec.topics[1].name",
        "spec.topics[1].partitions",
        "spec.server.websocketPath",
        "spec.auth.mode",
        "spec.workers.replicas",
        "spec.workers.drainWindowSeconds",
    ]


def test_duplicate_topic_names(minimal_raw: dict[str, Any]) -> None:
    minimal_raw["topics"] = [{"name": "ok"}, {"name": "other"}, {"name": "ok"}]
    with pytest.raises(SpecError) as info:
        parse_spec(minimal_raw)
    assert [str(p) for p in info.value.problems] == ["spec.topics[2].name: duplicate topic 'ok'"]


def test_required_sections() -> None:
    assert _paths({}) == ["spec.kafka", "spec.topics", "spec.auth"]
    with pytest.raises(SpecError) as info:
        parse_spec({"kafka": {}, "topics": [{"name": "x"}], "auth": None})
    assert [str(p) for p in info.value.problems] == [
        "spec.kafka.bootstrapServers: is required",
        "spec.auth: is required (set mode: none explicitly to run without authentication)",
    ]


def test_auth_mode_none_must_be_explicit(minimal_raw: dict[str, Any]) -> None:
    minimal_raw["auth"] = {}
    assert _paths(minimal_raw) == ["spec.auth.mode"]


def test_empty_and_non_list_topics(minimal_raw: dict[str, Any]) -> None:
    minimal_raw["topics"] = []
    assert _paths(minimal_raw) == ["spec.topics"]
    minimal_raw["topics"] = {"name": "x"}
    assert _paths(minimal_raw) == ["spec.topics"]
    minimal_raw["topics"] = ["x"]
    assert _paths(minimal_raw) == ["spec.topics[0]"]


def test_dot_topic_names_rejected(minimal_raw: dict[str, Any]) -> None:
    minimal_raw["topics"] = [{"name": ".."}]
    assert _paths(minimal_raw) == ["spec.topics[0].name"]


@pytest.mark.parametrize(
    ("security", "paths"),
    [
        (
            {"protocol": "SASL_SSL"},
            ["spec.kafka.security.saslMechanism", "spec.kafka.security.credentialsSecret"],
        ),
        ({"protocol": "PLAINTEXT", "tlsSecret": {"name": "ca"}}, ["spec.kafka.security.tlsSecret"]),
        (
            {"protocol": "SSL", "tlsSecret": {"name": "ca", "certKey": "c"}},
            ["spec.kafka.security.tlsSecret"],
        ),
        (
            {"protocol": "SSL", "tlsSecret": {"name": "ca", "certKey": "ca.crt", "keyKey": "k"}},
            ["spec.kafka.security.tlsSecret"],
        ),
        (
            {
                "protocol": "SASL_PLAINTEXT",
                "saslMechanism": "PLAIN",
                "credentialsSecret": {"name": "u", "usernameKey": "k", "passwordKey": "k"},
            },
            ["spec.kafka.security.credentialsSecret"],
        ),
        ({"protocol": "TLS"}, ["spec.kafka.security.protocol"]),
    ],
)
def test_kafka_security_rules(
    minimal_raw: dict[str, Any], security: dict[str, Any], paths: list[str]
) -> None:
    minimal_raw["kafka"]["security"] = security
    assert _paths(minimal_raw) == paths


@pytest.mark.parametrize(
    ("auth", "paths"),
    [
        ({"mode": "jwt"}, ["spec.auth"]),
        (
            {"mode": "jwt", "hmacSecret": {"name": "a", "key": "b"}, "jwks": {"url": "https://x"}},
            ["spec.auth"],
        ),
        ({"mode": "jwt", "jwks": {}}, ["spec.auth.jwks"]),
        (
            {"mode": "jwt", "jwks": {"url": "https://x", "secret": {"name": "a", "key": "b"}}},
            ["spec.auth.jwks"],
        ),
        ({"mode": "jwt", "jwks": {"url": "ftp://x"}}, ["spec.auth.jwks.url"]),
        ({"mode": "jwt", "hmacSecret": {"name": "a"}}, ["spec.auth.hmacSecret.key"]),
        ({"mode": "none", "algorithms": ["HS256", "none"]}, ["spec.auth.algorithms[1]"]),
        ({"mode": "none", "algorithms": ["HS256", "HS256"]}, ["spec.auth.algorithms[1]"]),
        ({"mode": "none", "leewaySeconds": 601}, ["spec.auth.leewaySeconds"]),
    ],
)
def test_auth_rules(minimal_raw: dict[str, Any], auth: dict[str, Any], paths: list[str]) -> None:
    minimal_raw["auth"] = auth
    assert _paths(minimal_raw) == paths


def test_jwks_secret_accepted(minimal_raw: dict[str, Any]) -> None:
    minimal_raw["auth"] = {"mode": "jwt", "jwks": {"secret": {"name": "keys", "key": "jwks.json"}}}
    spec = parse_spec(minimal_raw)
    assert spec.auth.jwks_secret is not None
    assert spec.auth.jwks_url is None


def test_autoscaling_rules(minimal_raw: dict[str, Any]) -> None:
    minimal_raw["workers"] = {"autoscaling": {"minReplicas": 5, "maxReplicas": 3}}
    assert _paths(minimal_raw) == ["spec.workers.autoscaling"]
    minimal_raw["workers"] = {
        "autoscaling": {},
        "resources": {"requests": {"memory": "1Gi"}},
    }
    assert _paths(minimal_raw) == ["spec.workers.resources.requests.cpu"]
    minimal_raw["workers"] = {"autoscaling": {}}
    auto = parse_spec(minimal_raw).workers.autoscaling
    assert auto is not None
    assert (auto.min_replicas, auto.max_replicas, auto.target_cpu_utilization_percentage) == (
        2,
        10,
        70,
    )


def test_resources_are_taken_as_written(minimal_raw: dict[str, Any]) -> None:
    minimal_raw["workers"] = {"resources": {"requests": {"cpu": "1"}}}
    res = parse_spec(minimal_raw).workers.resources
    assert dict(res.requests) == {"cpu": "1"}
    assert dict(res.limits) == {}
    minimal_raw["workers"] = {"resources": {"requests": {"cpu": "lots"}}}
    assert _paths(minimal_raw) == ["spec.workers.resources.requests.cpu"]


def test_server_paths_must_differ(minimal_raw: dict[str, Any]) -> None:
    minimal_raw["server"] = {"websocketPath": "/x", "sse": {"path": "/x"}}
    assert _paths(minimal_raw) == ["spec.server.sse.path"]
    # The worker refuses equal paths even with SSE off (its document always has both).
    minimal_raw["server"]["sse"]["enabled"] = False
    assert _paths(minimal_raw) == ["spec.server.sse.path"]
    minimal_raw["server"] = {"websocketPath": "/sse/dashboard", "sse": {"enabled": False}}
    assert _paths(minimal_raw) == ["spec.server.sse.path"]
    minimal_raw["server"]["sse"]["path"] = "/events"
    assert parse_spec(minimal_raw).server.sse_enabled is False


def test_ingress_tls_needs_host(minimal_raw: dict[str, Any]) -> None:
    minimal_raw["ingress"] = {"enabled": True, "tlsSecretName": "tls"}
    assert _paths(minimal_raw) == ["spec.ingress.host"]


def test_wrong_types(minimal_raw: dict[str, Any]) -> None:
    minimal_raw["routing"] = "x"
    minimal_raw["ingress"] = {"enabled": "yes", "annotations": {"a": 1}}
    minimal_raw["monitoring"] = {"interval": "soon"}
    assert _paths(minimal_raw) == [
        "spec.routing",
        "spec.ingress.enabled",
        "spec.ingress.annotations.a",
        "spec.monitoring.interval",
    ]


def test_non_mapping_spec() -> None:
    assert _paths(["not", "a", "mapping"]) == ["spec"]


@pytest.mark.parametrize(
    ("name", "ok"),
    [
        ("orders", True),
        ("a", True),
        ("a" * 56, True),
        ("a" * 57, False),
        ("1x", False),
        ("Ab", False),
        ("x-", False),
    ],
)
def test_validate_name(name: str, ok: bool) -> None:
    assert (validate_name(name) == []) is ok


def test_name_problem_is_reported_with_spec_problems(minimal_raw: dict[str, Any]) -> None:
    minimal_raw["topics"][0]["partitions"] = 0
    assert _paths(minimal_raw, name="Bad") == ["metadata.name", "spec.topics[0].partitions"]


# --- values the worker refuses are refused here too (issue 12, item 11) ----------------


@pytest.mark.parametrize(
    ("limits", "path"),
    [
        ({"maxClientFrameBytes": 15}, "spec.workers.limits.maxClientFrameBytes"),
        ({"batchMaxEvents": 11, "queueMaxEvents": 10}, "spec.workers.limits.batchMaxEvents"),
        # Unset keys are the worker's defaults: queueMaxEvents 1000, batchMaxEvents 64.
        ({"batchMaxEvents": 1001}, "spec.workers.limits.batchMaxEvents"),
        ({"queueMaxEvents": 63}, "spec.workers.limits.batchMaxEvents"),
        ({"maxRecordBytes": 2048, "queueMaxBytes": 1024}, "spec.workers.limits.maxRecordBytes"),
        ({"queueMaxBytes": 1024}, "spec.workers.limits.maxRecordBytes"),
        ({"maxRecordBytes": 1048577}, "spec.workers.limits.maxRecordBytes"),
    ],
)
def test_limits_the_worker_refuses_are_refused(
    minimal_raw: dict[str, Any], limits: dict[str, int], path: str
) -> None:
    minimal_raw["workers"] = {"limits": limits}
    with pytest.raises(SpecError) as info:
        parse_spec(minimal_raw)
    assert [p.path for p in info.value.problems] == [path]
    assert info.value.reason is Reason.INVALID_SPEC


@pytest.mark.parametrize(
    "limits",
    [
        {"maxClientFrameBytes": 16},
        {"batchMaxEvents": 10, "queueMaxEvents": 10},
        {"queueMaxEvents": 64},
        {"maxRecordBytes": 1024, "queueMaxBytes": 1024},
        {"queueMaxBytes": 1048576},
    ],
)
def test_limits_at_the_worker_bounds_are_accepted(
    minimal_raw: dict[str, Any], limits: dict[str, int]
) -> None:
    minimal_raw["workers"] = {"limits": limits}
    parse_spec(minimal_raw)


def test_organization_from_key_excludes_organization_header(minimal_raw: dict[str, Any]) -> None:
    minimal_raw["routing"] = {"organizationFromKey": True, "organizationHeader": "org"}
    assert _paths(minimal_raw) == ["spec.routing.organizationFromKey"]


@pytest.mark.parametrize(
    ("auth", "bad"),
    [
        ({"hmacSecret": {"name": "s", "key": "k"}, "algorithms": ["HS256", "RS256"]}, "RS256"),
        ({"jwks": {"url": "https://id.example.com/jwks"}, "algorithms": ["HS512"]}, "HS512"),
    ],
)
def test_algorithms_must_fit_the_key_source(
    minimal_raw: dict[str, Any], auth: dict[str, Any], bad: str
) -> None:
    minimal_raw["auth"] = {"mode": "jwt", **auth}
    with pytest.raises(SpecError) as info:
        parse_spec(minimal_raw)
    (problem,) = info.value.problems
    assert problem.path == "spec.auth.algorithms"
    assert bad in problem.message


@pytest.mark.parametrize("blank", [" ", "\t", "\u00a0", "\u2003 ", "\x1c"])
def test_blank_strings_the_worker_strips_are_refused(
    minimal_raw: dict[str, Any], blank: str
) -> None:
    minimal_raw["routing"] = {"typeField": blank}
    minimal_raw["auth"] = {"mode": "none", "userClaim": blank}
    minimal_raw["kafka"]["clientId"] = blank
    assert sorted(_paths(minimal_raw)) == [
        "spec.auth.userClaim",
        "spec.kafka.clientId",
        "spec.routing.typeField",
    ]


def test_patterns_are_anchored_as_the_api_server_anchors_them(
    minimal_raw: dict[str, Any],
) -> None:
    # Python's $ also matches before a final newline; Go's (the API server's) does not.
    minimal_raw["topics"] = [{"name": "orders\n"}]
    assert _paths(minimal_raw) == ["spec.topics[0].name"]
