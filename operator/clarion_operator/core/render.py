"""Desired Kubernetes objects for one channel, rendered from its validated spec.

:func:`render` is pure: the same :class:`ChannelContext` always yields byte-identical
objects, which server-side apply (one field manager for every child) turns into no-op
patches. Every object carries the standard labels and a controller owner reference to the
channel, so garbage collection removes them with it.

The worker settings document (``worker.json``) is the contract's ``WorkerConfig`` model:
checked against the model the worker loads and written as the model dumps it, so the
operator never writes a document a worker would refuse. Its sha256 is stamped on the pod
template so any change rolls the workers. Secrets are never inlined: one projected volume
at ``/etc/clarion`` holds ``worker.json`` and each referenced Secret key under
``secrets/<purpose>/``, and the document names those files.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from clarion_contract.worker_config import (
    CONFIG_API_VERSION,
    CONFIG_FILENAME,
    HEALTH_PATH,
    METRICS_PATH,
    READY_PATH,
    WORKER_PORT,
    SettingsError,
    validate_document,
)
from clarion_operator.core import crd, exposure
from clarion_operator.core.spec import ChannelSpec, SpecError, SpecProblem
from clarion_operator.core.topics import DesiredTopic

Body = dict[str, Any]

CONFIG_DIR: Final = "/etc/clarion"
CONFIG_PATH: Final = f"{CONFIG_DIR}/{CONFIG_FILENAME}"
SECRETS_DIR: Final = f"{CONFIG_DIR}/secrets"
CONFIG_HASH_ANNOTATION: Final = "clarion.dev/config-hash"
REPLICA_ID_ENV: Final = "CLARION_REPLICA_ID"
CONTAINER_NAME: Final = "worker"
#: Non-root user of the worker image (distroless "nonroot"); set numerically so
#: runAsNonRoot can be verified whatever the image's USER says.
RUN_AS_USER: Final = 65532
SERVICE_PORT: Final = 80
#: ingress-nginx defaults to 60 s and silently cuts idle sockets; heartbeats are far below.
PROXY_TIMEOUT_SECONDS: Final = crd.DEFAULT_STREAM_TIMEOUT
#: Pods metric the HPA reads for targetConnectionsPerPod (served by a metrics adapter).
CONNECTIONS_METRIC: Final = "clarion_worker_connections"

WORKER_APP: Final = "clarion-worker"
#: Pod labels copied onto the worker's scrape targets by its ServiceMonitor.
TARGET_LABELS: Final = ("app.kubernetes.io/name", "app.kubernetes.io/instance")
MANAGED_BY: Final = "clarion-operator"


@dataclass(frozen=True)
class OperatorSettings:
    """Process-level settings the rendering needs (built at the edge)."""

    field_manager: str = MANAGED_BY
    #: Whether monitoring.coreos.com/v1 ServiceMonitor is served by the cluster.
    monitoring_api_available: bool = False
    cluster_domain: str = "cluster.local"
    #: preStop sleep: lets endpoints controllers and ingress-nginx drop the pod before
    #: the worker starts draining, so no new connection lands on a draining pod.
    prestop_seconds: int = 5
    #: Slack between the end of the drain and SIGKILL.
    termination_margin_seconds: int = 15


@dataclass(frozen=True)
class ChannelContext:
    name: str
    namespace: str
    uid: str
    generation: int
    spec: ChannelSpec
    settings: OperatorSettings = OperatorSettings()


@dataclass(frozen=True)
class ObjectRef:
    api_version: str
    kind: str
    namespace: str
    name: str


@dataclass(frozen=True)
class DesiredState:
    config_map: Body
    deployment: Body
    service: Body
    pod_disruption_budget: Body
    ingress: Body | None
    horizontal_pod_autoscaler: Body | None
    service_monitor: Body | None
    topics: tuple[DesiredTopic, ...]
    worker_config: Body
    worker_json: str
    config_hash: str
    endpoint: str
    #: Label selector string of the worker pods (status.selector, scale subresource).
    selector: str
    #: The HTTPRoute of ``spec.exposure.type: gateway``.
    http_route: Body | None = None

    def objects(self) -> tuple[Body, ...]:
        """Objects to apply, ConfigMap first so pods never start without their settings."""
        optional = (
            self.ingress,
            self.http_route,
            self.horizontal_pod_autoscaler,
            self.service_monitor,
        )
        return (
            self.config_map,
            self.service,
            self.deployment,
            self.pod_disruption_budget,
            *(o for o in optional if o is not None),
        )

    def absent(self) -> tuple[ObjectRef, ...]:
        """Optional children that must not exist (switched off in the spec). The edge
        deletes them only when their controller owner reference is this channel."""
        meta = self.config_map["metadata"]
        ns, name = meta["namespace"], meta["name"]
        out: list[ObjectRef] = []
        if self.ingress is None:
            out.append(ObjectRef("networking.k8s.io/v1", "Ingress", ns, name))
        if self.http_route is None:
            out.append(ObjectRef(exposure.HTTP_ROUTE_API_VERSION, "HTTPRoute", ns, name))
        if self.horizontal_pod_autoscaler is None:
            out.append(ObjectRef("autoscaling/v2", "HorizontalPodAutoscaler", ns, name))
        if self.service_monitor is None:
            out.append(ObjectRef("monitoring.coreos.com/v1", "ServiceMonitor", ns, name))
        return tuple(out)


# --- names and metadata --------------------------------------------------------------


def worker_name(channel: str) -> str:
    return f"{channel}-worker"


def selector_labels(channel: str) -> dict[str, str]:
    # Deployment selectors are immutable: keep them to the two labels that never change.
    return {"app.kubernetes.io/name": WORKER_APP, "app.kubernetes.io/instance": channel}


def standard_labels(channel: str) -> dict[str, str]:
    return {
        **selector_labels(channel),
        "app.kubernetes.io/managed-by": MANAGED_BY,
        "app.kubernetes.io/part-of": "clarion",
        "app.kubernetes.io/component": "worker",
    }


def selector_string(channel: str) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted(selector_labels(channel).items()))


def owner_reference(ctx: ChannelContext) -> Body:
    return {
        "apiVersion": crd.API_VERSION,
        "kind": crd.KIND,
        "name": ctx.name,
        "uid": ctx.uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def _metadata(ctx: ChannelContext, *, annotations: Mapping[str, str] | None = None) -> Body:
    meta: Body = {
        "name": worker_name(ctx.name),
        "namespace": ctx.namespace,
        "labels": standard_labels(ctx.name),
        "ownerReferences": [owner_reference(ctx)],
    }
    if annotations:
        meta["annotations"] = dict(annotations)
    return meta


# --- worker settings -----------------------------------------------------------------


def _secret_file(purpose: str, key: str) -> str:
    return f"{SECRETS_DIR}/{purpose}/{key}"


def worker_config(name: str, namespace: str, spec: ChannelSpec) -> Body:
    """The worker settings document; only keys the spec sets (the worker owns defaults).

    Checked against the settings model the worker loads (``SpecError`` listing what the
    worker would refuse) and written as that model dumps it."""
    doc = _worker_config(name, namespace, spec)
    try:
        model = validate_document(doc)
    except SettingsError as error:
        raise SpecError(
            [
                SpecProblem(f"worker settings {p.partition(': ')[0]}", p.partition(": ")[2])
                for p in error.problems
            ]
        ) from None
    dumped: Body = model.model_dump(
        mode="json", by_alias=True, exclude_unset=True, exclude_none=True
    )
    return dumped


def _worker_config(name: str, namespace: str, spec: ChannelSpec) -> Body:
    sec = spec.kafka.security
    kafka: Body = {
        "bootstrapServers": spec.kafka.bootstrap_servers,
        "clientId": spec.kafka.client_id or f"clarion-{namespace}-{name}",
    }
    security: Body = {"protocol": sec.protocol}
    if sec.sasl_mechanism is not None:
        security["saslMechanism"] = sec.sasl_mechanism
    if sec.credentials is not None:
        security["usernameFile"] = _secret_file("kafka-credentials", sec.credentials.username_key)
        security["passwordFile"] = _secret_file("kafka-credentials", sec.credentials.password_key)
    if sec.tls is not None:
        security["caFile"] = _secret_file("kafka-tls", sec.tls.ca_key)
        if sec.tls.cert_key is not None and sec.tls.key_key is not None:
            security["certFile"] = _secret_file("kafka-tls", sec.tls.cert_key)
            security["keyFile"] = _secret_file("kafka-tls", sec.tls.key_key)
    kafka["security"] = security

    topics: list[Body] = []
    for t in spec.topics:
        topic: Body = {"name": t.name, "audience": t.audience}
        if t.without_user is not None:
            topic["withoutUser"] = "reject" if t.without_user == "reject" else "organization"
        topics.append(topic)

    rt = spec.routing
    routing: Body = rt.model_dump(mode="json", by_alias=True, exclude_unset=True)
    routing["organizationFromKey"] = rt.organization_from_key

    a = spec.auth
    auth: Body = {"mode": a.mode}
    if a.algorithms:
        auth["algorithms"] = list(a.algorithms)
    if a.issuer is not None:
        auth["issuer"] = a.issuer
    if a.audience is not None:
        auth["audience"] = a.audience
    if a.hmac_secret is not None:
        auth["hmacSecretFile"] = _secret_file("hmac", a.hmac_secret.key)
    if a.jwks_url is not None:
        auth["jwksUrl"] = a.jwks_url
    if a.jwks_secret is not None:
        auth["jwksFile"] = _secret_file("jwks", a.jwks_secret.key)
    if a.organizations_claim is not None:
        auth["organizationsClaim"] = a.organizations_claim
    if a.user_claim is not None:
        auth["userClaim"] = a.user_claim
    if a.allowed_origins:
        auth["allowedOrigins"] = list(a.allowed_origins)
    if a.leeway_seconds is not None:
        auth["leewaySeconds"] = a.leeway_seconds

    limits: Body = spec.workers.limits.document()

    res = spec.workers.resume
    resume: Body = {}
    if res.window_events is not None:
        resume["windowEvents"] = res.window_events
    if res.max_replay_events is not None:
        resume["maxReplayEvents"] = res.max_replay_events
    if res.max_replay_age_seconds is not None:
        resume["maxReplayAgeSeconds"] = float(res.max_replay_age_seconds)

    doc: Body = {
        "apiVersion": CONFIG_API_VERSION,
        "channel": name,
        "kafka": kafka,
        "topics": topics,
        "routing": routing,
        "server": {
            "websocketPath": spec.server.websocket_path,
            "ssePath": spec.server.sse_path,
            "sseEnabled": spec.server.sse_enabled,
        },
        "auth": auth,
        "drain": {"windowSeconds": float(spec.workers.drain_window_seconds)},
    }
    if limits:
        doc["limits"] = limits
    if resume:
        doc["resume"] = resume
    w = spec.workers
    heartbeat: Body = {}
    if w.heartbeat_seconds is not None:
        heartbeat["intervalSeconds"] = float(w.heartbeat_seconds)
    if w.heartbeat_timeout_seconds is not None:
        heartbeat["timeoutSeconds"] = float(w.heartbeat_timeout_seconds)
    if heartbeat:
        doc["heartbeat"] = heartbeat
    return doc


#: Characters a YAML reader refuses or reads as line breaks (JSON allows them raw in
#: strings; the worker reads the document with a YAML parser, as JSON is YAML): U+007F to
#: U+009F (NEL among them), the line and paragraph separators, the BOM, U+FFFE, U+FFFF.
#: json.dumps already escapes U+0000-U+001F.
_NOT_YAML_SAFE: Final = re.compile("[\x7f-\x9f\u2028\u2029\ufeff\ufffe\uffff]")


def dump_worker_config(doc: Body) -> str:
    """Deterministic JSON text: the hash below must not depend on dict insertion order.

    Non-ASCII text stays readable, except the few characters a YAML reader refuses: they
    are written as JSON escapes (they can only occur inside strings)."""
    text = json.dumps(doc, sort_keys=True, indent=2, ensure_ascii=False) + "\n"
    return _NOT_YAML_SAFE.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


def config_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


# --- objects -------------------------------------------------------------------------


def _config_map(ctx: ChannelContext, text: str) -> Body:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": _metadata(ctx),
        "data": {CONFIG_FILENAME: text},
    }


def _projected_sources(ctx: ChannelContext) -> list[Body]:
    spec = ctx.spec
    sources: list[Body] = [
        {
            "configMap": {
                "name": worker_name(ctx.name),
                "items": [{"key": CONFIG_FILENAME, "path": CONFIG_FILENAME}],
            }
        }
    ]

    def secret(name: str, purpose: str, keys: list[str]) -> None:
        sources.append(
            {
                "secret": {
                    "name": name,
                    "items": [{"key": k, "path": f"secrets/{purpose}/{k}"} for k in keys],
                }
            }
        )

    sec = spec.kafka.security
    if sec.credentials is not None:
        c = sec.credentials
        secret(c.name, "kafka-credentials", [c.username_key, c.password_key])
    if sec.tls is not None:
        t = sec.tls
        keys = [t.ca_key] + [k for k in (t.cert_key, t.key_key) if k is not None]
        secret(t.name, "kafka-tls", keys)
    if spec.auth.hmac_secret is not None:
        secret(spec.auth.hmac_secret.name, "hmac", [spec.auth.hmac_secret.key])
    if spec.auth.jwks_secret is not None:
        secret(spec.auth.jwks_secret.name, "jwks", [spec.auth.jwks_secret.key])
    return sources


def service_monitor_enabled(ctx: ChannelContext) -> bool:
    return ctx.settings.monitoring_api_available and ctx.spec.monitoring.service_monitor_enabled


def termination_grace_seconds(ctx: ChannelContext) -> int:
    s = ctx.settings
    return s.prestop_seconds + ctx.spec.workers.drain_window_seconds + s.termination_margin_seconds


def _deployment(ctx: ChannelContext, digest: str) -> Body:
    w = ctx.spec.workers
    pod_annotations: dict[str, str] = {
        CONFIG_HASH_ANNOTATION: digest,
        "kubectl.kubernetes.io/default-container": CONTAINER_NAME,
    }
    if not service_monitor_enabled(ctx):
        # Without a ServiceMonitor, annotation-based scrape configs are the common fallback.
        pod_annotations.update(
            {
                "prometheus.io/scrape": "true",
                "prometheus.io/port": str(WORKER_PORT),
                "prometheus.io/path": METRICS_PATH,
            }
        )
    resources: Body = {}
    if w.resources.requests:
        resources["requests"] = dict(w.resources.requests)
    if w.resources.limits:
        resources["limits"] = dict(w.resources.limits)
    container: Body = {
        "name": CONTAINER_NAME,
        "image": w.image,
        "imagePullPolicy": w.image_pull_policy,
        "args": ["--config", CONFIG_PATH],
        # The worker's exit message (a refused setting, Kafka unreachable at start-up)
        # reaches the pod's lastState, where the operator reads it for the channel's
        # WorkersReady condition; the last log lines stand in when it wrote none.
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "ports": [{"name": "http", "containerPort": WORKER_PORT, "protocol": "TCP"}],
        "env": [
            {
                "name": REPLICA_ID_ENV,
                "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}},
            }
        ],
        "readinessProbe": {
            "httpGet": {"path": READY_PATH, "port": "http"},
            "periodSeconds": 5,
            "timeoutSeconds": 2,
            "failureThreshold": 2,
        },
        "livenessProbe": {
            "httpGet": {"path": HEALTH_PATH, "port": "http"},
            "initialDelaySeconds": 10,
            "periodSeconds": 10,
            "timeoutSeconds": 2,
            "failureThreshold": 3,
        },
        # The sleep action (Kubernetes >= 1.30) needs no sleep binary in the image.
        "lifecycle": {"preStop": {"sleep": {"seconds": ctx.settings.prestop_seconds}}},
        "resources": resources,
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "runAsNonRoot": True,
            "capabilities": {"drop": ["ALL"]},
        },
        "volumeMounts": [
            {"name": "config", "mountPath": CONFIG_DIR, "readOnly": True},
            {"name": "tmp", "mountPath": "/tmp"},
        ],
    }
    spec: Body = {
        "selector": {"matchLabels": selector_labels(ctx.name)},
        "revisionHistoryLimit": 5,
        # A new pod must be ready before an old one drains: capacity never dips.
        "strategy": {
            "type": "RollingUpdate",
            "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1},
        },
        "template": {
            "metadata": {"labels": standard_labels(ctx.name), "annotations": pod_annotations},
            "spec": {
                "automountServiceAccountToken": False,
                "enableServiceLinks": False,
                "terminationGracePeriodSeconds": termination_grace_seconds(ctx),
                "securityContext": {
                    "runAsNonRoot": True,
                    "runAsUser": RUN_AS_USER,
                    "runAsGroup": RUN_AS_USER,
                    "fsGroup": RUN_AS_USER,
                    "seccompProfile": {"type": "RuntimeDefault"},
                },
                "topologySpreadConstraints": [
                    {
                        "maxSkew": 1,
                        "topologyKey": "kubernetes.io/hostname",
                        "whenUnsatisfiable": "ScheduleAnyway",
                        "labelSelector": {"matchLabels": selector_labels(ctx.name)},
                    }
                ],
                "containers": [container],
                "volumes": [
                    {
                        "name": "config",
                        "projected": {
                            # Group-readable only: secrets stay private to the pod's fsGroup.
                            "defaultMode": 0o440,
                            "sources": _projected_sources(ctx),
                        },
                    },
                    {"name": "tmp", "emptyDir": {"sizeLimit": "64Mi"}},
                ],
            },
        },
    }
    annotations: dict[str, str] = {}
    if w.autoscaling is None:
        spec["replicas"] = w.replicas
    else:
        # The field is left out so the HPA alone owns it under SSA (writing it would undo
        # every scale-up at the next reconcile). The floor is recorded instead: the status
        # counts workers against it until the HPA has raised the Deployment to it.
        annotations[crd.MIN_REPLICAS_ANNOTATION] = str(w.autoscaling.min_replicas)
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _metadata(ctx, annotations=annotations),
        "spec": spec,
    }


def _service(ctx: ChannelContext) -> Body:
    spec: Body = {
        "type": "ClusterIP",
        "selector": selector_labels(ctx.name),
        "ports": [{"name": "http", "port": SERVICE_PORT, "targetPort": "http", "protocol": "TCP"}],
    }
    if ctx.spec.exposure.type != "none":
        # The ingress pins clients with its cookie; kube-proxy must not second-guess it.
        # "None" is written explicitly so SSA resets a previously rendered ClientIP.
        spec["sessionAffinity"] = "None"
    else:
        spec["sessionAffinity"] = "ClientIP"
        spec["sessionAffinityConfig"] = {
            "clientIP": {"timeoutSeconds": ctx.spec.server.session_affinity_timeout_seconds}
        }
    # Controllers that read stickiness from the Service (Traefik) find it here.
    meta = _metadata(ctx, annotations=exposure.service_annotations(ctx.spec.exposure))
    return {"apiVersion": "v1", "kind": "Service", "metadata": meta, "spec": spec}


def ingress_annotations(ctx: ChannelContext) -> dict[str, str]:
    return exposure.ingress_annotations(ctx.spec.exposure)


def _backend(ctx: ChannelContext) -> exposure.Backend:
    server = ctx.spec.server
    paths = (server.websocket_path, *((server.sse_path,) if server.sse_enabled else ()))
    return exposure.Backend(worker_name(ctx.name), "http", SERVICE_PORT, paths)


def _ingress(ctx: ChannelContext) -> Body | None:
    if ctx.spec.exposure.type != "ingress":
        return None
    return exposure.render_ingress(ctx.spec.exposure, _backend(ctx), _metadata(ctx))


def _http_route(ctx: ChannelContext) -> Body | None:
    if ctx.spec.exposure.type != "gateway":
        return None
    return exposure.render_http_route(ctx.spec.exposure, _backend(ctx), _metadata(ctx))


def _hpa(ctx: ChannelContext) -> Body | None:
    auto = ctx.spec.workers.autoscaling
    if auto is None:
        return None
    metrics: list[Body] = [
        {
            "type": "Resource",
            "resource": {
                "name": "cpu",
                "target": {
                    "type": "Utilization",
                    "averageUtilization": auto.target_cpu_utilization_percentage,
                },
            },
        }
    ]
    if auto.target_connections_per_pod is not None:
        metrics.append(
            {
                "type": "Pods",
                "pods": {
                    "metric": {"name": CONNECTIONS_METRIC},
                    "target": {
                        "type": "AverageValue",
                        "averageValue": str(auto.target_connections_per_pod),
                    },
                },
            }
        )
    # Removing a pod drains all its connections; go one pod at a time, no faster than a
    # full termination, so reconnect storms stay small.
    down_period = min(1800, max(60, termination_grace_seconds(ctx)))
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": _metadata(ctx),
        "spec": {
            "scaleTargetRef": {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "name": worker_name(ctx.name),
            },
            "minReplicas": auto.min_replicas,
            "maxReplicas": auto.max_replicas,
            "metrics": metrics,
            "behavior": {
                "scaleDown": {
                    "stabilizationWindowSeconds": 300,
                    "policies": [{"type": "Pods", "value": 1, "periodSeconds": down_period}],
                }
            },
        },
    }


def _pdb(ctx: ChannelContext) -> Body:
    # maxUnavailable (not minAvailable) never blocks a node drain at 1 replica, and still
    # keeps voluntary evictions to one draining pod at a time.
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": _metadata(ctx),
        "spec": {
            "maxUnavailable": 1,
            "selector": {"matchLabels": selector_labels(ctx.name)},
            # A pod that is not Ready (crash-looping on a bad setting, stuck starting) serves
            # no client: evicting it must never wait for the budget, or one broken worker
            # blocks every node drain. (The default, IfHealthyBudget, would.)
            "unhealthyPodEvictionPolicy": "AlwaysAllow",
        },
    }


def _service_monitor(ctx: ChannelContext) -> Body | None:
    if not service_monitor_enabled(ctx):
        return None
    mon = ctx.spec.monitoring
    meta = _metadata(ctx)
    meta["labels"] = {**dict(mon.service_monitor_labels), **meta["labels"]}
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "ServiceMonitor",
        "metadata": meta,
        "spec": {
            "selector": {"matchLabels": selector_labels(ctx.name)},
            "endpoints": [{"port": "http", "path": METRICS_PATH, "interval": mon.interval}],
            # The pod's name label becomes a target label (app_kubernetes_io_name), as
            # annotation-based scrape configs map pod labels: the chart's alerts select
            # worker targets by it whichever way they are scraped.
            "podTargetLabels": list(TARGET_LABELS),
        },
    }


def endpoint_url(
    name: str, namespace: str, spec: ChannelSpec, *, cluster_domain: str = "cluster.local"
) -> str:
    """The WebSocket URL clients use: through the rendered HTTPRoute's or Ingress's host,
    else (no exposure, or no concrete host) the in-cluster Service."""
    path = spec.server.websocket_path
    public = exposure.public_url(spec.exposure, path)
    if public is not None:
        return public
    return f"ws://{worker_name(name)}.{namespace}.svc.{cluster_domain}{path}"


def render(ctx: ChannelContext) -> DesiredState:
    doc = worker_config(ctx.name, ctx.namespace, ctx.spec)
    text = dump_worker_config(doc)
    digest = config_hash(text)
    return DesiredState(
        config_map=_config_map(ctx, text),
        deployment=_deployment(ctx, digest),
        service=_service(ctx),
        pod_disruption_budget=_pdb(ctx),
        ingress=_ingress(ctx),
        http_route=_http_route(ctx),
        horizontal_pod_autoscaler=_hpa(ctx),
        service_monitor=_service_monitor(ctx),
        topics=tuple(
            DesiredTopic.from_spec(t, ctx.spec.workers.limits.max_record_bytes)
            for t in ctx.spec.topics
        ),
        worker_config=doc,
        worker_json=text,
        config_hash=digest,
        endpoint=endpoint_url(
            ctx.name, ctx.namespace, ctx.spec, cluster_domain=ctx.settings.cluster_domain
        ),
        selector=selector_string(ctx.name),
    )
