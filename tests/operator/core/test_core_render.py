"""Rendering: each desired object, the worker settings document and its hash."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
import yaml

from clarion_contract.worker_config import CONFIG_API_VERSION, WORKER_PORT
from clarion_operator.core.conditions import observe_deployment, workers_condition
from clarion_operator.core.reasons import Reason
from clarion_operator.core.render import (
    CONFIG_HASH_ANNOTATION,
    ChannelContext,
    DesiredState,
    ObjectRef,
    endpoint_url,
    render,
)
from clarion_operator.core.spec import parse_spec

#: The ``render_channel`` fixture (conftest.py): a raw spec, and settings by keyword.
RenderChannel = Callable[..., DesiredState]

LABELS = {
    "app.kubernetes.io/name": "clarion-worker",
    "app.kubernetes.io/instance": "dash",
    "app.kubernetes.io/managed-by": "clarion-operator",
    "app.kubernetes.io/part-of": "clarion",
    "app.kubernetes.io/component": "worker",
}
SELECTOR = {"app.kubernetes.io/name": "clarion-worker", "app.kubernetes.io/instance": "dash"}
OWNER = {
    "apiVersion": "realtime.clarion.dev/v1alpha1",
    "kind": "RealtimeChannel",
    "name": "dash",
    "uid": "uid-1",
    "controller": True,
    "blockOwnerDeletion": True,
}
NGINX = "nginx.ingress.kubernetes.io/"


def _container(state: DesiredState) -> dict[str, Any]:
    (container,) = state.deployment["spec"]["template"]["spec"]["containers"]
    return dict(container)


def _pod_annotations(state: DesiredState) -> dict[str, str]:
    return dict(state.deployment["spec"]["template"]["metadata"]["annotations"])


def test_every_object_has_labels_owner_and_namespace(
    render_channel: RenderChannel, full_raw: dict[str, Any]
) -> None:
    state = render_channel(full_raw, monitoring_api_available=True)
    kinds = [o["kind"] for o in state.objects()]
    assert kinds == [
        "ConfigMap",
        "Service",
        "Deployment",
        "PodDisruptionBudget",
        "Ingress",
        "ServiceMonitor",
    ]
    for obj in state.objects():
        meta = obj["metadata"]
        assert meta["name"] == "dash-worker"
        assert meta["namespace"] == "apps"
        assert LABELS.items() <= meta["labels"].items()
        assert meta["ownerReferences"] == [OWNER]
    assert state.absent() == (
        ObjectRef("gateway.networking.k8s.io/v1", "HTTPRoute", "apps", "dash-worker"),
        ObjectRef("autoscaling/v2", "HorizontalPodAutoscaler", "apps", "dash-worker"),
    )


def test_render_is_deterministic(render_channel: RenderChannel, full_raw: dict[str, Any]) -> None:
    assert render_channel(full_raw) == render_channel(full_raw)


def test_config_map_holds_sorted_worker_json(
    render_channel: RenderChannel, minimal_raw: dict[str, Any]
) -> None:
    state = render_channel(minimal_raw)
    text = state.config_map["data"]["worker.json"]
    assert text == state.worker_json
    doc = json.loads(text)
    assert text == json.dumps(doc, sort_keys=True, indent=2) + "\n"
    assert doc == {
        "apiVersion": CONFIG_API_VERSION,
        "channel": "dash",
        "kafka": {
            "bootstrapServers": "kafka:9092",
            "clientId": "clarion-apps-dash",
            "security": {"protocol": "PLAINTEXT"},
        },
        "topics": [{"name": "orders", "audience": "organization"}],
        "routing": {"organizationFromKey": False},
        "server": {
            "websocketPath": "/ws/dashboard",
            "ssePath": "/sse/dashboard",
            "sseEnabled": True,
        },
        "auth": {"mode": "none"},
        "drain": {"windowSeconds": 30.0},
    }


def test_full_worker_json_names_files_never_secrets(
    render_channel: RenderChannel, full_raw: dict[str, Any]
) -> None:
    doc = json.loads(render_channel(full_raw).worker_json)
    assert doc["kafka"] == {
        "bootstrapServers": "b1:9093,b2:9093",
        "clientId": "dash",
        "security": {
            "protocol": "SASL_SSL",
            "saslMechanism": "SCRAM-SHA-512",
            "usernameFile": "/etc/clarion/secrets/kafka-credentials/username",
            "passwordFile": "/etc/clarion/secrets/kafka-credentials/password",
            "caFile": "/etc/clarion/secrets/kafka-tls/ca.crt",
            "certFile": "/etc/clarion/secrets/kafka-tls/tls.crt",
            "keyFile": "/etc/clarion/secrets/kafka-tls/tls.key",
        },
    }
    assert doc["auth"] == {
        "mode": "jwt",
        "algorithms": ["HS256"],
        "issuer": "https://id.example.com",
        "audience": "dashboard",
        "hmacSecretFile": "/etc/clarion/secrets/hmac/hmac",
        "organizationsClaim": "orgs",
        "userClaim": "sub",
        "allowedOrigins": ["https://app.example.com"],
        "leewaySeconds": 30,
    }
    assert doc["routing"] == {
        "typeField": "type",
        "userHeader": "user",
        "organizationFromKey": True,
    }
    assert doc["limits"] == {"maxConnections": 5000, "queueMaxBytes": 1048576}
    assert doc["heartbeat"] == {"intervalSeconds": 25.0, "timeoutSeconds": 8.0}
    assert doc["resume"] == {
        "windowEvents": 1000,
        "maxReplayEvents": 5000,
        "maxReplayAgeSeconds": 600.0,
    }
    assert doc["drain"] == {"windowSeconds": 60.0}
    assert [t["audience"] for t in doc["topics"]] == ["organization", "user"]


def test_jwks_url_and_file(render_channel: RenderChannel, minimal_raw: dict[str, Any]) -> None:
    minimal_raw["auth"] = {"mode": "jwt", "jwks": {"url": "https://id/jwks"}}
    assert (
        json.loads(render_channel(minimal_raw).worker_json)["auth"]["jwksUrl"] == "https://id/jwks"
    )
    minimal_raw["auth"] = {"mode": "jwt", "jwks": {"secret": {"name": "k", "key": "jwks.json"}}}
    state = render_channel(minimal_raw)
    assert (
        json.loads(state.worker_json)["auth"]["jwksFile"] == "/etc/clarion/secrets/jwks/jwks.json"
    )
    volume = state.deployment["spec"]["template"]["spec"]["volumes"][0]
    assert volume["projected"]["sources"][-1] == {
        "secret": {"name": "k", "items": [{"key": "jwks.json", "path": "secrets/jwks/jwks.json"}]}
    }


def test_secrets_are_projected_next_to_worker_json(
    render_channel: RenderChannel, full_raw: dict[str, Any]
) -> None:
    spec = render_channel(full_raw).deployment["spec"]["template"]["spec"]
    config, tmp = spec["volumes"]
    assert tmp == {"name": "tmp", "emptyDir": {"sizeLimit": "64Mi"}}
    assert config["projected"]["sources"] == [
        {
            "configMap": {
                "name": "dash-worker",
                "items": [{"key": "worker.json", "path": "worker.json"}],
            }
        },
        {
            "secret": {
                "name": "kafka-user",
                "items": [
                    {"key": "username", "path": "secrets/kafka-credentials/username"},
                    {"key": "password", "path": "secrets/kafka-credentials/password"},
                ],
            }
        },
        {
            "secret": {
                "name": "kafka-ca",
                "items": [
                    {"key": "ca.crt", "path": "secrets/kafka-tls/ca.crt"},
                    {"key": "tls.crt", "path": "secrets/kafka-tls/tls.crt"},
                    {"key": "tls.key", "path": "secrets/kafka-tls/tls.key"},
                ],
            }
        },
        {"secret": {"name": "jwt", "items": [{"key": "hmac", "path": "secrets/hmac/hmac"}]}},
    ]
    (container,) = spec["containers"]
    assert container["volumeMounts"] == [
        {"name": "config", "mountPath": "/etc/clarion", "readOnly": True},
        {"name": "tmp", "mountPath": "/tmp"},
    ]


def test_deployment_shape(render_channel: RenderChannel, minimal_raw: dict[str, Any]) -> None:
    state = render_channel(minimal_raw)
    dep = state.deployment
    assert dep["apiVersion"] == "apps/v1"
    spec = dep["spec"]
    assert spec["replicas"] == 2
    assert spec["selector"] == {"matchLabels": SELECTOR}
    assert spec["strategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1},
    }
    pod = spec["template"]["spec"]
    assert spec["template"]["metadata"]["labels"] == LABELS
    # preStop 5 + drain 30 + margin 15.
    assert pod["terminationGracePeriodSeconds"] == 50
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["automountServiceAccountToken"] is False
    c = _container(state)
    assert c["image"] == "ghcr.io/clarion/worker:0.1.0"
    assert c["args"] == ["--config", "/etc/clarion/worker.json"]
    assert c["ports"] == [{"name": "http", "containerPort": WORKER_PORT, "protocol": "TCP"}]
    assert c["env"] == [
        {"name": "CLARION_REPLICA_ID", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}
    ]
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert c["lifecycle"] == {"preStop": {"sleep": {"seconds": 5}}}
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    assert c["securityContext"]["allowPrivilegeEscalation"] is False
    assert c["resources"] == {
        "requests": {"cpu": "250m", "memory": "256Mi"},
        "limits": {"memory": "512Mi"},
    }


def test_grace_period_exceeds_drain_and_prestop(
    render_channel: RenderChannel, full_raw: dict[str, Any]
) -> None:
    state = render_channel(full_raw, prestop_seconds=7)
    pod = state.deployment["spec"]["template"]["spec"]
    assert pod["terminationGracePeriodSeconds"] > 60 + 7
    assert _container(state)["lifecycle"]["preStop"]["sleep"]["seconds"] == 7


def test_config_hash_is_sha256_of_worker_json(
    render_channel: RenderChannel, minimal_raw: dict[str, Any]
) -> None:
    import hashlib

    state = render_channel(minimal_raw)
    expected = hashlib.sha256(state.worker_json.encode()).hexdigest()
    assert state.config_hash == expected
    assert _pod_annotations(state)[CONFIG_HASH_ANNOTATION] == expected


def test_hash_changes_iff_worker_json_changes(
    render_channel: RenderChannel, minimal_raw: dict[str, Any]
) -> None:
    base = render_channel(minimal_raw)
    # Changes outside worker.json keep the hash (no needless rollout).
    minimal_raw["workers"] = {"replicas": 5, "image": "other:1"}
    minimal_raw["ingress"] = {"enabled": True, "host": "x.example.com"}
    same = render_channel(minimal_raw)
    assert same.worker_json == base.worker_json
    assert same.config_hash == base.config_hash
    # A change inside worker.json moves it.
    minimal_raw["topics"][0]["audience"] = "broadcast"
    changed = render_channel(minimal_raw)
    assert changed.worker_json != base.worker_json
    assert changed.config_hash != base.config_hash
    assert _pod_annotations(changed)[CONFIG_HASH_ANNOTATION] == changed.config_hash


def test_replicas_omitted_with_autoscaling(
    render_channel: RenderChannel, minimal_raw: dict[str, Any]
) -> None:
    minimal_raw["workers"] = {
        "replicas": 4,
        "autoscaling": {"minReplicas": 3, "maxReplicas": 9, "targetConnectionsPerPod": 2000},
    }
    state = render_channel(minimal_raw)
    assert "replicas" not in state.deployment["spec"]
    hpa = state.horizontal_pod_autoscaler
    assert hpa is not None
    assert hpa["apiVersion"] == "autoscaling/v2"
    spec = hpa["spec"]
    assert spec["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "dash-worker",
    }
    assert (spec["minReplicas"], spec["maxReplicas"]) == (3, 9)
    assert spec["metrics"][0]["resource"] == {
        "name": "cpu",
        "target": {"type": "Utilization", "averageUtilization": 70},
    }
    assert spec["metrics"][1]["pods"]["target"] == {"type": "AverageValue", "averageValue": "2000"}
    assert spec["behavior"]["scaleDown"]["policies"] == [
        {"type": "Pods", "value": 1, "periodSeconds": 60}
    ]
    assert state.objects()[-1] is hpa
    assert all(ref.kind != "HorizontalPodAutoscaler" for ref in state.absent())


def test_no_hpa_without_autoscaling(
    render_channel: RenderChannel, minimal_raw: dict[str, Any]
) -> None:
    state = render_channel(minimal_raw)
    assert state.horizontal_pod_autoscaler is None
    assert state.deployment["spec"]["replicas"] == 2


def test_service_affinity_without_ingress(
    render_channel: RenderChannel, minimal_raw: dict[str, Any]
) -> None:
    svc = render_channel(minimal_raw).service
    assert svc["spec"] == {
        "type": "ClusterIP",
        "selector": SELECTOR,
        "ports": [{"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}],
        "sessionAffinity": "ClientIP",
        "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 3600}},
    }


def test_service_affinity_off_behind_ingress(
    render_channel: RenderChannel, full_raw: dict[str, Any]
) -> None:
    spec = render_channel(full_raw).service["spec"]
    assert spec["sessionAffinity"] == "None"
    assert "sessionAffinityConfig" not in spec


def test_ingress_annotations_and_rules(
    render_channel: RenderChannel, full_raw: dict[str, Any]
) -> None:
    ing = render_channel(full_raw).ingress
    assert ing is not None
    assert ing["apiVersion"] == "networking.k8s.io/v1"
    ann = ing["metadata"]["annotations"]
    assert ann[f"{NGINX}affinity"] == "cookie"
    assert ann[f"{NGINX}affinity-mode"] == "persistent"
    assert ann[f"{NGINX}session-cookie-name"] == "rt"
    assert ann[f"{NGINX}session-cookie-max-age"] == "600"
    assert ann[f"{NGINX}session-cookie-expires"] == "600"
    assert ann[f"{NGINX}proxy-send-timeout"] == "3600"
    assert ann[f"{NGINX}proxy-http-version"] == "1.1"
    assert ann[f"{NGINX}proxy-buffering"] == "off"
    # User annotations are added and win over the operator's.
    assert ann[f"{NGINX}proxy-read-timeout"] == "7200"
    assert ann["x"] == "y"
    spec = ing["spec"]
    assert spec["ingressClassName"] == "nginx"
    assert spec["tls"] == [{"hosts": ["rt.example.com"], "secretName": "rt-tls"}]
    (rule,) = spec["rules"]
    assert rule["host"] == "rt.example.com"
    backend = {"service": {"name": "dash-worker", "port": {"name": "http"}}}
    assert rule["http"]["paths"] == [
        {"path": "/ws", "pathType": "Prefix", "backend": backend},
        {"path": "/sse", "pathType": "Prefix", "backend": backend},
    ]


def test_ingress_without_host_tls_or_sse(
    render_channel: RenderChannel, minimal_raw: dict[str, Any]
) -> None:
    minimal_raw["ingress"] = {"enabled": True, "className": "internal"}
    minimal_raw["server"] = {"sse": {"enabled": False}}
    ing = render_channel(minimal_raw).ingress
    assert ing is not None
    assert "tls" not in ing["spec"]
    assert ing["spec"]["ingressClassName"] == "internal"
    (rule,) = ing["spec"]["rules"]
    assert "host" not in rule
    assert [p["path"] for p in rule["http"]["paths"]] == ["/ws/dashboard"]


def test_no_ingress_when_disabled(
    render_channel: RenderChannel, minimal_raw: dict[str, Any]
) -> None:
    state = render_channel(minimal_raw)
    assert state.ingress is None
    assert ObjectRef("networking.k8s.io/v1", "Ingress", "apps", "dash-worker") in state.absent()


@pytest.mark.parametrize(
    ("api", "enabled", "monitor"),
    [(True, True, True), (False, True, False), (True, False, False), (False, False, False)],
)
def test_service_monitor_vs_scrape_annotations(
    render_channel: RenderChannel,
    full_raw: dict[str, Any],
    api: bool,
    enabled: bool,
    monitor: bool,
) -> None:
    full_raw["monitoring"]["serviceMonitor"]["enabled"] = enabled
    state = render_channel(full_raw, monitoring_api_available=api)
    ann = _pod_annotations(state)
    if monitor:
        sm = state.service_monitor
        assert sm is not None
        assert sm["apiVersion"] == "monitoring.coreos.com/v1"
        assert sm["metadata"]["labels"]["release"] == "prom"
        assert sm["spec"] == {
            "selector": {"matchLabels": SELECTOR},
            "endpoints": [{"port": "http", "path": "/metrics", "interval": "30s"}],
            # Alerts select worker targets by app_kubernetes_io_name, with or without it.
            "podTargetLabels": ["app.kubernetes.io/name", "app.kubernetes.io/instance"],
        }
        assert not any(k.startswith("prometheus.io/") for k in ann)
    else:
        assert state.service_monitor is None
        assert ann["prometheus.io/scrape"] == "true"
        assert ann["prometheus.io/port"] == str(WORKER_PORT)
        assert ann["prometheus.io/path"] == "/metrics"


def test_service_monitor_labels_cannot_override_standard_labels(
    render_channel: RenderChannel, full_raw: dict[str, Any]
) -> None:
    full_raw["monitoring"]["serviceMonitor"]["labels"] = {"app.kubernetes.io/instance": "evil"}
    sm = render_channel(full_raw, monitoring_api_available=True).service_monitor
    assert sm is not None
    assert sm["metadata"]["labels"]["app.kubernetes.io/instance"] == "dash"


def test_pod_disruption_budget(render_channel: RenderChannel, minimal_raw: dict[str, Any]) -> None:
    pdb = render_channel(minimal_raw).pod_disruption_budget
    assert pdb["apiVersion"] == "policy/v1"
    assert pdb["spec"] == {
        "maxUnavailable": 1,
        "selector": {"matchLabels": SELECTOR},
        # Unready workers (a crash loop) never block a node drain.
        "unhealthyPodEvictionPolicy": "AlwaysAllow",
    }


def test_desired_topics(render_channel: RenderChannel, full_raw: dict[str, Any]) -> None:
    topics = render_channel(full_raw).topics
    assert [(t.name, t.partitions, t.replication_factor, t.deletion_policy) for t in topics] == [
        ("orders", 12, 3, "Delete"),
        ("notices", 6, None, "Retain"),
    ]
    # max.message.bytes from limits.maxRecordBytes (the worker's 1 MiB default here).
    assert dict(topics[0].configs) == {"retention.ms": "86400000", "max.message.bytes": "1064960"}


def test_status_helpers(render_channel: RenderChannel, minimal_raw: dict[str, Any]) -> None:
    state = render_channel(minimal_raw, cluster_domain="k8s.local")
    assert state.endpoint == "ws://dash-worker.apps.svc.k8s.local/ws/dashboard"
    assert state.selector == "app.kubernetes.io/instance=dash,app.kubernetes.io/name=clarion-worker"


@pytest.mark.parametrize(
    ("ingress", "url"),
    [
        (
            {"enabled": True, "host": "rt.example.com", "tlsSecretName": "t"},
            "wss://rt.example.com/ws/dashboard",
        ),
        ({"enabled": True, "host": "rt.example.com"}, "ws://rt.example.com/ws/dashboard"),
        ({"enabled": True}, "ws://dash-worker.apps.svc.cluster.local/ws/dashboard"),
        (
            {"enabled": False, "host": "rt.example.com"},
            "ws://dash-worker.apps.svc.cluster.local/ws/dashboard",
        ),
    ],
)
def test_endpoint_url(minimal_raw: dict[str, Any], ingress: dict[str, Any], url: str) -> None:
    minimal_raw["ingress"] = ingress
    assert endpoint_url("dash", "apps", parse_spec(minimal_raw)) == url


def test_worker_json_escapes_what_a_yaml_reader_refuses(
    render_channel: RenderChannel, minimal_raw: dict[str, Any]
) -> None:
    """The worker reads its document with a YAML parser (JSON is YAML): characters YAML
    refuses (U+007F) or reads as line breaks (U+0085, U+2028) are written as escapes."""
    minimal_raw["auth"] = {"mode": "none", "issuer": "a\x7fb\x85c\u2028d é 😀"}
    text = render_channel(minimal_raw).worker_json
    assert "\\u007f" in text
    assert "\\u0085" in text
    assert "é 😀" in text
    assert yaml.safe_load(text) == json.loads(text)
    assert json.loads(text)["auth"]["issuer"] == "a\x7fb\x85c\u2028d é 😀"


def test_autoscaled_workers_are_not_ready_below_the_floor(
    render_channel: RenderChannel, minimal_raw: dict[str, Any]
) -> None:
    """A new autoscaled Deployment starts at 1 replica until the HPA raises it: one ready
    worker out of minReplicas 3 is not Ready (it showed Ready 1/1)."""
    minimal_raw["workers"] = {
        "autoscaling": {"minReplicas": 3, "maxReplicas": 6},
        "resources": {"requests": {"cpu": "100m"}},
    }
    deployment = render_channel(minimal_raw).deployment
    assert "replicas" not in deployment["spec"]  # the HPA owns it
    # As the API server stores it: defaulted to 1, one pod up.
    stored = {
        "metadata": {**deployment["metadata"], "generation": 1},
        "spec": {**deployment["spec"], "replicas": 1},
        "status": {
            "observedGeneration": 1,
            "replicas": 1,
            "readyReplicas": 1,
            "updatedReplicas": 1,
            "availableReplicas": 1,
        },
    }
    observed = observe_deployment(stored)
    assert observed is not None
    assert (observed.desired, observed.ready) == (3, 1)
    condition = workers_condition(observed, None, None)
    assert (condition.status, condition.reason) == ("False", Reason.WORKERS_PROGRESSING)
    # The HPA raised it to the floor and the pods are ready: Ready.
    stored["spec"]["replicas"] = 3
    stored["status"] = dict.fromkeys(stored["status"], 3) | {"observedGeneration": 1}
    observed = observe_deployment(stored)
    assert observed is not None
    assert workers_condition(observed, None, None).status == "True"
    # Scaled above the floor by the HPA: counted against its count.
    stored["spec"]["replicas"] = 5
    observed = observe_deployment(stored)
    assert observed is not None
    assert observed.desired == 5


def test_a_document_the_worker_would_refuse_is_never_rendered(
    minimal_raw: dict[str, Any],
) -> None:
    """The operator checks the document with the worker's own settings model: a spec that
    slipped past the spec's rules (here built directly) is refused with the worker's reason."""
    import dataclasses

    from clarion_operator.core.spec import LimitsSpec, SpecError

    spec = parse_spec(minimal_raw)
    # model_construct skips the spec model's own check of the same rule.
    limits = LimitsSpec.model_construct(queue_max_events=10, batch_max_events=64)
    spec = dataclasses.replace(spec, workers=spec.workers.model_copy(update={"limits": limits}))
    with pytest.raises(SpecError) as caught:
        render(ChannelContext("dash", "apps", "uid-1", 3, spec))
    assert [str(p) for p in caught.value.problems] == [
        "worker settings limits.batchMaxEvents: must not exceed limits.queueMaxEvents"
    ]
