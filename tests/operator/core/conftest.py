"""Fixtures shared by the operator core tests: raw specs as the API server hands them, and
the objects the operator renders from them."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest

from clarion_operator.core.render import ChannelContext, DesiredState, OperatorSettings, render
from clarion_operator.core.spec import parse_spec

MINIMAL: dict[str, Any] = {
    "kafka": {"bootstrapServers": "kafka:9092"},
    "topics": [{"name": "orders"}],
    "auth": {"mode": "none"},
}

FULL: dict[str, Any] = {
    "kafka": {
        "bootstrapServers": "b1:9093,b2:9093",
        "clientId": "dash",
        "security": {
            "protocol": "SASL_SSL",
            "saslMechanism": "SCRAM-SHA-512",
            "credentialsSecret": {"name": "kafka-user"},
            "tlsSecret": {"name": "kafka-ca", "certKey": "tls.crt", "keyKey": "tls.key"},
        },
    },
    "topics": [
        {
            "name": "orders",
            "partitions": 12,
            "replicationFactor": 3,
            "config": {"retention.ms": "86400000"},
            "audience": "organization",
            "deletionPolicy": "Delete",
        },
        {"name": "notices", "audience": "user"},
    ],
    "routing": {"typeField": "type", "userHeader": "user", "organizationFromKey": True},
    "server": {"websocketPath": "/ws", "sse": {"enabled": True, "path": "/sse"}},
    "auth": {
        "mode": "jwt",
        "issuer": "https://id.example.com",
        "audience": "dashboard",
        "algorithms": ["HS256"],
        "hmacSecret": {"name": "jwt", "key": "hmac"},
        "organizationsClaim": "orgs",
        "userClaim": "sub",
        "allowedOrigins": ["https://app.example.com"],
        "leewaySeconds": 30,
    },
    "workers": {
        "image": "registry.example.com/worker:1.2.3",
        "imagePullPolicy": "Always",
        "replicas": 3,
        "resources": {
            "requests": {"cpu": "500m", "memory": "512Mi"},
            "limits": {"memory": 1073741824},
        },
        "limits": {"maxConnections": 5000, "queueMaxBytes": 1048576},
        "drainWindowSeconds": 60,
        "heartbeatSeconds": 25,
        "heartbeatTimeoutSeconds": 8,
        "resume": {"windowEvents": 1000, "maxReplayEvents": 5000, "maxReplayAgeSeconds": 600},
    },
    "ingress": {
        "enabled": True,
        "host": "rt.example.com",
        "tlsSecretName": "rt-tls",
        "stickyCookie": {"name": "rt", "maxAgeSeconds": 600},
        "annotations": {"nginx.ingress.kubernetes.io/proxy-read-timeout": "7200", "x": "y"},
    },
    "monitoring": {"serviceMonitor": {"enabled": True, "labels": {"release": "prom"}}},
}


@pytest.fixture
def minimal_raw() -> dict[str, Any]:
    return copy.deepcopy(MINIMAL)


@pytest.fixture
def full_raw() -> dict[str, Any]:
    return copy.deepcopy(FULL)


@pytest.fixture
def render_channel() -> Callable[..., DesiredState]:
    """Renders the channel ``dash`` of namespace ``apps`` from a raw spec; keywords are the
    operator's settings."""

    def render_channel(raw: dict[str, Any], **settings: Any) -> DesiredState:
        spec = parse_spec(raw)
        return render(
            ChannelContext("dash", "apps", "uid-1", 1, spec, OperatorSettings(**settings))
        )

    return render_channel
