"""The ``RealtimeChannel`` spec: one typed model per section.

These pydantic models describe what a user writes under ``spec``: each key's type,
default, bounds, description and the cross-field rules. From them come the CRD's OpenAPI
schema and CEL rules (``clarion_operator.core.crd`` walks the models), the spec
reference of docs/operator.md (from that schema) and the operator's parse of a stored
spec (``clarion_operator.core.spec.parse_spec`` validates with them). ``spec.routing``
is the worker's own :class:`~clarion_contract.worker_config.RoutingSettings`;
``spec.workers.limits`` and ``spec.workers.resume`` take their keys' bounds and meaning
from the worker's :class:`LimitsSettings` and :class:`ResumeSettings`.

A cross-field rule is stated twice, next to each other: as CEL in the model's ``CEL``
(the API server refuses the object at admission) and as a pydantic validator (the
operator refuses an object stored before the rule existed). Facts only the CRD needs
(list types, map keys, item descriptions) ride on the fields as :class:`Crd` markers.

Defaults: the CRD carries a scalar's default when the model has one; an object section
gets ``default: {}`` when its model's default is the section with every key unset, so
the API server fills the nested defaults in too. The operator never relies on it: the
models apply the same defaults.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Annotated, Any, ClassVar, Final, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    StrictStr,
    StringConstraints,
    model_validator,
)
from pydantic_core import PydanticCustomError

from clarion_contract.worker_config import (
    CAMEL_CASE_KEYS,
    JWT_ALGORITHMS,
    JWT_ALGORITHMS_HMAC,
    LIMIT_DEFAULTS,
    Audience,
    LimitsSettings,
    ResumeSettings,
    RoutingSettings,
    SaslMechanism,
    SecurityProtocol,
    WithoutUser,
    not_blank,
)

# ---- patterns (Go RE2 and Rust regex read them alike: ``$`` only at the very end) ------

TOPIC_NAME_PATTERN: Final = r"^[a-zA-Z0-9._-]+$"
HTTP_PATH_PATTERN: Final = r"^/[A-Za-z0-9._~/-]*$"
DNS_LABEL_PATTERN: Final = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
DNS_SUBDOMAIN_PATTERN: Final = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
HOST_PATTERN: Final = r"^(\*\.)?[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
SECRET_KEY_PATTERN: Final = r"^[-._a-zA-Z0-9]+$"
DURATION_PATTERN: Final = r"^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$"
COOKIE_NAME_PATTERN: Final = r"^[A-Za-z0-9_-]+$"
JWKS_URL_PATTERN: Final = r"^https?://"
#: The characters Python's ``str.isspace()`` accepts (the worker strips them and refuses
#: what is left empty), written literally so Go's RE2 (the API server) and Python's ``re``
#: read the class alike. A string matching :data:`NOT_BLANK_PATTERN` has one other character.
SPACE_CHARACTERS: Final = (
    "\t\n\x0b\x0c\r\x1c\x1d\x1e\x1f \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
)
NOT_BLANK_PATTERN: Final = f"[^{SPACE_CHARACTERS}]"
QUANTITY_PATTERN: Final = (
    r"^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?"
    r"(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$"
)

DEFAULT_IMAGE: Final = "ghcr.io/clarion/worker:0.1.0"
DEFAULT_PARTITIONS: Final = 6
DEFAULT_REPLICAS: Final = 2
DEFAULT_DRAIN_WINDOW_SECONDS: Final = 30
DEFAULT_WEBSOCKET_PATH: Final = "/ws/dashboard"
DEFAULT_SSE_PATH: Final = "/sse/dashboard"
DEFAULT_STICKY_COOKIE: Final = "clarion-affinity"
DEFAULT_STICKY_MAX_AGE: Final = 3600
DEFAULT_AFFINITY_TIMEOUT: Final = 3600
DEFAULT_INGRESS_CLASS: Final = "nginx"
#: Idle read/send timeout asked of the ingress for a WebSocket or SSE stream; heartbeats
#: (25 s by default) keep a healthy stream far below it.
DEFAULT_STREAM_TIMEOUT: Final = 3600
MIN_STREAM_TIMEOUT: Final = 60
MAX_HOSTNAMES: Final = 16
DEFAULT_MIN_REPLICAS: Final = 2
DEFAULT_MAX_REPLICAS: Final = 10
DEFAULT_TARGET_CPU: Final = 70
DEFAULT_SCRAPE_INTERVAL: Final = "30s"
#: Resources used when ``spec.workers.resources`` is absent.
DEFAULT_REQUESTS: Final[Mapping[str, str]] = MappingProxyType({"cpu": "250m", "memory": "256Mi"})
DEFAULT_LIMITS: Final[Mapping[str, str]] = MappingProxyType({"memory": "512Mi"})

DeletionPolicy = Literal["Retain", "Delete"]
AuthMode = Literal["jwt", "none"]
PullPolicy = Literal["Always", "IfNotPresent", "Never"]
ExposureType = Literal["none", "gateway", "ingress"]
IngressProfile = Literal["traefik", "haproxy", "nginx", "generic"]


# ---- markers the CRD generator reads ------------------------------------------------


@dataclass(frozen=True, slots=True)
class Cel:
    """A cross-field rule as CEL, with the message the API server answers."""

    rule: str
    message: str
    field_path: str | None = None


@dataclass(frozen=True, slots=True)
class Crd:
    """What only the CRD says about a field: list type and map keys, the description of
    list items or map values, string choices checked by a validator (``enum``), and a
    map of Kubernetes quantities."""

    list_type: str | None = None
    map_keys: tuple[str, ...] = ()
    items: str = ""
    enum: tuple[str, ...] = ()
    quantities: bool = False


# ---- value types ----------------------------------------------------------------------


def _snake(camel: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", camel).lower()


def _rules(problems: list[str]) -> None:
    if problems:
        raise ValueError("\n".join(problems))


def _unique(value: tuple[str, ...]) -> tuple[str, ...]:
    problems = [
        f"[{index}]: duplicate {item!r}"
        for index, item in enumerate(value)
        if item in value[:index]
    ]
    _rules(problems)
    return value


def _jwt_algorithm(value: str) -> str:
    if value not in JWT_ALGORITHMS:
        raise PydanticCustomError(
            "algorithm", "must be one of " + ", ".join(JWT_ALGORITHMS).replace("{", "(")
        )
    return value


class FrozenMap(Mapping[str, Any]):
    """A read-only mapping, sorted by key. Unlike ``MappingProxyType`` it can be copied,
    as pydantic copies the defaults of a model's fields."""

    __slots__ = ("_items",)

    def __init__(self, items: Mapping[str, Any]) -> None:
        self._items = dict(sorted(items.items()))

    def __getitem__(self, key: str) -> Any:
        return self._items[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __repr__(self) -> str:
        return f"FrozenMap({self._items!r})"

    def __deepcopy__(self, memo: object) -> FrozenMap:
        return self


def _frozen_map(value: Mapping[str, Any]) -> Mapping[str, Any]:
    return FrozenMap(value)


def _quantity(value: object) -> str:
    # The API server returns an integer quantity as written; kept as a string.
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str):
        raise PydanticCustomError("quantity_type", "must be a string or an integer")
    if re.search(QUANTITY_PATTERN.replace("$", r"\Z"), value) is None:
        raise PydanticCustomError(
            "quantity", "is not a Kubernetes quantity (got {value})", {"value": repr(value)}
        )
    return value


