"""The operator process's settings: one frozen object, built once at the edge.

Every flag has an environment variable (``CLARION_OPERATOR_*``) so a Deployment can set
it either way; a flag wins over its variable. Only :func:`from_args` reads the
environment, and it is handed the mapping by ``__main__`` (the single place allowed to
touch ``os.environ``), which keeps everything else testable without monkeypatching.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final, Literal, TypeVar

from clarion_operator.core.render import MANAGED_BY

ENV_PREFIX: Final = "CLARION_OPERATOR_"
LogFormat = Literal["json", "plain", "full"]


class SettingsError(ValueError):
    """A flag or variable has a value the operator cannot run with."""


@dataclass(frozen=True)
class ProcessSettings:
    """Everything the operator process needs to know about itself."""

    #: Namespaces to watch; empty with ``clusterwide`` True means every namespace.
    namespaces: tuple[str, ...] = ()
    clusterwide: bool = False
    #: Field manager of every server-side apply (one owner for every child field).
    field_manager: str = MANAGED_BY
    #: Port of the operator's own Prometheus /metrics and of its readiness probe /readyz
    #: (0: disabled). Not 8080: that is the worker's port, and in development both run on
    #: one host.
    metrics_port: int = 8082
    #: Port of kopf's liveness endpoint, served at /healthz (0: disabled).
    liveness_port: int = 8081
    #: Seconds between drift checks of every channel (topics and children).
    drift_interval: float = 60.0
    #: Seconds between health probes of every channel's topics (metadata only: leaders
    #: and in-sync replicas), so a lost broker shows in TopicsHealthy within moments.
    health_interval: float = 10.0
    #: Follow the Secrets named by the channels' ``spec.kafka.security``: a change
    #: reconciles the channels naming it at once. Needs list/watch on Secrets where the
    #: operator may get them; off (``--no-watch-secrets``) without that permission.
    watch_secrets: bool = True
    #: Peering lets several replicas run with one active; off means --standalone.
    peering: bool = False
    peering_name: str = "clarion-operator"
    #: Kafka admin request timeout: bounds how long a reconcile waits on a dead broker.
    kafka_request_timeout_ms: int = 10_000
    #: Threads of the operator's own pool for the (blocking) Kubernetes client calls, and
    #: the client's connection pool size. asyncio's default pool is min(32, CPUs + 4)
    #: threads, 6 on two cores: with hundreds of channels every reconcile queued behind it.
    kube_api_threads: int = 32
    log_format: LogFormat = "json"
    verbose: bool = False
    #: kubeconfig file; None: in-cluster service account, then the default kubeconfig.
    kubeconfig: str | None = None
    #: Finalizer the operator puts on every RealtimeChannel.
    finalizer: str = "realtime.clarion.dev/finalizer"

    def __post_init__(self) -> None:
        if self.clusterwide and self.namespaces:
            raise SettingsError("--all-namespaces and --namespace exclude each other")
        if not self.clusterwide and not self.namespaces:
            raise SettingsError("give --namespace (repeatable) or --all-namespaces")
        for port in (self.metrics_port, self.liveness_port):
            if not 0 <= port <= 65535:
                raise SettingsError(f"port {port} is out of range")
        if self.drift_interval <= 0:
            raise SettingsError("--drift-interval must be positive")
        if self.health_interval <= 0:
            raise SettingsError("--health-interval must be positive")
        if self.kafka_request_timeout_ms < 100:
            raise SettingsError("--kafka-request-timeout-ms must be at least 100")
        if self.kube_api_threads < 1:
            raise SettingsError("--kube-api-threads must be at least 1")
        if not self.field_manager:
            raise SettingsError("--field-manager must not be empty")

    @property
    def liveness_endpoint(self) -> str | None:
        if self.liveness_port == 0:
            return None
        return f"http://0.0.0.0:{self.liveness_port}/healthz"


def _bool(value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off", ""}:
        return False
    raise SettingsError(f"not a boolean: {value!r}")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="clarion-operator",
        description="Reconciles RealtimeChannel resources into Kafka topics and workers.",
    )
    scope = p.add_mutually_exclusive_group()
    scope.add_argument(
        "--namespace",
        "-n",
        action="append",
        default=None,
        help="namespace to watch (repeatable); env CLARION_OPERATOR_NAMESPACES, comma-separated",
    )
    scope.add_argument(
        "--all-namespaces",
        "-A",
        action="store_true",
        default=None,
        help="watch every namespace; env CLARION_OPERATOR_ALL_NAMESPACES",
    )
    p.add_argument("--field-manager", help="server-side apply field manager")
    p.add_argument("--metrics-port", type=int, help="Prometheus /metrics and /readyz port (0: off)")
    p.add_argument("--liveness-port", type=int, help="liveness /healthz port (0: off)")
    p.add_argument("--drift-interval", type=float, help="seconds between drift checks")
    p.add_argument(
        "--health-interval", type=float, help="seconds between health probes of the topics"
    )
    p.add_argument(
        "--watch-secrets",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="reconcile a channel when a Secret of its spec.kafka.security changes "
        "(needs list/watch on Secrets); env CLARION_OPERATOR_WATCH_SECRETS",
    )
    peering = p.add_mutually_exclusive_group()
    peering.add_argument(
        "--standalone", action="store_true", default=None, help="no peering (one replica)"
    )
    peering.add_argument(
        "--peering", action="store_true", default=None, help="peering (several replicas)"
    )
    p.add_argument("--peering-name", help="name of the KopfPeering object")
    p.add_argument("--kafka-request-timeout-ms", type=int, help="Kafka admin request timeout")
    p.add_argument(
        "--kube-api-threads", type=int, help="threads for Kubernetes API calls (and connections)"
    )
    p.add_argument("--log-format", choices=("json", "plain", "full"), help="log format")
    p.add_argument("--verbose", "-v", action="store_true", default=None, help="debug logs")
    p.add_argument("--kubeconfig", help="kubeconfig file (default: in-cluster, then KUBECONFIG)")
    return p


#: A setting read as a number: the flag, else the variable, else the default.
_Number = TypeVar("_Number", int, float)


def from_args(argv: Sequence[str], environ: Mapping[str, str]) -> ProcessSettings:
    """Settings from command-line flags, falling back to ``CLARION_OPERATOR_*`` variables."""
    a = parser().parse_args(list(argv))

    def env(name: str) -> str | None:
        value = environ.get(ENV_PREFIX + name)
        return value if value not in (None, "") else None

    def pick(flag: _Number | None, name: str, default: _Number) -> _Number:
        """The flag, else the variable parsed as the default's type, else the default."""
        if flag is not None:
            return flag
        raw = env(name)
        parse = type(default)
        try:
            return default if raw is None else parse(raw)
        except ValueError as exc:
            what = "an integer" if parse is int else "a number"
            raise SettingsError(f"{ENV_PREFIX}{name} is not {what}: {raw!r}") from exc

    namespaces: tuple[str, ...] = tuple(a.namespace or ())
    clusterwide = bool(a.all_namespaces)
    if not namespaces and not clusterwide:
        raw_ns = env("NAMESPACES")
        if raw_ns is not None:
            namespaces = tuple(n.strip() for n in raw_ns.split(",") if n.strip())
        raw_all = env("ALL_NAMESPACES")
        clusterwide = raw_all is not None and _bool(raw_all)

    if a.standalone:
        peering = False
    elif a.peering:
        peering = True
    else:
        raw_peering = env("PEERING")
        peering = raw_peering is not None and _bool(raw_peering)

    drift = pick(a.drift_interval, "DRIFT_INTERVAL", 60.0)
    health = pick(a.health_interval, "HEALTH_INTERVAL", 10.0)

    raw_watch_secrets = env("WATCH_SECRETS")
    watch_secrets = (
        a.watch_secrets
        if a.watch_secrets is not None
        else raw_watch_secrets is None or _bool(raw_watch_secrets)
    )

    log_format = a.log_format or env("LOG_FORMAT") or "json"
    if log_format not in ("json", "plain", "full"):
        raise SettingsError(f"unknown log format {log_format!r}")
    raw_verbose = env("VERBOSE")
    return ProcessSettings(
        namespaces=namespaces,
        clusterwide=clusterwide,
        field_manager=a.field_manager or env("FIELD_MANAGER") or MANAGED_BY,
        metrics_port=pick(a.metrics_port, "METRICS_PORT", 8082),
        liveness_port=pick(a.liveness_port, "LIVENESS_PORT", 8081),
        drift_interval=drift,
        health_interval=health,
        watch_secrets=watch_secrets,
        peering=peering,
        peering_name=a.peering_name or env("PEERING_NAME") or "clarion-operator",
        kafka_request_timeout_ms=pick(
            a.kafka_request_timeout_ms, "KAFKA_REQUEST_TIMEOUT_MS", 10_000
        ),
        kube_api_threads=pick(a.kube_api_threads, "KUBE_API_THREADS", 32),
        log_format=log_format,  # type: ignore[arg-type]
        verbose=bool(a.verbose) or (raw_verbose is not None and _bool(raw_verbose)),
        kubeconfig=a.kubeconfig or environ.get("KUBECONFIG") or None,
    )
