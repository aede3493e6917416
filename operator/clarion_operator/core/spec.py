"""The validated, typed model of a ``RealtimeChannel`` spec.

:func:`parse_spec` turns the raw ``spec`` dict into frozen dataclasses, applying every
default itself: the CRD also defaults, but objects stored before a default existed, or
written by a client that bypassed the schema, must still produce the same workers. All
problems are collected (not only the first) and raised together as :class:`SpecError`,
each with its path, so one status message tells the user everything to fix.

The cross-field rules repeat the CRD's CEL rules on purpose (see ``crd.py``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Final, Literal, TypedDict, cast

from pydantic import ValidationError

from clarion_contract.worker_config import (
    AUDIENCES,
    JWT_ALGORITHMS,
    JWT_ALGORITHMS_HMAC,
    LIMIT_DEFAULTS,
    SASL_MECHANISMS,
    SECURITY_PROTOCOLS,
    Audience,
    LimitsSettings,
    ResumeSettings,
    RoutingSettings,
)
from clarion_contract.worker_config import problems as settings_problems
from clarion_operator.core import crd
from clarion_operator.core.errors import PermanentError
from clarion_operator.core.reasons import Reason

# --- raw bodies (what the API server hands over) -------------------------------------


class RawSecretKeyRef(TypedDict, total=False):
    name: str
    key: str


class RawCredentialsSecret(TypedDict, total=False):
    name: str
    usernameKey: str
    passwordKey: str


class RawTlsSecret(TypedDict, total=False):
    name: str
    caKey: str
    certKey: str
    keyKey: str


class RawKafkaSecurity(TypedDict, total=False):
    protocol: str
    saslMechanism: str
    credentialsSecret: RawCredentialsSecret
    tlsSecret: RawTlsSecret


class RawKafka(TypedDict, total=False):
    bootstrapServers: str
    clientId: str
    security: RawKafkaSecurity


class RawTopic(TypedDict, total=False):
    name: str
    partitions: int
    replicationFactor: int
    config: dict[str, str]
    audience: str
    deletionPolicy: str
    withoutUser: str


class RawRouting(TypedDict, total=False):
    typeField: str
    organizationField: str
    userField: str
    dataField: str
    timestampField: str
    timestampZone: str
    typeHeader: str
    organizationHeader: str
    userHeader: str
    organizationFromKey: bool


class RawSse(TypedDict, total=False):
    enabled: bool
    path: str


class RawServer(TypedDict, total=False):
    websocketPath: str
    sse: RawSse
    sessionAffinityTimeoutSeconds: int


class RawJwks(TypedDict, total=False):
    url: str
    secret: RawSecretKeyRef


class RawAuth(TypedDict, total=False):
    mode: str
    issuer: str
    audience: str
    algorithms: list[str]
    hmacSecret: RawSecretKeyRef
    jwks: RawJwks
    organizationsClaim: str
    userClaim: str
    allowedOrigins: list[str]
    leewaySeconds: int


class RawAutoscaling(TypedDict, total=False):
    minReplicas: int
    maxReplicas: int
    targetCPUUtilizationPercentage: int
    targetConnectionsPerPod: int


class RawResources(TypedDict, total=False):
    requests: dict[str, str | int]
    limits: dict[str, str | int]


class RawLimits(TypedDict, total=False):
    maxConnections: int
    queueMaxEvents: int
    queueMaxBytes: int
    maxClientFrameBytes: int
    maxRecordBytes: int
    batchMaxEvents: int
    batchMaxBytes: int


class RawResume(TypedDict, total=False):
    windowEvents: int
    maxReplayEvents: int
    maxReplayAgeSeconds: int


class RawWorkers(TypedDict, total=False):
    image: str
    imagePullPolicy: str
    replicas: int
    autoscaling: RawAutoscaling
    resources: RawResources
    limits: RawLimits
    drainWindowSeconds: int
    heartbeatSeconds: int
    heartbeatTimeoutSeconds: int
    resume: RawResume


class RawStickyCookie(TypedDict, total=False):
    name: str
    maxAgeSeconds: int


class RawIngress(TypedDict, total=False):
    enabled: bool
    className: str
    host: str
    tlsSecretName: str
    stickyCookie: RawStickyCookie
    annotations: dict[str, str]


class RawExposureGateway(TypedDict, total=False):
    name: str
    namespace: str
    sectionName: str
    tls: bool


class RawExposureIngress(TypedDict, total=False):
    className: str
    profile: str
    tlsSecretName: str
    annotations: dict[str, str]


class RawExposure(TypedDict, total=False):
    type: str
    hostnames: list[str]
    stickyCookie: RawStickyCookie
    streamTimeoutSeconds: int
    gateway: RawExposureGateway
    ingress: RawExposureIngress


class RawServiceMonitor(TypedDict, total=False):
    enabled: bool
    labels: dict[str, str]


class RawMonitoring(TypedDict, total=False):
    serviceMonitor: RawServiceMonitor
    interval: str


class RawChannelSpec(TypedDict, total=False):
    kafka: RawKafka
    topics: list[RawTopic]
    routing: RawRouting
    server: RawServer
    auth: RawAuth
    workers: RawWorkers
    ingress: RawIngress
    exposure: RawExposure
    monitoring: RawMonitoring


# --- validated model -----------------------------------------------------------------

SecurityProtocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
SaslMechanism = Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]
DeletionPolicy = Literal["Retain", "Delete"]
AuthMode = Literal["jwt", "none"]
PullPolicy = Literal["Always", "IfNotPresent", "Never"]

#: Resources used when ``spec.workers.resources`` is absent.
DEFAULT_REQUESTS: Final = MappingProxyType({"cpu": "250m", "memory": "256Mi"})
DEFAULT_LIMITS: Final = MappingProxyType({"memory": "512Mi"})

_EMPTY: Final[Mapping[str, str]] = MappingProxyType({})


@dataclass(frozen=True)
class SecretKeyRef:
    name: str
    key: str


@dataclass(frozen=True)
class CredentialsSecret:
    name: str
    username_key: str = "username"
    password_key: str = "password"


@dataclass(frozen=True)
class TlsSecret:
    name: str
    ca_key: str = "ca.crt"
    cert_key: str | None = None
    key_key: str | None = None


@dataclass(frozen=True)
class KafkaSecurity:
    protocol: SecurityProtocol = "PLAINTEXT"
    sasl_mechanism: SaslMechanism | None = None
    credentials: CredentialsSecret | None = None
    tls: TlsSecret | None = None


@dataclass(frozen=True)
class KafkaSpec:
    bootstrap_servers: str
    client_id: str | None = None
    security: KafkaSecurity = field(default_factory=KafkaSecurity)


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int = crd.DEFAULT_PARTITIONS
    #: None: the broker's default.replication.factor at creation, never compared after.
    replication_factor: int | None = None
    config: Mapping[str, str] = field(default_factory=lambda: _EMPTY)
    audience: Audience = "organization"
    deletion_policy: DeletionPolicy = "Retain"
    #: ``user`` topics: what an event naming no user becomes (None: the worker's default).
    without_user: str | None = None


#: ``spec.routing`` is the worker's own routing settings model (unset keys: its defaults).
RoutingSpec = RoutingSettings


@dataclass(frozen=True)
class ServerSpec:
    websocket_path: str = crd.DEFAULT_WEBSOCKET_PATH
    sse_enabled: bool = True
    sse_path: str = crd.DEFAULT_SSE_PATH
    session_affinity_timeout_seconds: int = crd.DEFAULT_AFFINITY_TIMEOUT


@dataclass(frozen=True)
class AuthSpec:
    mode: AuthMode
    issuer: str | None = None
    audience: str | None = None
    algorithms: tuple[str, ...] = ()
    hmac_secret: SecretKeyRef | None = None
    jwks_url: str | None = None
    jwks_secret: SecretKeyRef | None = None
    organizations_claim: str | None = None
    user_claim: str | None = None
    allowed_origins: tuple[str, ...] = ()
    leeway_seconds: int | None = None


@dataclass(frozen=True)
class AutoscalingSpec:
    min_replicas: int = crd.DEFAULT_MIN_REPLICAS
    max_replicas: int = crd.DEFAULT_MAX_REPLICAS
    target_cpu_utilization_percentage: int = crd.DEFAULT_TARGET_CPU
    target_connections_per_pod: int | None = None


@dataclass(frozen=True)
class ResourcesSpec:
    requests: Mapping[str, str] = field(default_factory=lambda: DEFAULT_REQUESTS)
    limits: Mapping[str, str] = field(default_factory=lambda: DEFAULT_LIMITS)


@dataclass(frozen=True)
class LimitsSpec:
    max_connections: int | None = None
    queue_max_events: int | None = None
    queue_max_bytes: int | None = None
    max_client_frame_bytes: int | None = None
    max_record_bytes: int | None = None
    batch_max_events: int | None = None
    batch_max_bytes: int | None = None


@dataclass(frozen=True)
class ResumeSpec:
    window_events: int | None = None
    max_replay_events: int | None = None
    max_replay_age_seconds: int | None = None


@dataclass(frozen=True)
class WorkersSpec:
    image: str = crd.DEFAULT_IMAGE
    image_pull_policy: PullPolicy = "IfNotPresent"
    replicas: int = crd.DEFAULT_REPLICAS
    autoscaling: AutoscalingSpec | None = None
    resources: ResourcesSpec = field(default_factory=ResourcesSpec)
    limits: LimitsSpec = field(default_factory=LimitsSpec)
    drain_window_seconds: int = crd.DEFAULT_DRAIN_WINDOW_SECONDS
    heartbeat_seconds: int | None = None
    heartbeat_timeout_seconds: int | None = None
    resume: ResumeSpec = field(default_factory=ResumeSpec)


@dataclass(frozen=True)
class IngressSpec:
    enabled: bool = False
    class_name: str = crd.DEFAULT_INGRESS_CLASS
    host: str | None = None
    tls_secret_name: str | None = None
    sticky_cookie_name: str = crd.DEFAULT_STICKY_COOKIE
    sticky_cookie_max_age_seconds: int = crd.DEFAULT_STICKY_MAX_AGE
    annotations: Mapping[str, str] = field(default_factory=lambda: _EMPTY)


ExposureType = Literal["none", "gateway", "ingress"]
IngressProfile = Literal["traefik", "haproxy", "nginx", "generic"]


@dataclass(frozen=True)
class GatewayParent:
    """The Gateway an HTTPRoute attaches to (one ``parentRefs`` entry)."""

    name: str
    namespace: str | None = None
    section_name: str | None = None
    #: The Gateway's listener terminates TLS: ``status.endpoint`` says ``wss://``.
    tls: bool = False


@dataclass(frozen=True)
class ExposureSpec:
    """How clients reach the workers: an HTTPRoute, an Ingress, or neither.

    ``spec.exposure`` when present; otherwise the deprecated ``spec.ingress`` with
    ``enabled: true`` converts to ``type: ingress, profile: nginx`` (``legacy``), so
    channels written before ``exposure`` existed render exactly what they did.
    """

    type: ExposureType = "none"
    hostnames: tuple[str, ...] = ()
    sticky_cookie_name: str = crd.DEFAULT_STICKY_COOKIE
    sticky_cookie_max_age_seconds: int = crd.DEFAULT_STICKY_MAX_AGE
    stream_timeout_seconds: int = crd.DEFAULT_STREAM_TIMEOUT
    gateway: GatewayParent | None = None
    ingress_class: str | None = None
    profile: IngressProfile = "generic"
    tls_secret_name: str | None = None
    annotations: Mapping[str, str] = field(default_factory=lambda: _EMPTY)
    legacy: bool = False


@dataclass(frozen=True)
class MonitoringSpec:
    service_monitor_enabled: bool = False
    service_monitor_labels: Mapping[str, str] = field(default_factory=lambda: _EMPTY)
    interval: str = crd.DEFAULT_SCRAPE_INTERVAL


@dataclass(frozen=True)
class ChannelSpec:
    kafka: KafkaSpec
    topics: tuple[TopicSpec, ...]
    auth: AuthSpec
    routing: RoutingSpec = field(default_factory=RoutingSpec)
    server: ServerSpec = field(default_factory=ServerSpec)
    workers: WorkersSpec = field(default_factory=WorkersSpec)
    ingress: IngressSpec = field(default_factory=IngressSpec)
    monitoring: MonitoringSpec = field(default_factory=MonitoringSpec)
    #: What renders the traffic entry (``spec.exposure``, or the converted ``spec.ingress``).
    exposure: ExposureSpec = field(default_factory=ExposureSpec)


# --- errors --------------------------------------------------------------------------


@dataclass(frozen=True)
class SpecProblem:
    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


class SpecError(PermanentError):
    """The spec cannot be acted on; ``problems`` lists every reason with its path."""

    def __init__(self, problems: list[SpecProblem]) -> None:
        self.problems = tuple(problems)
        super().__init__(Reason.INVALID_SPEC, "; ".join(str(p) for p in self.problems))


# --- reader --------------------------------------------------------------------------


class _Reader:
    """Reads typed values out of untrusted mappings, recording problems instead of raising."""

    def __init__(self) -> None:
        self.problems: list[SpecProblem] = []

    def fail(self, path: str, message: str) -> None:
        self.problems.append(SpecProblem(path, message))

    def obj(self, parent: Mapping[str, object], key: str, path: str) -> Mapping[str, object]:
        """A nested object; absent is an empty mapping (every child then defaults)."""
        value = parent.get(key)
        if value is None:
            return {}
        if not isinstance(value, Mapping):
            self.fail(f"{path}.{key}", "must be an object")
            return {}
        return cast(Mapping[str, object], value)

    def opt_obj(
        self, parent: Mapping[str, object], key: str, path: str
    ) -> Mapping[str, object] | None:
        """A nested object whose presence matters."""
        if parent.get(key) is None:
            return None
        return self.obj(parent, key, path)

    def opt_str(
        self,
        parent: Mapping[str, object],
        key: str,
        path: str,
        *,
        pattern: str | None = None,
        enum: tuple[str, ...] | None = None,
        max_length: int | None = None,
        not_blank: bool = False,
    ) -> str | None:
        value = parent.get(key)
        where = f"{path}.{key}"
        if value is None:
            return None
        if not isinstance(value, str):
            self.fail(where, "must be a string")
            return None
        if enum is not None and value not in enum:
            self.fail(where, f"must be one of {', '.join(enum)} (got {value!r})")
            return None
        if pattern is not None and not matches(pattern, value):
            self.fail(where, f"must match {pattern} (got {value!r})")
            return None
        if max_length is not None and len(value) > max_length:
            self.fail(where, f"must be at most {max_length} characters")
            return None
        if value == "":
            self.fail(where, "must not be empty")
            return None
        if not_blank and not matches(crd.NOT_BLANK_PATTERN, value):
            self.fail(where, "must not be blank")
            return None
        return value

    def req_str(
        self,
        parent: Mapping[str, object],
        key: str,
        path: str,
        *,
        pattern: str | None = None,
        enum: tuple[str, ...] | None = None,
        max_length: int | None = None,
        not_blank: bool = False,
    ) -> str:
        if parent.get(key) is None:
            self.fail(f"{path}.{key}", "is required")
            return ""
        value = self.opt_str(
            parent,
            key,
            path,
            pattern=pattern,
            enum=enum,
            max_length=max_length,
            not_blank=not_blank,
        )
        return "" if value is None else value

    def str_default(
        self,
        parent: Mapping[str, object],
        key: str,
        path: str,
        default: str,
        *,
        pattern: str | None = None,
        enum: tuple[str, ...] | None = None,
        max_length: int | None = None,
    ) -> str:
        value = self.opt_str(parent, key, path, pattern=pattern, enum=enum, max_length=max_length)
        return default if value is None else value

    def opt_int(
        self,
        parent: Mapping[str, object],
        key: str,
        path: str,
        *,
        minimum: int | None = None,
        maximum: int | None = None,
    ) -> int | None:
        value = parent.get(key)
        where = f"{path}.{key}"
        if value is None:
            return None
        # bool is an int in Python; YAML "true" must not become 1 replica.
        if isinstance(value, bool) or not isinstance(value, int):
            self.fail(where, "must be an integer")
            return None
        if minimum is not None and value < minimum:
            self.fail(where, f"must be at least {minimum} (got {value})")
            return None
        if maximum is not None and value > maximum:
            self.fail(where, f"must be at most {maximum} (got {value})")
            return None
        return value

    def int_default(
        self,
        parent: Mapping[str, object],
        key: str,
        path: str,
        default: int,
        *,
        minimum: int | None = None,
        maximum: int | None = None,
    ) -> int:
        value = self.opt_int(parent, key, path, minimum=minimum, maximum=maximum)
        return default if value is None else value

    def bool_default(
        self, parent: Mapping[str, object], key: str, path: str, default: bool
    ) -> bool:
        value = parent.get(key)
        if value is None:
            return default
        if not isinstance(value, bool):
            self.fail(f"{path}.{key}", "must be a boolean")
            return default
        return value

    def str_list(
        self,
        parent: Mapping[str, object],
        key: str,
        path: str,
        *,
        enum: tuple[str, ...] | None = None,
    ) -> tuple[str, ...]:
        value = parent.get(key)
        where = f"{path}.{key}"
        if value is None:
            return ()
        if not isinstance(value, list):
            self.fail(where, "must be a list of strings")
            return ()
        out: list[str] = []
        for index, item in enumerate(value):
            if not isinstance(item, str) or item == "":
                self.fail(f"{where}[{index}]", "must be a non-empty string")
            elif enum is not None and item not in enum:
                self.fail(f"{where}[{index}]", f"must be one of {', '.join(enum)} (got {item!r})")
            elif item in out:
                self.fail(f"{where}[{index}]", f"duplicate {item!r}")
            else:
                out.append(item)
        return tuple(out)

    def str_map(
        self,
        parent: Mapping[str, object],
        key: str,
        path: str,
        *,
        quantities: bool = False,
    ) -> Mapping[str, str] | None:
        value = parent.get(key)
        where = f"{path}.{key}"
        if value is None:
            return None
        if not isinstance(value, Mapping):
            self.fail(where, "must be a map of strings")
            return None
        out: dict[str, str] = {}
        for k, v in value.items():
            if quantities and isinstance(v, int) and not isinstance(v, bool):
                v = str(v)
            if not isinstance(k, str) or not isinstance(v, str):
                self.fail(f"{where}.{k}", "must be a string")
            elif quantities and not matches(crd.QUANTITY_PATTERN, v):
                self.fail(f"{where}.{k}", f"is not a Kubernetes quantity (got {v!r})")
            else:
                out[k] = v
        return MappingProxyType(dict(sorted(out.items())))


# --- parsing -------------------------------------------------------------------------


def matches(pattern: str, value: str) -> bool:
    """``pattern`` searched in ``value`` as the API server does (Go's RE2): there ``$``
    matches only at the very end, where Python's also matches before a final newline."""
    if pattern.endswith("$") and not pattern.endswith("\\$"):
        pattern = pattern[:-1] + r"\Z"
    return re.search(pattern, value) is not None


def validate_name(name: str) -> list[SpecProblem]:
    """Problems with the channel's own name (it prefixes every child object's name)."""
    if len(name) > crd.MAX_NAME_LENGTH or re.fullmatch(r"[a-z]([-a-z0-9]*[a-z0-9])?", name) is None:
        return [
            SpecProblem(
                "metadata.name",
                f"must be a DNS-1035 label of at most {crd.MAX_NAME_LENGTH} characters "
                f"(got {name!r})",
            )
        ]
    return []


def parse_spec(
    raw: RawChannelSpec | Mapping[str, object], *, name: str | None = None
) -> ChannelSpec:
    """Validate ``raw`` (and ``name`` when given) or raise :class:`SpecError` listing all."""
    r = _Reader()
    if name is not None:
        r.problems.extend(validate_name(name))
    root: Mapping[str, object] = raw
    if not isinstance(raw, Mapping):
        raise SpecError([SpecProblem("spec", "must be an object")])
    kafka = _kafka(r, root)
    topics = _topics(r, root)
    auth = _auth(r, root)
    routing = _routing(r, r.obj(root, "routing", "spec"))
    server = _server(r, r.obj(root, "server", "spec"))
    workers = _workers(r, r.obj(root, "workers", "spec"))
    ingress = _ingress(r, r.obj(root, "ingress", "spec"))
    exposure = _exposure(r, root, ingress)
    monitoring = _monitoring(r, r.obj(root, "monitoring", "spec"))
    if r.problems:
        raise SpecError(r.problems)
    return ChannelSpec(
        kafka=kafka,
        topics=topics,
        auth=auth,
        routing=routing,
        server=server,
        workers=workers,
        ingress=ingress,
        monitoring=monitoring,
        exposure=exposure,
    )


def _kafka(r: _Reader, root: Mapping[str, object]) -> KafkaSpec:
    path = "spec.kafka"
    if root.get("kafka") is None:
        r.fail(path, "is required")
    raw = r.obj(root, "kafka", "spec")
    servers = r.req_str(raw, "bootstrapServers", path, max_length=2048, not_blank=True)
    client_id = r.opt_str(raw, "clientId", path, max_length=255, not_blank=True)
    sec = r.obj(raw, "security", path)
    spath = f"{path}.security"
    protocol = cast(
        SecurityProtocol,
        r.str_default(sec, "protocol", spath, "PLAINTEXT", enum=SECURITY_PROTOCOLS),
    )
    mechanism = cast(
        SaslMechanism | None, r.opt_str(sec, "saslMechanism", spath, enum=SASL_MECHANISMS)
    )
    credentials: CredentialsSecret | None = None
    raw_cred = r.opt_obj(sec, "credentialsSecret", spath)
    if raw_cred is not None:
        cpath = f"{spath}.credentialsSecret"
        credentials = CredentialsSecret(
            name=r.req_str(raw_cred, "name", cpath, pattern=crd.DNS_SUBDOMAIN_PATTERN),
            username_key=r.str_default(
                raw_cred, "usernameKey", cpath, "username", pattern=crd.SECRET_KEY_PATTERN
            ),
            password_key=r.str_default(
                raw_cred, "passwordKey", cpath, "password", pattern=crd.SECRET_KEY_PATTERN
            ),
        )
        if credentials.username_key == credentials.password_key:
            r.fail(cpath, "usernameKey and passwordKey must differ")
    tls: TlsSecret | None = None
    raw_tls = r.opt_obj(sec, "tlsSecret", spath)
    if raw_tls is not None:
        tpath = f"{spath}.tlsSecret"
        tls = TlsSecret(
            name=r.req_str(raw_tls, "name", tpath, pattern=crd.DNS_SUBDOMAIN_PATTERN),
            ca_key=r.str_default(raw_tls, "caKey", tpath, "ca.crt", pattern=crd.SECRET_KEY_PATTERN),
            cert_key=r.opt_str(raw_tls, "certKey", tpath, pattern=crd.SECRET_KEY_PATTERN),
            key_key=r.opt_str(raw_tls, "keyKey", tpath, pattern=crd.SECRET_KEY_PATTERN),
        )
        if (tls.cert_key is None) != (tls.key_key is None):
            r.fail(tpath, "set certKey and keyKey together")
        keys = [k for k in (tls.ca_key, tls.cert_key, tls.key_key) if k is not None]
        if len(set(keys)) != len(keys):
            r.fail(tpath, "caKey, certKey and keyKey must differ")
        if not protocol.endswith("SSL"):
            r.fail(tpath, "needs protocol SSL or SASL_SSL")
    if protocol.startswith("SASL"):
        if mechanism is None:
            r.fail(f"{spath}.saslMechanism", f"is required with protocol {protocol}")
        if credentials is None:
            r.fail(f"{spath}.credentialsSecret", f"is required with protocol {protocol}")
    return KafkaSpec(
        bootstrap_servers=servers,
        client_id=client_id,
        security=KafkaSecurity(
            protocol=protocol, sasl_mechanism=mechanism, credentials=credentials, tls=tls
        ),
    )


def _topics(r: _Reader, root: Mapping[str, object]) -> tuple[TopicSpec, ...]:
    path = "spec.topics"
    raw = root.get("topics")
    if raw is None:
        r.fail(path, "is required: at least one topic")
        return ()
    if not isinstance(raw, list):
        r.fail(path, "must be a list")
        return ()
    if not raw:
        r.fail(path, "must list at least one topic")
    if len(raw) > 64:
        r.fail(path, "must list at most 64 topics")
    out: list[TopicSpec] = []
    seen: set[str] = set()
    for index, item in enumerate(raw):
        tpath = f"{path}[{index}]"
        if not isinstance(item, Mapping):
            r.fail(tpath, "must be an object")
            continue
        t: Mapping[str, object] = item
        name = r.req_str(t, "name", tpath, pattern=crd.TOPIC_NAME_PATTERN, max_length=249)
        if name in seen:
            r.fail(f"{tpath}.name", f"duplicate topic {name!r}")
        seen.add(name)
        # "." and ".." are legal characters but not legal names.
        if name in {".", ".."}:
            r.fail(f"{tpath}.name", "'.' and '..' are not topic names")
        config = r.str_map(t, "config", tpath)
        out.append(
            TopicSpec(
                name=name,
                partitions=r.int_default(
                    t, "partitions", tpath, crd.DEFAULT_PARTITIONS, minimum=1, maximum=10000
                ),
                replication_factor=r.opt_int(t, "replicationFactor", tpath, minimum=1, maximum=32),
                config=_EMPTY if config is None else config,
                audience=cast(
                    Audience, r.str_default(t, "audience", tpath, "organization", enum=AUDIENCES)
                ),
                deletion_policy=cast(
                    DeletionPolicy,
                    r.str_default(t, "deletionPolicy", tpath, "Retain", enum=crd.DELETION_POLICIES),
                ),
                without_user=_without_user(r, t, tpath),
            )
        )
    return tuple(out)


def _without_user(r: _Reader, t: Mapping[str, object], tpath: str) -> str | None:
    rule = r.opt_str(t, "withoutUser", tpath, enum=crd.WITHOUT_USER_RULES)
    if rule is not None and t.get("audience") != "user":
        r.fail(f"{tpath}.withoutUser", "only for topics of audience user")
    return rule


def _routing(r: _Reader, raw: Mapping[str, object]) -> RoutingSpec:
    """Validated by the worker's routing model itself. As the API server does, null values
    and unknown keys are dropped first (an object stored under an older schema)."""
    given = {k: v for k, v in raw.items() if k in crd.ROUTING_KEYS and v is not None}
    try:
        return RoutingSettings.model_validate(given)
    except ValidationError as error:
        for line in settings_problems(error, "spec.routing"):
            path, _, message = line.partition(": ")
            r.fail(path, message)
        return RoutingSettings()


def _server(r: _Reader, raw: Mapping[str, object]) -> ServerSpec:
    p = "spec.server"
    sse = r.obj(raw, "sse", p)
    server = ServerSpec(
        websocket_path=r.str_default(
            raw, "websocketPath", p, crd.DEFAULT_WEBSOCKET_PATH, pattern=crd.HTTP_PATH_PATTERN
        ),
        sse_enabled=r.bool_default(sse, "enabled", f"{p}.sse", True),
        sse_path=r.str_default(
            sse, "path", f"{p}.sse", crd.DEFAULT_SSE_PATH, pattern=crd.HTTP_PATH_PATTERN
        ),
        session_affinity_timeout_seconds=r.int_default(
            raw,
            "sessionAffinityTimeoutSeconds",
            p,
            crd.DEFAULT_AFFINITY_TIMEOUT,
            minimum=1,
            maximum=86400,
        ),
    )
    # The worker refuses equal paths even with SSE off.
    if server.sse_path == server.websocket_path:
        r.fail(f"{p}.sse.path", "must differ from websocketPath (even with SSE disabled)")
    return server


def _secret_ref(
    r: _Reader, parent: Mapping[str, object], key: str, path: str
) -> SecretKeyRef | None:
    raw = r.opt_obj(parent, key, path)
    if raw is None:
        return None
    p = f"{path}.{key}"
    return SecretKeyRef(
        name=r.req_str(raw, "name", p, pattern=crd.DNS_SUBDOMAIN_PATTERN),
        key=r.req_str(raw, "key", p, pattern=crd.SECRET_KEY_PATTERN),
    )


def _auth(r: _Reader, root: Mapping[str, object]) -> AuthSpec:
    p = "spec.auth"
    if root.get("auth") is None:
        # No silent default: running without authentication must be a visible choice.
        r.fail(p, "is required (set mode: none explicitly to run without authentication)")
    raw = r.obj(root, "auth", "spec")
    mode = r.req_str(raw, "mode", p, enum=crd.AUTH_MODES) if root.get("auth") is not None else ""
    jwks = r.opt_obj(raw, "jwks", p)
    jwks_url: str | None = None
    jwks_secret: SecretKeyRef | None = None
    if jwks is not None:
        jwks_url = r.opt_str(jwks, "url", f"{p}.jwks", pattern=r"^https?://")
        jwks_secret = _secret_ref(r, jwks, "secret", f"{p}.jwks")
        if (jwks.get("url") is None) == (jwks.get("secret") is None):
            r.fail(f"{p}.jwks", "set exactly one of url and secret")
    hmac = _secret_ref(r, raw, "hmacSecret", p)
    if mode == "jwt" and (hmac is None) == (jwks is None):
        r.fail(p, "mode jwt needs exactly one of hmacSecret and jwks")
    algorithms = r.str_list(raw, "algorithms", p, enum=JWT_ALGORITHMS)
    if mode == "jwt" and (hmac is None) != (jwks is None):
        # The worker verifies HS* with the shared secret only, the others with the JWKS.
        wrong = [a for a in algorithms if (a in JWT_ALGORITHMS_HMAC) != (hmac is not None)]
        if wrong:
            needs = "jwks" if hmac is not None else "hmacSecret"
            r.fail(f"{p}.algorithms", f"{', '.join(wrong)} need {needs}")
    return AuthSpec(
        mode=cast(AuthMode, mode or "none"),
        issuer=r.opt_str(raw, "issuer", p, max_length=2048, not_blank=True),
        audience=r.opt_str(raw, "audience", p, max_length=2048, not_blank=True),
        algorithms=algorithms,
        hmac_secret=hmac,
        jwks_url=jwks_url,
        jwks_secret=jwks_secret,
        organizations_claim=r.opt_str(raw, "organizationsClaim", p, max_length=253, not_blank=True),
        user_claim=r.opt_str(raw, "userClaim", p, max_length=253, not_blank=True),
        allowed_origins=r.str_list(raw, "allowedOrigins", p),
        leeway_seconds=r.opt_int(raw, "leewaySeconds", p, minimum=0, maximum=600),
    )


def _workers(r: _Reader, raw: Mapping[str, object]) -> WorkersSpec:
    p = "spec.workers"
    autoscaling: AutoscalingSpec | None = None
    raw_as = r.opt_obj(raw, "autoscaling", p)
    if raw_as is not None:
        ap = f"{p}.autoscaling"
        autoscaling = AutoscalingSpec(
            min_replicas=r.int_default(
                raw_as, "minReplicas", ap, crd.DEFAULT_MIN_REPLICAS, minimum=1, maximum=1000
            ),
            max_replicas=r.int_default(
                raw_as, "maxReplicas", ap, crd.DEFAULT_MAX_REPLICAS, minimum=1, maximum=1000
            ),
            target_cpu_utilization_percentage=r.int_default(
                raw_as,
                "targetCPUUtilizationPercentage",
                ap,
                crd.DEFAULT_TARGET_CPU,
                minimum=1,
                maximum=100,
            ),
            target_connections_per_pod=r.opt_int(
                raw_as, "targetConnectionsPerPod", ap, minimum=1, maximum=1000000
            ),
        )
        if autoscaling.min_replicas > autoscaling.max_replicas:
            r.fail(ap, "minReplicas must not exceed maxReplicas")
    raw_res = r.opt_obj(raw, "resources", p)
    resources = ResourcesSpec()
    if raw_res is not None:
        # Given resources are taken as written, not merged with the defaults: a user who
        # removes the memory limit on purpose must be able to.
        requests = r.str_map(raw_res, "requests", f"{p}.resources", quantities=True)
        limits = r.str_map(raw_res, "limits", f"{p}.resources", quantities=True)
        resources = ResourcesSpec(
            requests=_EMPTY if requests is None else requests,
            limits=_EMPTY if limits is None else limits,
        )
    if (
        autoscaling is not None
        and "cpu" not in resources.requests
        and "cpu" not in resources.limits
    ):
        r.fail(
            f"{p}.resources.requests.cpu",
            "is required with autoscaling (CPU utilization is a percentage of the request)",
        )
    lim = r.obj(raw, "limits", p)
    lp = f"{p}.limits"
    # Bounds from the worker settings model, through the CRD schema generated from it.
    bounds = crd.model_properties(LimitsSettings, crd.SPEC_LIMIT_KEYS)

    def limit(key: str) -> int | None:
        return r.opt_int(
            lim, key, lp, minimum=bounds[key].get("minimum"), maximum=bounds[key].get("maximum")
        )

    worker_limits = LimitsSpec(
        max_connections=limit("maxConnections"),
        queue_max_events=limit("queueMaxEvents"),
        queue_max_bytes=limit("queueMaxBytes"),
        max_client_frame_bytes=limit("maxClientFrameBytes"),
        max_record_bytes=limit("maxRecordBytes"),
        batch_max_events=limit("batchMaxEvents"),
        batch_max_bytes=limit("batchMaxBytes"),
    )
    for small, large in crd.LIMIT_ORDER:
        a, b = _limit(lim, small), _limit(lim, large)
        if a is not None and b is not None and a > b:
            r.fail(
                f"{lp}.{small}",
                f"must not exceed {large} ({a} > {b}; unset keys are the worker defaults, "
                f"{small} {LIMIT_DEFAULTS[small]}, {large} {LIMIT_DEFAULTS[large]})",
            )
    res = r.obj(raw, "resume", p)
    rp = f"{p}.resume"
    resume_bounds = crd.model_properties(
        ResumeSettings, crd.RESUME_KEYS, whole=("maxReplayAgeSeconds",)
    )

    def resume(key: str) -> int | None:
        return r.opt_int(res, key, rp, minimum=resume_bounds[key].get("minimum"))

    return WorkersSpec(
        image=r.str_default(raw, "image", p, crd.DEFAULT_IMAGE, max_length=1024),
        image_pull_policy=cast(
            PullPolicy,
            r.str_default(raw, "imagePullPolicy", p, "IfNotPresent", enum=crd.PULL_POLICIES),
        ),
        replicas=r.int_default(raw, "replicas", p, crd.DEFAULT_REPLICAS, minimum=0, maximum=1000),
        autoscaling=autoscaling,
        resources=resources,
        limits=worker_limits,
        drain_window_seconds=r.int_default(
            raw,
            "drainWindowSeconds",
            p,
            crd.DEFAULT_DRAIN_WINDOW_SECONDS,
            minimum=0,
            maximum=3600,
        ),
        heartbeat_seconds=r.opt_int(raw, "heartbeatSeconds", p, minimum=1, maximum=600),
        heartbeat_timeout_seconds=r.opt_int(
            raw, "heartbeatTimeoutSeconds", p, minimum=1, maximum=600
        ),
        resume=ResumeSpec(
            window_events=resume("windowEvents"),
            max_replay_events=resume("maxReplayEvents"),
            max_replay_age_seconds=resume("maxReplayAgeSeconds"),
        ),
    )


def _limit(raw: Mapping[str, object], key: str) -> int | None:
    """A limit as the worker will see it: the spec's integer, else the worker default
    (None: not an integer, already reported)."""
    value = raw.get(key)
    if value is None:
        return LIMIT_DEFAULTS[key]
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _ingress(r: _Reader, raw: Mapping[str, object]) -> IngressSpec:
    p = "spec.ingress"
    cookie = r.obj(raw, "stickyCookie", p)
    cp = f"{p}.stickyCookie"
    annotations = r.str_map(raw, "annotations", p)
    ingress = IngressSpec(
        enabled=r.bool_default(raw, "enabled", p, False),
        class_name=r.str_default(raw, "className", p, crd.DEFAULT_INGRESS_CLASS, max_length=253),
        host=r.opt_str(raw, "host", p, pattern=crd.HOST_PATTERN, max_length=253),
        tls_secret_name=r.opt_str(
            raw, "tlsSecretName", p, pattern=crd.DNS_SUBDOMAIN_PATTERN, max_length=253
        ),
        sticky_cookie_name=r.str_default(
            cookie, "name", cp, crd.DEFAULT_STICKY_COOKIE, pattern=r"^[A-Za-z0-9_-]+$"
        ),
        sticky_cookie_max_age_seconds=r.int_default(
            cookie, "maxAgeSeconds", cp, crd.DEFAULT_STICKY_MAX_AGE, minimum=1, maximum=31536000
        ),
        annotations=_EMPTY if annotations is None else annotations,
    )
    if ingress.tls_secret_name is not None and raw.get("host") is None:
        r.fail(f"{p}.host", "is required with tlsSecretName")
    return ingress


def _exposure(r: _Reader, root: Mapping[str, object], legacy: IngressSpec) -> ExposureSpec:
    p = "spec.exposure"
    raw = r.opt_obj(root, "exposure", "spec")
    if raw is None:
        if not legacy.enabled:
            return ExposureSpec()
        return ExposureSpec(
            type="ingress",
            hostnames=() if legacy.host is None else (legacy.host,),
            sticky_cookie_name=legacy.sticky_cookie_name,
            sticky_cookie_max_age_seconds=legacy.sticky_cookie_max_age_seconds,
            ingress_class=legacy.class_name,
            profile="nginx",
            tls_secret_name=legacy.tls_secret_name,
            annotations=legacy.annotations,
            legacy=True,
        )
    if legacy.enabled:
        r.fail(p, "and spec.ingress.enabled cannot both be set: move spec.ingress into exposure")
    kind = r.req_str(raw, "type", p, enum=crd.EXPOSURE_TYPES)
    hostnames = r.str_list(raw, "hostnames", p)
    for index, host in enumerate(hostnames):
        if re.search(crd.HOST_PATTERN, host) is None or len(host) > 253:
            r.fail(f"{p}.hostnames[{index}]", f"must be a DNS name (got {host!r})")
    if len(hostnames) > crd.MAX_HOSTNAMES:
        r.fail(f"{p}.hostnames", f"must have at most {crd.MAX_HOSTNAMES} items")
    cookie = r.obj(raw, "stickyCookie", p)
    cp = f"{p}.stickyCookie"
    gateway: GatewayParent | None = None
    graw = r.opt_obj(raw, "gateway", p)
    gp = f"{p}.gateway"
    if graw is not None:
        gateway = GatewayParent(
            name=r.req_str(graw, "name", gp, pattern=crd.DNS_SUBDOMAIN_PATTERN, max_length=253),
            namespace=r.opt_str(
                graw, "namespace", gp, pattern=crd.DNS_LABEL_PATTERN, max_length=63
            ),
            section_name=r.opt_str(
                graw, "sectionName", gp, pattern=crd.DNS_SUBDOMAIN_PATTERN, max_length=253
            ),
            tls=r.bool_default(graw, "tls", gp, False),
        )
    elif kind == "gateway":
        r.fail(gp, "is required with type gateway")
    iraw = r.opt_obj(raw, "ingress", p)
    ip = f"{p}.ingress"
    ingress_class: str | None = None
    profile = "generic"
    tls_secret: str | None = None
    annotations: Mapping[str, str] | None = None
    if iraw is not None:
        ingress_class = r.req_str(iraw, "className", ip, max_length=253)
        profile = r.req_str(iraw, "profile", ip, enum=crd.INGRESS_PROFILES) or "generic"
        tls_secret = r.opt_str(
            iraw, "tlsSecretName", ip, pattern=crd.DNS_SUBDOMAIN_PATTERN, max_length=253
        )
        annotations = r.str_map(iraw, "annotations", ip)
        if tls_secret is not None and not hostnames:
            r.fail(f"{p}.hostnames", "are required with ingress.tlsSecretName")
    elif kind == "ingress":
        r.fail(ip, "is required with type ingress")
    return ExposureSpec(
        type=cast(ExposureType, kind or "none"),
        hostnames=hostnames,
        sticky_cookie_name=r.str_default(
            cookie, "name", cp, crd.DEFAULT_STICKY_COOKIE, pattern=r"^[A-Za-z0-9_-]+$"
        ),
        sticky_cookie_max_age_seconds=r.int_default(
            cookie, "maxAgeSeconds", cp, crd.DEFAULT_STICKY_MAX_AGE, minimum=1, maximum=31536000
        ),
        stream_timeout_seconds=r.int_default(
            raw,
            "streamTimeoutSeconds",
            p,
            crd.DEFAULT_STREAM_TIMEOUT,
            minimum=crd.MIN_STREAM_TIMEOUT,
            maximum=86400,
        ),
        gateway=gateway,
        ingress_class=ingress_class,
        profile=cast(IngressProfile, profile),
        tls_secret_name=tls_secret,
        annotations=_EMPTY if annotations is None else annotations,
    )


def _monitoring(r: _Reader, raw: Mapping[str, object]) -> MonitoringSpec:
    p = "spec.monitoring"
    sm = r.obj(raw, "serviceMonitor", p)
    labels = r.str_map(sm, "labels", f"{p}.serviceMonitor")
    return MonitoringSpec(
        service_monitor_enabled=r.bool_default(sm, "enabled", f"{p}.serviceMonitor", False),
        service_monitor_labels=_EMPTY if labels is None else labels,
        interval=r.str_default(
            raw, "interval", p, crd.DEFAULT_SCRAPE_INTERVAL, pattern=crd.DURATION_PATTERN
        ),
    )