def _empty_map() -> Mapping[str, str]:
    return FrozenMap({})


Text = Annotated[StrictStr, AfterValidator(not_blank)]
SecretName = Annotated[StrictStr, StringConstraints(pattern=DNS_SUBDOMAIN_PATTERN, max_length=253)]
SecretKey = Annotated[StrictStr, StringConstraints(pattern=SECRET_KEY_PATTERN, max_length=253)]
HttpPath = Annotated[StrictStr, StringConstraints(pattern=HTTP_PATH_PATTERN, max_length=256)]
HostName = Annotated[StrictStr, StringConstraints(pattern=HOST_PATTERN, max_length=253)]
CookieName = Annotated[StrictStr, StringConstraints(pattern=COOKIE_NAME_PATTERN, max_length=64)]
StringMap = Annotated[Mapping[str, StrictStr], AfterValidator(_frozen_map)]
QuantityMap = Annotated[
    Mapping[str, Annotated[Any, AfterValidator(_quantity)]],
    AfterValidator(_frozen_map),
    Crd(quantities=True),
]


class _Spec(BaseModel):
    """A frozen section of the spec: camelCase keys, snake_case attributes. Unknown keys
    are dropped, as the API server prunes them (an object stored under an older schema)."""

    model_config = ConfigDict(frozen=True, extra="ignore", **CAMEL_CASE_KEYS)

    #: Cross-field rules as CEL, for the CRD (each has a validator below it too).
    CEL: ClassVar[tuple[Cel, ...]] = ()


# ---- spec.kafka -----------------------------------------------------------------------


class CredentialsSecret(_Spec):
    """Secret holding the SASL username and password. Mounted as files, never inlined."""

    CEL = (
        Cel(
            "!has(self.usernameKey) || !has(self.passwordKey) || "
            "self.usernameKey != self.passwordKey",
            "usernameKey and passwordKey must differ",
        ),
    )

    name: SecretName = Field(description="Name of a Secret in the channel's namespace.")
    username_key: SecretKey = Field("username", description="Key of the username in the Secret.")
    password_key: SecretKey = Field("password", description="Key of the password in the Secret.")

    @model_validator(mode="after")
    def _keys_differ(self) -> CredentialsSecret:
        if self.username_key == self.password_key:
            _rules([self.CEL[0].message])
        return self


class TlsSecret(_Spec):
    """Secret holding the CA bundle (and, for mutual TLS, a client certificate and key)."""

    CEL = (
        Cel("has(self.certKey) == has(self.keyKey)", "set certKey and keyKey together"),
        Cel(
            "!has(self.certKey) || !has(self.keyKey) || (self.certKey != self.keyKey"
            " && (!has(self.caKey) || (self.caKey != self.certKey"
            " && self.caKey != self.keyKey)))",
            "caKey, certKey and keyKey must differ",
        ),
    )

    name: SecretName = Field(description="Name of a Secret in the channel's namespace.")
    ca_key: SecretKey = Field("ca.crt", description="Key of the PEM CA bundle in the Secret.")
    cert_key: SecretKey | None = Field(
        None, description="Key of the PEM client certificate (mutual TLS only; set with keyKey)."
    )
    key_key: SecretKey | None = Field(
        None, description="Key of the PEM client private key (mutual TLS only; set with certKey)."
    )

    @model_validator(mode="after")
    def _keys(self) -> TlsSecret:
        problems = []
        if (self.cert_key is None) != (self.key_key is None):
            problems.append(self.CEL[0].message)
        keys = [k for k in (self.ca_key, self.cert_key, self.key_key) if k is not None]
        if len(set(keys)) != len(keys):
            problems.append(self.CEL[1].message)
        _rules(problems)
        return self


class KafkaSecuritySpec(_Spec):
    """How the workers and the operator authenticate to Kafka."""

    CEL = (
        Cel(
            "!(has(self.protocol) && self.protocol.startsWith('SASL')) || "
            "(has(self.saslMechanism) && has(self.credentialsSecret))",
            "SASL protocols need saslMechanism and credentialsSecret",
        ),
        Cel(
            "!has(self.tlsSecret) || (has(self.protocol) && self.protocol.endsWith('SSL'))",
            "tlsSecret needs protocol SSL or SASL_SSL",
        ),
    )

    protocol: SecurityProtocol = Field("PLAINTEXT", description="Kafka security.protocol.")
    sasl_mechanism: SaslMechanism | None = Field(
        None, description="SASL mechanism; required when protocol is SASL_PLAINTEXT or SASL_SSL."
    )
    credentials: CredentialsSecret | None = Field(None, alias="credentialsSecret")
    tls: TlsSecret | None = Field(None, alias="tlsSecret")

    @model_validator(mode="after")
    def _protocol_needs(self) -> KafkaSecuritySpec:
        problems = []
        if self.tls is not None and not self.protocol.endswith("SSL"):
            problems.append("tlsSecret: needs protocol SSL or SASL_SSL")
        if self.protocol.startswith("SASL"):
            if self.sasl_mechanism is None:
                problems.append(f"saslMechanism: is required with protocol {self.protocol}")
            if self.credentials is None:
                problems.append(f"credentialsSecret: is required with protocol {self.protocol}")
        _rules(problems)
        return self


class KafkaSpec(_Spec):
    """The Kafka cluster the channel's topics live in."""

    bootstrap_servers: Annotated[Text, StringConstraints(max_length=2048)] = Field(
        description="Comma-separated host:port list of Kafka brokers."
    )
    client_id: Annotated[Text, StringConstraints(max_length=255)] | None = Field(
        None,
        description="Kafka client.id of the workers (quotas and broker logs); defaults to "
        "clarion-<namespace>-<name>.",
    )
    security: KafkaSecuritySpec = KafkaSecuritySpec()


# ---- spec.topics ----------------------------------------------------------------------


class TopicSpec(_Spec):
    """One Kafka topic the channel owns and streams."""

    CEL = (
        Cel("self.name != '.' && self.name != '..'", "'.' and '..' are not topic names", ".name"),
        Cel(
            "!has(self.withoutUser) || (has(self.audience) && self.audience == 'user')",
            "withoutUser is only for topics of audience user",
            ".withoutUser",
        ),
    )

    name: Annotated[
        StrictStr, StringConstraints(pattern=TOPIC_NAME_PATTERN, min_length=1, max_length=249)
    ] = Field(
        description="Kafka topic name (cluster-wide: two channels claiming it conflict, the "
        "older wins)."
    )
    partitions: StrictInt = Field(
        DEFAULT_PARTITIONS,
        ge=1,
        le=10000,
        description="Partition count. Can only grow: a decrease is reported as NotSupported "
        "and the topic is left alone until the spec is reverted.",
    )
    #: None: the broker's default.replication.factor at creation, never compared after.
    replication_factor: StrictInt | None = Field(
        None,
        ge=1,
        le=32,
        description="Replication factor at creation. Unset uses the broker's "
        "default.replication.factor (as Strimzi does). Changes on an existing "
        "topic are reported (ReplicationFactorChangeNotApplied), never applied.",
    )
    config: Annotated[StringMap, Crd(items="Config value, as a string (Kafka stores strings).")] = (
        Field(
            default_factory=_empty_map,
            max_length=100,
            description="Topic config overrides (retention.ms, cleanup.policy, ...). The whole set "
            "is authoritative: overrides made outside this resource are reverted.",
        )
    )
    audience: Audience = Field(
        "organization",
        description="Who receives this topic's events: members of the event's organization, "
        "the event's user only, or every connected client.",
    )
    #: ``user`` topics: what an event naming no user becomes (None: the worker's default).
    without_user: WithoutUser | None = Field(
        None,
        description="Topics of audience user only: what an event that names no user becomes. "
        "organization (the workers' default): delivered to every member of the "
        "organization it names, counted in clarion_worker_userless_events_total; "
        "reject: skipped as a missing_user bad record.",
    )
    deletion_policy: DeletionPolicy = Field(
        "Retain", description="What happens to the Kafka topic when the channel is deleted."
    )

    @model_validator(mode="after")
    def _topic_rules(self) -> TopicSpec:
        problems = []
        if self.name in {".", ".."}:
            problems.append("name: '.' and '..' are not topic names")
        if self.without_user is not None and self.audience != "user":
            problems.append("withoutUser: only for topics of audience user")
        _rules(problems)
        return self


def _distinct_topics(value: tuple[TopicSpec, ...]) -> tuple[TopicSpec, ...]:
    seen: set[str] = set()
    problems = []
    for index, topic in enumerate(value):
        if topic.name in seen:
            problems.append(f"[{index}].name: duplicate topic {topic.name!r}")
        seen.add(topic.name)
    _rules(problems)
    return value


# ---- spec.server ----------------------------------------------------------------------


class SseSpec(_Spec):
    """Server-Sent Events endpoint, for clients that cannot use WebSocket."""

    enabled: StrictBool = Field(True, description="Serve SSE.")
    path: HttpPath = Field(
        DEFAULT_SSE_PATH, description="HTTP path of the SSE endpoint; starts with '/'."
    )


class ServerSpec(_Spec):
    """Client-facing endpoints of the workers."""

    CEL = (
        # The worker refuses equal paths even with SSE off, so the rule holds then too;
        # unset paths are the defaults.
        Cel(
            f"(has(self.websocketPath) ? self.websocketPath : '{DEFAULT_WEBSOCKET_PATH}') != "
            f"(has(self.sse) && has(self.sse.path) ? self.sse.path : '{DEFAULT_SSE_PATH}')",
            "websocketPath and sse.path must differ (even with SSE disabled)",
        ),
    )

    websocket_path: HttpPath = Field(
        DEFAULT_WEBSOCKET_PATH, description="HTTP path of the WebSocket endpoint; starts with '/'."
    )
    sse: SseSpec = SseSpec()
    session_affinity_timeout_seconds: StrictInt = Field(
        DEFAULT_AFFINITY_TIMEOUT,
        ge=1,
        le=86400,
        description="ClientIP affinity timeout of the Service when the ingress is disabled "
        "(keeps a reconnecting client on the replica holding its recent events).",
    )

    @model_validator(mode="after")
    def _paths_differ(self) -> ServerSpec:
        if self.sse.path == self.websocket_path:
            _rules(["sse.path: must differ from websocketPath (even with SSE disabled)"])
        return self

    @property
    def sse_enabled(self) -> bool:
        return self.sse.enabled

    @property
    def sse_path(self) -> str:
        return self.sse.path


# ---- spec.auth ------------------------------------------------------------------------


class SecretKeyRef(_Spec):
    """One key of a Secret in the channel's namespace."""

    name: SecretName = Field(description="Name of a Secret in the channel's namespace.")
    key: SecretKey = Field(description="Key in the Secret.")


class HmacSecretRef(SecretKeyRef):
    """Secret holding the shared HMAC key (HS* algorithms)."""

    key: SecretKey = Field(description="Key of the HMAC key in the Secret.")


class JwksSecretRef(SecretKeyRef):
    """Secret holding the JWKS document (mounted as a file)."""

    key: SecretKey = Field(description="Key of the JWKS JSON document in the Secret.")


class JwksSpec(_Spec):
    """JSON Web Key Set for asymmetric algorithms: a URL or a Secret, exactly one."""

    CEL = (Cel("has(self.url) != has(self.secret)", "set exactly one of url and secret"),)

    url: (
        Annotated[StrictStr, StringConstraints(pattern=JWKS_URL_PATTERN, max_length=2048)] | None
    ) = Field(None, description="HTTPS URL of the JWKS document.")
    secret: JwksSecretRef | None = None

    @model_validator(mode="after")
    def _one_source(self) -> JwksSpec:
        if (self.url is None) == (self.secret is None):
            _rules([self.CEL[0].message])
        return self


def _cel_list(items: tuple[str, ...]) -> str:
    return "[" + ", ".join(f"'{item}'" for item in items) + "]"


class AuthSpec(_Spec):
    """Client authentication. mode is required: 'none' (no authentication, every client
    sees broadcast events only) must be chosen explicitly."""

    CEL = (
        Cel(
            "self.mode != 'jwt' || (has(self.hmacSecret) != has(self.jwks))",
            "mode jwt needs exactly one of hmacSecret and jwks",
        ),
        Cel(
            "self.mode != 'jwt' || !has(self.algorithms) || (has(self.hmacSecret) ? "
            f"self.algorithms.all(a, a in {_cel_list(JWT_ALGORITHMS_HMAC)}) : "
            f"self.algorithms.all(a, !(a in {_cel_list(JWT_ALGORITHMS_HMAC)})))",
            "algorithms: HS256, HS384 and HS512 need hmacSecret, the others need jwks",
            ".algorithms",
        ),
    )

    mode: AuthMode = Field(description="jwt: clients present a JWT; none: no authentication.")
    issuer: Annotated[Text, StringConstraints(max_length=2048)] | None = Field(
        None, description="Expected iss claim."
    )
    audience: Annotated[Text, StringConstraints(max_length=2048)] | None = Field(
        None, description="Expected aud claim."
    )
    algorithms: Annotated[
        tuple[Annotated[StrictStr, AfterValidator(_jwt_algorithm)], ...],
        AfterValidator(_unique),
        Crd(list_type="set", items="A JWS algorithm.", enum=JWT_ALGORITHMS),
    ] = Field(
        (),
        max_length=16,
        description="Accepted signing algorithms: HS* with hmacSecret, the others with jwks.",
    )
    hmac_secret: HmacSecretRef | None = None
    jwks: JwksSpec | None = None
    organizations_claim: Annotated[Text, StringConstraints(max_length=253)] | None = Field(
        None, description="Claim listing the organizations the user belongs to."
    )
    user_claim: Annotated[Text, StringConstraints(max_length=253)] | None = Field(
        None, description="Claim holding the user id."
    )
    allowed_origins: Annotated[
        tuple[Annotated[StrictStr, StringConstraints(min_length=1, max_length=2048)], ...],
        AfterValidator(_unique),
        Crd(list_type="set", items="An origin such as https://app.example.com."),
    ] = Field(
        (),
        max_length=64,
        description="Origins allowed to open a WebSocket (browser CSWSH protection).",
    )
    leeway_seconds: StrictInt | None = Field(
        None, ge=0, le=600, description="Clock skew tolerated on exp/nbf."
    )

    @model_validator(mode="after")
    def _key_sources(self) -> AuthSpec:
        if self.mode != "jwt":
            return self
        hmac, jwks = self.hmac_secret is not None, self.jwks is not None
        if hmac == jwks:
            _rules([self.CEL[0].message])
        # The worker verifies HS* with the shared secret only, the others with the JWKS.
        wrong = [a for a in self.algorithms if (a in JWT_ALGORITHMS_HMAC) != hmac]
        if wrong:
            _rules([f"algorithms: {', '.join(wrong)} need {'jwks' if hmac else 'hmacSecret'}"])
        return self

    @property
    def jwks_url(self) -> str | None:
        return None if self.jwks is None else self.jwks.url

    @property
    def jwks_secret(self) -> SecretKeyRef | None:
        return None if self.jwks is None else self.jwks.secret


# ---- spec.workers ---------------------------------------------------------------------


class AutoscalingSpec(_Spec):
    """Horizontal autoscaling; its presence turns it on and the HorizontalPodAutoscaler
    then owns the replica count."""

    CEL = (
        Cel(
            "!has(self.minReplicas) || !has(self.maxReplicas) || "
            "self.minReplicas <= self.maxReplicas",
            "minReplicas must not exceed maxReplicas",
        ),
    )

    min_replicas: StrictInt = Field(
        DEFAULT_MIN_REPLICAS,
        ge=1,
        le=1000,
        description="Lower bound. A new Deployment starts at 1 replica (the "
        "HorizontalPodAutoscaler owns the count and raises it on its next sync); "
        "WorkersReady and Ready stay False until this many workers are ready.",
    )
    max_replicas: StrictInt = Field(DEFAULT_MAX_REPLICAS, ge=1, le=1000, description="Upper bound.")
    target_cpu_utilization_percentage: StrictInt = Field(
        DEFAULT_TARGET_CPU,
        ge=1,
        le=100,
        alias="targetCPUUtilizationPercentage",
        description="Average CPU utilization target, percent of the CPU request.",
    )
    target_connections_per_pod: StrictInt | None = Field(
        None,
        ge=1,
        le=1000000,
        description="Average open connections per pod (needs a custom metrics adapter "
        "serving the worker's connection gauge).",
    )

    @model_validator(mode="after")
    def _bounds_in_order(self) -> AutoscalingSpec:
        if self.min_replicas > self.max_replicas:
            _rules([self.CEL[0].message])
        return self


class ResourcesSpec(_Spec):
    """Compute resources of the worker container. Defaults: requests cpu 250m, memory
    256Mi; limits memory 512Mi. CPU autoscaling needs a CPU request."""

    # Given resources are taken as written, not merged with the defaults: a user who
    # removes the memory limit on purpose must be able to.
    requests: QuantityMap = Field(
        default_factory=_empty_map, description="Minimum resources (cpu, memory)."
    )
    limits: QuantityMap = Field(
        default_factory=_empty_map, description="Maximum resources (cpu, memory)."
    )


def _default_resources() -> ResourcesSpec:
    return ResourcesSpec(requests=dict(DEFAULT_REQUESTS), limits=dict(DEFAULT_LIMITS))


def _view(model: type[BaseModel], name: str) -> Any:
    """An optional integer key of the spec that sets the worker setting ``name`` of
    ``model``: its lower bound and meaning are the worker's; unset is its default."""
    info = model.model_fields[name]
    ge = next((m.ge for m in info.metadata if getattr(m, "ge", None) is not None), None)
    return Field(None, ge=None if ge is None else int(ge), description=info.description)


def _not_above(small: str, large: str) -> Cel:
    a, b = LIMIT_DEFAULTS[small], LIMIT_DEFAULTS[large]
    return Cel(
        f"(has(self.{small}) ? self.{small} : {a}) <= (has(self.{large}) ? self.{large} : {b})",
        f"{small} must not exceed {large} (unset: the worker defaults, {small} {a}, {large} {b})",
        f".{small}",
    )


class LimitsSpec(_Spec):
    """Per-worker limits; unset keys use the worker's defaults (docs/worker-config.md)."""

    # The worker refuses these pairs (unset keys are its defaults): every replica of such
    # a channel would exit at start.
    CEL = tuple(_not_above(small, large) for small, large in LimitsSettings.ORDER)

    max_connections: StrictInt | None = _view(LimitsSettings, "max_connections")
    queue_max_events: StrictInt | None = _view(LimitsSettings, "queue_max_events")
    queue_max_bytes: StrictInt | None = _view(LimitsSettings, "queue_max_bytes")
    max_client_frame_bytes: StrictInt | None = _view(LimitsSettings, "max_client_frame_bytes")
    max_record_bytes: StrictInt | None = _view(LimitsSettings, "max_record_bytes")
    batch_max_events: StrictInt | None = _view(LimitsSettings, "batch_max_events")
    batch_max_bytes: StrictInt | None = _view(LimitsSettings, "batch_max_bytes")

    @model_validator(mode="after")
    def _worker_order(self) -> LimitsSpec:
        problems = []
        for small, large in LimitsSettings.ORDER:
            a = self._value(small)
            b = self._value(large)
            if a > b:
                problems.append(
                    f"{small}: must not exceed {large} ({a} > {b}; unset keys are the worker "
                    f"defaults, {small} {LIMIT_DEFAULTS[small]}, "
                    f"{large} {LIMIT_DEFAULTS[large]})"
                )
        _rules(problems)
        return self

    def _value(self, key: str) -> int:
        """The limit as the worker will see it: the spec's, else the worker default."""
        value: int | None = getattr(self, _snake(key))
        return LIMIT_DEFAULTS[key] if value is None else value

    def document(self) -> dict[str, int]:
        """The keys set, as the worker document's ``limits``."""
        return self.model_dump(exclude_none=True)


class ResumeSpec(_Spec):
    """Resume of a reconnecting client from its per-partition offsets."""

    window_events: StrictInt | None = _view(ResumeSettings, "window_events")
    max_replay_events: StrictInt | None = _view(ResumeSettings, "max_replay_events")
    #: Whole seconds here; the worker's setting is a number.
    max_replay_age_seconds: StrictInt | None = _view(ResumeSettings, "max_replay_age_seconds")


class WorkersSpec(_Spec):
    """The broadcast worker Deployment."""

    CEL = (
        Cel(
            "!has(self.autoscaling) || !has(oldSelf.autoscaling) || "
            "!has(self.replicas) || !has(oldSelf.replicas) || "
            "self.replicas == oldSelf.replicas",
            "replicas cannot change while autoscaling is set: the "
            "HorizontalPodAutoscaler owns the count; change autoscaling instead",
            ".replicas",
        ),
        # Given resources are taken as written (the defaults hold a CPU request).
        Cel(
            "!has(self.autoscaling) || !has(self.resources) || "
            "(has(self.resources.requests) && 'cpu' in self.resources.requests) || "
            "(has(self.resources.limits) && 'cpu' in self.resources.limits)",
            "resources.requests.cpu is required with autoscaling (CPU utilization is a "
            "percentage of the request)",
            ".resources",
        ),
    )

    image: Annotated[StrictStr, StringConstraints(min_length=1, max_length=1024)] = Field(
        DEFAULT_IMAGE, description="Worker container image."
    )
    image_pull_policy: PullPolicy = Field("IfNotPresent", description="Image pull policy.")
    replicas: StrictInt = Field(
        DEFAULT_REPLICAS,
        ge=0,
        le=1000,
        description="Worker replicas when autoscaling is not set (the scale subresource "
        "writes here). Frozen while autoscaling is set.",
    )
    autoscaling: AutoscalingSpec | None = None
    resources: ResourcesSpec = Field(default_factory=_default_resources)
    limits: LimitsSpec = LimitsSpec()
    drain_window_seconds: StrictInt = Field(
        DEFAULT_DRAIN_WINDOW_SECONDS,
        ge=0,
        le=3600,
        description="On shutdown, connections are closed in batches over this window so "
        "clients reconnect spread out; the pod's grace period is derived from it.",
    )
    heartbeat_seconds: StrictInt | None = Field(
        None,
        ge=1,
        le=600,
        description="Application-level ping interval (mobile clients cannot see protocol "
        "pings); keep it far below the ingress timeouts.",
    )
    heartbeat_timeout_seconds: StrictInt | None = Field(
        None, ge=1, le=600, description="Time allowed for a pong before the connection is closed."
    )
    resume: ResumeSpec = ResumeSpec()

    @model_validator(mode="after")
    def _cpu_for_autoscaling(self) -> WorkersSpec:
        res = self.resources
        if self.autoscaling is not None and "cpu" not in res.requests and "cpu" not in res.limits:
            _rules(
                [
                    "resources.requests.cpu: is required with autoscaling (CPU utilization "
                    "is a percentage of the request)"
                ]
            )
        return self


# ---- spec.ingress (deprecated) and spec.exposure --------------------------------------


class StickyCookie(_Spec):
    """Affinity cookie keeping a client on the replica holding its recent events."""

    name: CookieName = Field(DEFAULT_STICKY_COOKIE, description="Cookie name.")
    max_age_seconds: StrictInt = Field(
        DEFAULT_STICKY_MAX_AGE, ge=1, le=31536000, description="Cookie lifetime."
    )


_ANNOTATIONS: Final = Crd(items="Annotation value.")


class IngressSpec(_Spec):
    """Deprecated: use exposure. An ingress-nginx Ingress in front of the workers (read
    as exposure type ingress, profile nginx), with cookie stickiness and timeouts suited
    to long-lived connections."""

    CEL = (Cel("!has(self.tlsSecretName) || has(self.host)", "tlsSecretName needs host"),)

    enabled: StrictBool = Field(False, description="Create the Ingress.")
    class_name: Annotated[StrictStr, StringConstraints(min_length=1, max_length=253)] = Field(
        DEFAULT_INGRESS_CLASS, description="IngressClass name."
    )
    host: HostName | None = Field(
        None, description="Public host name; required with tlsSecretName."
    )
    tls_secret_name: SecretName | None = Field(
        None, description="Secret holding the TLS certificate for host; enables TLS (wss://)."
    )
    sticky_cookie: StickyCookie = StickyCookie()
    annotations: Annotated[StringMap, _ANNOTATIONS] = Field(
        default_factory=_empty_map,
        max_length=64,
        description="Extra Ingress annotations; they override the operator's.",
    )

    @model_validator(mode="after")
    def _tls_needs_host(self) -> IngressSpec:
        if self.tls_secret_name is not None and self.host is None:
            _rules(["host: is required with tlsSecretName"])
        return self

    @property
    def sticky_cookie_name(self) -> str:
        return self.sticky_cookie.name

    @property
    def sticky_cookie_max_age_seconds(self) -> int:
        return self.sticky_cookie.max_age_seconds


class GatewayParent(_Spec):
    """The Gateway the HTTPRoute attaches to (type gateway)."""

    name: SecretName = Field(description="Gateway name.")
    namespace: (
        Annotated[StrictStr, StringConstraints(pattern=DNS_LABEL_PATTERN, max_length=63)] | None
    ) = Field(None, description="Gateway namespace; the channel's when empty.")
    section_name: SecretName | None = Field(
        None, description="Listener of the Gateway to attach to; all of them when empty."
    )
    #: The Gateway's listener terminates TLS: ``status.endpoint`` says ``wss://``.
    tls: StrictBool = Field(
        False, description="The listener terminates TLS (status.endpoint then says wss://)."
    )


class ExposureIngress(_Spec):
    """The Ingress (type ingress) and the controller that serves its class."""

    class_name: Annotated[StrictStr, StringConstraints(min_length=1, max_length=253)] = Field(
        description="IngressClass name."
    )
    profile: IngressProfile = Field(
        description="Controller serving className, whose own annotations the operator "
        "writes for cookie stickiness, stream timeouts and unbuffered "
        "responses: traefik, haproxy (HAProxy Kubernetes Ingress), nginx "
        "(ingress-nginx, retired in March 2026: existing clusters only) or "
        "generic (only the annotations given here)."
    )
    tls_secret_name: SecretName | None = Field(
        None, description="Secret holding the TLS certificate for hostnames (wss://)."
    )
    annotations: Annotated[StringMap, _ANNOTATIONS] = Field(
        default_factory=_empty_map,
        max_length=64,
        description="Extra Ingress annotations; they override the operator's.",
    )


class ExposureSection(_Spec):
    """How clients reach the workers: a Gateway API HTTPRoute, an Ingress for a named
    class and controller, or neither. Replaces the deprecated spec.ingress (do not set
    both)."""

    CEL = (
        Cel("self.type != 'gateway' || has(self.gateway)", "type gateway needs gateway"),
        Cel("self.type != 'ingress' || has(self.ingress)", "type ingress needs ingress"),
        Cel(
            "!has(self.ingress) || !has(self.ingress.tlsSecretName) || "
            "(has(self.hostnames) && size(self.hostnames) > 0)",
            "ingress.tlsSecretName needs hostnames",
        ),
    )

    type: ExposureType = Field(
        description="gateway renders an HTTPRoute, ingress an Ingress, none neither."
    )
    hostnames: Annotated[
        tuple[HostName, ...],
        AfterValidator(_unique),
        Crd(list_type="set", items="A DNS name, optionally with a leading '*.'."),
    ] = Field(
        (),
        max_length=MAX_HOSTNAMES,
        description="Public host names (HTTPRoute hostnames, one Ingress rule each); the "
        "first without a wildcard is status.endpoint's host.",
    )
    sticky_cookie: StickyCookie = Field(
        StickyCookie(),
        description="Affinity cookie keeping a client on the replica holding its recent "
        "events (an optimisation: resume works on any replica).",
    )
    stream_timeout_seconds: StrictInt = Field(
        DEFAULT_STREAM_TIMEOUT,
        ge=MIN_STREAM_TIMEOUT,
        le=86400,
        description="Idle timeout asked of the ingress controller for WebSocket and SSE "
        "streams (where the profile can say it); keep it far above the heartbeat interval.",
    )
    gateway: GatewayParent | None = None
    ingress: ExposureIngress | None = None

    @model_validator(mode="after")
    def _type_needs(self) -> ExposureSection:
        problems = []
        if self.type == "gateway" and self.gateway is None:
            problems.append("gateway: is required with type gateway")
        if self.type == "ingress" and self.ingress is None:
            problems.append("ingress: is required with type ingress")
        if self.ingress is not None and self.ingress.tls_secret_name and not self.hostnames:
            problems.append("hostnames: are required with ingress.tlsSecretName")
        _rules(problems)
        return self


# ---- spec.monitoring ------------------------------------------------------------------


class ServiceMonitorSpec(_Spec):
    """A prometheus-operator ServiceMonitor (created only when its CRD exists)."""

    enabled: StrictBool = Field(False, description="Create the ServiceMonitor.")
    labels: Annotated[StringMap, Crd(items="Label value.")] = Field(
        default_factory=_empty_map,
        max_length=64,
        description="Extra labels, for a Prometheus serviceMonitorSelector.",
    )


class MonitoringSpec(_Spec):
    """Prometheus scraping. Without a ServiceMonitor the pods carry prometheus.io
    annotations instead."""

    service_monitor: ServiceMonitorSpec = ServiceMonitorSpec()
    interval: Annotated[StrictStr, StringConstraints(pattern=DURATION_PATTERN)] = Field(
        DEFAULT_SCRAPE_INTERVAL, description="Scrape interval."
    )

    @property
    def service_monitor_enabled(self) -> bool:
        return self.service_monitor.enabled

    @property
    def service_monitor_labels(self) -> Mapping[str, str]:
        return self.service_monitor.labels


# ---- the whole spec -------------------------------------------------------------------


def _known_routing_keys(value: object) -> object:
    """As the API server does, unknown keys of an object stored under an older schema
    are dropped before the worker's own (strict) routing model reads it."""
    if isinstance(value, Mapping):
        known = {info.alias or name for name, info in RoutingSettings.model_fields.items()}
        return {k: v for k, v in value.items() if k in known}
    return value


class RealtimeChannelSpec(_Spec):
    """Desired state: topics to own in Kafka and workers that stream them to clients."""

    CEL = (
        Cel(
            "!has(self.exposure) || !has(self.ingress) || !has(self.ingress.enabled) "
            "|| !self.ingress.enabled",
            "set spec.exposure or the deprecated spec.ingress, not both",
        ),
    )

    kafka: KafkaSpec
    topics: Annotated[
        tuple[TopicSpec, ...],
        AfterValidator(_distinct_topics),
        Crd(list_type="map", map_keys=("name",)),
    ] = Field(
        min_length=1,
        max_length=64,
        description="Kafka topics the channel streams; at least one, names unique.",
    )
    routing: Annotated[RoutingSettings, BeforeValidator(_known_routing_keys)] = RoutingSettings()
    server: ServerSpec = ServerSpec()
    auth: AuthSpec
    workers: WorkersSpec = WorkersSpec()
    ingress: IngressSpec = IngressSpec()
    exposure: ExposureSection | None = None
    monitoring: MonitoringSpec = MonitoringSpec()

    @model_validator(mode="after")
    def _one_exposure(self) -> RealtimeChannelSpec:
        if self.exposure is not None and self.ingress.enabled:
            _rules(
                [
                    "exposure: and spec.ingress.enabled cannot both be set: move spec.ingress "
                    "into exposure"
                ]
            )
        return self
