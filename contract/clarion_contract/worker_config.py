"""The worker settings document: what the operator writes and the worker reads.

One typed model (pydantic) describes the document: :class:`WorkerConfig` and its
sections, with each key's type, default, bounds, description and cross-field rules.
Everything else comes from it: the worker's loading of the document and of its
``CLARION_*`` environment overrides (:func:`load_worker_settings`), the operator's check
of the document it is about to write (:func:`validate_document`, the same model), and
the key table of docs/worker-config.md (:func:`key_reference`).

Keys are camelCase, as in the ``RealtimeChannel`` spec they come from; attributes are
their snake_case names. Secrets never appear in the document: it names files (mounted
Secrets) that hold them.

Environment overrides: ``CLARION_`` + the key path in upper snake case, sections
separated by a double underscore, e.g. ``CLARION_KAFKA__BOOTSTRAP_SERVERS`` or
``CLARION_LIMITS__MAX_CONNECTIONS``. Lists (``auth.algorithms``, ``auth.allowedOrigins``)
are comma-separated; booleans accept true/false/1/0/yes/no/on/off. ``CLARION_REPLICA_ID``
sets the replica id (default: the hostname the edge passes in). ``topics`` has no
override. Any other ``CLARION_*`` variable is an error (typo protection) unless the edge
lists it. pydantic-settings was not used: the loader must take the environment as a
mapping (the core never reads ``os.environ``), refuse unknown ``CLARION_*`` names and
split lists on commas, which would all be overrides of its defaults.

Validation collects the problems, each with its key path, into one
:class:`SettingsError`. Cross-field rules run once the keys they compare are valid.
"""

from __future__ import annotations

import re
import types
import typing
from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Annotated, Any, ClassVar, Final, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    StringConstraints,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_camel
from pydantic_core import PydanticCustomError

from clarion_contract.zones import TIMESTAMP_ZONE_PATTERN, resolve_zone

CONFIG_API_VERSION: Final = "clarion.dev/worker-config/v1"
#: File name of the document inside the ConfigMap and the mounted volume.
CONFIG_FILENAME: Final = "worker.json"
#: The port every worker listens on for WebSocket, SSE, probes and metrics.
WORKER_PORT: Final = 8080
HEALTH_PATH: Final = "/healthz"
READY_PATH: Final = "/readyz"
METRICS_PATH: Final = "/metrics"
ENV_PREFIX: Final = "CLARION_"
REPLICA_ID_ENV: Final = "CLARION_REPLICA_ID"

KiB: Final = 1024
MiB: Final = 1024 * 1024

#: JWS algorithms a worker can verify: HMAC ones need a shared secret, the others a JWKS.
JWT_ALGORITHMS_HMAC: Final = ("HS256", "HS384", "HS512")
JWT_ALGORITHMS_ASYMMETRIC: Final = (
    "RS256",
    "RS384",
    "RS512",
    "PS256",
    "PS384",
    "PS512",
    "ES256",
    "ES384",
    "ES512",
    "EdDSA",
)
JWT_ALGORITHMS: Final = JWT_ALGORITHMS_HMAC + JWT_ALGORITHMS_ASYMMETRIC
SECURITY_PROTOCOLS: Final = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
SASL_MECHANISMS: Final = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
#: Smallest ``limits.maxClientFrameBytes`` the worker accepts.
MIN_CLIENT_FRAME_BYTES: Final = 16

Audience = Literal["organization", "user", "broadcast"]
AUDIENCES: Final[tuple[Audience, ...]] = ("organization", "user", "broadcast")
#: What a ``user`` topic does with an event that names no user: deliver it to the
#: members of the organization it names (counted apart), or skip it as a bad record.
WithoutUser = Literal["organization", "reject"]
WITHOUT_USER_RULES: Final[tuple[WithoutUser, ...]] = ("organization", "reject")
SecurityProtocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
SaslMechanism = Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]
AuthMode = Literal["jwt", "none"]


# ---- value types ---------------------------------------------------------------------


def _snake(camel: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", camel).lower()


def not_blank(value: str) -> str:
    """More than whitespace (``str.isspace``); the CRD's generated schema says the same
    with a pattern."""
    if not value.strip():
        raise PydanticCustomError("not_blank", "must not be empty")
    return value


def _http_path(value: str) -> str:
    if not value.startswith("/"):
        raise PydanticCustomError("http_path", "must start with /")
    return value


_TOPIC_NAME: Final = re.compile(r"[A-Za-z0-9._-]{1,249}")


def _topic_name(value: str) -> str:
    if not _TOPIC_NAME.fullmatch(value):
        raise PydanticCustomError(
            "topic_name", "must be a Kafka topic name ([A-Za-z0-9._-], 1-249)"
        )
    return value


def _zone(value: str) -> str:
    try:
        resolve_zone(value)
    except ValueError as error:
        message = str(error).replace("{", "(").replace("}", ")")
        raise PydanticCustomError("time_zone", message) from None
    return value


def _http_url(value: str) -> str:
    if not value.startswith(("https://", "http://")):
        raise PydanticCustomError("http_url", "must be an http(s) URL")
    return value


def _algorithms(value: tuple[str, ...]) -> tuple[str, ...]:
    wrong = [item for item in value if item not in JWT_ALGORITHMS]
    if wrong:
        raise PydanticCustomError(
            "algorithm",
            "unsupported "
            + ", ".join(wrong).replace("{", "(").replace("}", ")")
            + "; allowed: "
            + ", ".join(JWT_ALGORITHMS),
        )
    if not value:
        raise PydanticCustomError("empty", "must not be empty")
    return value


#: A non-blank string.
Text = Annotated[StrictStr, AfterValidator(not_blank)]
#: A JSON field or record header name (the CRD's bound on such names).
FieldName = Annotated[StrictStr, StringConstraints(max_length=253), AfterValidator(not_blank)]
HttpPath = Annotated[StrictStr, AfterValidator(_http_path)]
Seconds = Annotated[StrictFloat, Field(allow_inf_nan=False)]


def _rules(problems: list[str]) -> None:
    """Raise the cross-field ``problems`` of a section, each ``key: message`` (or just a
    message about the whole section); :func:`_problems` puts the section's path in front."""
    if problems:
        raise ValueError("\n".join(problems))


#: How both documents name their keys (this one, and the RealtimeChannel spec, which
#: embeds its routing section): camelCase in the document, snake_case on the model, either
#: read, camelCase written.
CAMEL_CASE_KEYS: Final = ConfigDict(
    alias_generator=to_camel,
    validate_by_name=True,
    validate_by_alias=True,
    serialize_by_alias=True,
)


class _Section(BaseModel):
    """A frozen part of the document: camelCase keys, snake_case attributes, no extras."""

    model_config = ConfigDict(frozen=True, extra="forbid", **CAMEL_CASE_KEYS)


# ---- the document --------------------------------------------------------------------


class KafkaSecurity(_Section):
    protocol: SecurityProtocol = Field("PLAINTEXT", description="Kafka security protocol.")
    sasl_mechanism: SaslMechanism | None = Field(
        None, description="SASL mechanism; required with SASL_* protocols."
    )
    username_file: Text | None = Field(None, description="File holding the SASL username.")
    password_file: Text | None = Field(None, description="File holding the SASL password.")
    ca_file: Text | None = Field(None, description="CA bundle for TLS to Kafka.")
    cert_file: Text | None = Field(None, description="Client certificate for mutual TLS.")
    key_file: Text | None = Field(None, description="Client key for mutual TLS.")

    @model_validator(mode="after")
    def _sasl_needs_credentials(self) -> KafkaSecurity:
        problems = []
        if self.protocol.startswith("SASL_"):
            for key in ("saslMechanism", "usernameFile", "passwordFile"):
                if getattr(self, _snake(key)) is None:
                    problems.append(f"{key}: required with protocol {self.protocol}")
        _rules(problems)
        return self


class KafkaSettings(_Section):
    bootstrap_servers: Text = Field(description="Comma-separated host:port list.")
    client_id: Text = Field(
        "",
        description="Kafka client id (default: clarion-<channel>).",
        json_schema_extra={"defaultText": "unset"},
    )
    metadata_refresh_seconds: Seconds = Field(
        30.0,
        ge=0.1,
        description="How often partition counts are re-read, so added partitions are picked up.",
    )
    security: KafkaSecurity = KafkaSecurity()


class TopicSettings(_Section):
    name: Annotated[StrictStr, AfterValidator(_topic_name)] = Field(description="Kafka topic name.")
    audience: Audience = Field(description="Who receives its events: " + ", ".join(AUDIENCES) + ".")
    #: ``user`` topics: what happens to an event that names no user.
    without_user: WithoutUser = Field(
        "organization",
        description="User topics only: an event naming no user goes to the members of its "
        "organization (organization), or is skipped as a bad record (reject).",
    )

    @model_validator(mode="after")
    def _without_user_for_user_topics(self) -> TopicSettings:
        if "without_user" in self.model_fields_set and self.audience != "user":
            _rules(["withoutUser: only for topics of audience user"])
        return self


class RoutingSettings(_Section):
    """Where each record's routing facts are found. Headers and key are read without
    parsing the JSON payload and win over fields when both are set.

    The channel's ``spec.routing`` is this model: the CRD's schema and CEL rule are
    generated from it and the operator validates the spec's routing with it."""

    #: The keys whose default the CRD states (the API server then stores it); an unset
    #: other key stays unset, the worker's default.
    CRD_DEFAULTS: ClassVar[frozenset[str]] = frozenset({"organizationFromKey"})
    #: The cross-field rule below as CEL, for the CRD.
    CEL: ClassVar[tuple[tuple[str, str], ...]] = (
        (
            "!(has(self.organizationFromKey) && self.organizationFromKey && "
            "has(self.organizationHeader))",
            "set either organizationFromKey or organizationHeader, not both",
        ),
    )

    type_field: FieldName = Field("type", description="JSON field holding the event type.")
    organization_field: FieldName = Field(
        "organizationId", description="JSON field holding the organization id."
    )
    user_field: FieldName = Field("userId", description="JSON field holding the user id.")
    data_field: FieldName = Field(
        "data", description="JSON field holding the payload sent to clients."
    )
    timestamp_field: FieldName = Field(
        "timestamp", description="JSON field holding the event time."
    )
    #: Zone of zoneless producer timestamps (``resolve_zone`` accepts it).
    timestamp_zone: Annotated[
        StrictStr,
        StringConstraints(max_length=64),
        AfterValidator(_zone),
    ] = Field(
        "UTC",
        # The CRD's pattern; here resolve_zone says what is wrong in plainer words.
        json_schema_extra={"pattern": TIMESTAMP_ZONE_PATTERN},
        description="Zone of producer timestamps written without an offset (Java's "
        "LocalDateTime): UTC (the workers' default), a fixed offset such as +01:00, or an "
        "IANA name such as Africa/Abidjan.",
    )
    type_header: FieldName | None = Field(None, description="Record header holding the event type.")
    organization_header: FieldName | None = Field(
        None, description="Record header holding the organization id."
    )
    user_header: FieldName | None = Field(None, description="Record header holding the user id.")
    organization_from_key: StrictBool = Field(
        False,
        description="Use the record key as the organization id (excludes organizationHeader).",
    )

    @model_validator(mode="after")
    def _one_organization_source(self) -> RoutingSettings:
        if self.organization_from_key and self.organization_header is not None:
            _rules([f"organizationFromKey: {self.CEL[0][1]}"])
        return self


class ServerSettings(_Section):
    websocket_path: HttpPath = Field(
        "/ws/dashboard", description="HTTP path of the WebSocket endpoint."
    )
    sse_path: HttpPath = Field("/sse/dashboard", description="HTTP path of the SSE endpoint.")
    sse_enabled: StrictBool = Field(True, description="Serve the SSE endpoint.")
    direct_writes: StrictBool = Field(
        True,
        description="Write pre-built WebSocket frames straight to each socket, one write per "
        "client per fan-out pass (false: one ASGI send per frame, several times slower).",
    )
    handshake_timeout_seconds: Seconds = Field(
        10.0,
        ge=0.1,
        description="Time a new connection gets to send its whole request head; then 408 "
        "and closed (slow-loris).",
    )

    @model_validator(mode="after")
    def _distinct_paths(self) -> ServerSettings:
        if self.websocket_path == self.sse_path:
            _rules(["ssePath: must differ from server.websocketPath"])
        return self


class AuthSettings(_Section):
    mode: AuthMode = Field(description="jwt, or none (development only: no verification).")
    algorithms: Annotated[tuple[StrictStr, ...], AfterValidator(_algorithms)] = Field(
        (),
        description="Accepted JWT algorithms (default: HS256 with hmacSecretFile; RS256, "
        "ES256 with JWKS).",
        json_schema_extra={"defaultText": "unset"},
    )
    issuer: Text | None = Field(None, description="Required iss claim (unset: not checked).")
    audience: Text | None = Field(None, description="Required aud claim (unset: not checked).")
    hmac_secret_file: Text | None = Field(None, description="File holding the HMAC secret.")
    jwks_url: Annotated[StrictStr, AfterValidator(_http_url)] | None = Field(
        None, description="URL of a JWKS document (fetched and cached)."
    )
    jwks_file: Text | None = Field(None, description="File holding a JWKS document.")
    organizations_claim: Text = Field("organizations", description="Claim: organization id(s).")
    user_claim: Text = Field("sub", description="Claim holding the user id.")
    allowed_origins: tuple[StrictStr, ...] = Field(
        (), description="Allowed Origin values (exact, or *.example.com); empty: any origin."
    )
    leeway_seconds: StrictInt = Field(30, ge=0, description="Clock skew allowed for exp/nbf.")
    required_claims: tuple[StrictStr, ...] = Field(
        (),
        description="Claims every token must carry, non-empty (e.g. sub, organizations: the "
        "claim names); empty: at least one of the user and organizations claims.",
    )

    @model_validator(mode="after")
    def _keys_match_algorithms(self) -> AuthSettings:
        if self.mode != "jwt":
            return self
        has_hmac = self.hmac_secret_file is not None
        has_jwks = self.jwks_url is not None or self.jwks_file is not None
        if not (has_hmac or has_jwks):
            _rules(["mode jwt needs hmacSecretFile, jwksUrl or jwksFile"])
        problems = []
        for algorithm in self.algorithms:
            if algorithm in JWT_ALGORITHMS_HMAC and not has_hmac:
                problems.append(f"algorithms: {algorithm} needs auth.hmacSecretFile")
            if algorithm in JWT_ALGORITHMS_ASYMMETRIC and not has_jwks:
                problems.append(f"algorithms: {algorithm} needs auth.jwksUrl or auth.jwksFile")
        _rules(problems)
        if "algorithms" not in self.model_fields_set:
            # The default follows the key sources; a derived value, so it is not "set"
            # and the operator's rendering of the document leaves it out.
            defaults: tuple[str, ...] = ("HS256",) if has_hmac else ()
            defaults += ("RS256", "ES256") if has_jwks else ()
            object.__setattr__(self, "algorithms", defaults)
        return self


class LimitsSettings(_Section):
    """Per-worker limits. The operator's ``spec.workers.limits`` is a view of this model:
    the CRD's schema, bounds and ordering rules for those keys are generated from it."""

    #: Keys the worker requires in order (small, large): a rule here, a CEL rule in the CRD.
    ORDER: ClassVar[tuple[tuple[str, str], ...]] = (
        ("batchMaxEvents", "queueMaxEvents"),
        ("maxRecordBytes", "queueMaxBytes"),
    )

    max_connections: StrictInt = Field(20000, ge=1, description="Open connections per worker.")
    max_pending_handshakes: StrictInt = Field(
        1000,
        ge=1,
        description="Connections still sending their request head; more are refused (503) at once.",
    )
    max_url_bytes: StrictInt = Field(
        8 * KiB,
        ge=256,
        description="Longest request target (path and query, a ?access_token= included); "
        "longer: 414.",
    )
    max_header_bytes: StrictInt = Field(
        16 * KiB,
        ge=1024,
        description="Largest request header section (Authorization and bearer. subprotocol "
        "included); larger: 431.",
    )
    queue_max_events: StrictInt = Field(
        1000, ge=1, description="Events queued per connection before it is closed as slow."
    )
    queue_max_bytes: StrictInt = Field(
        MiB, ge=1, description="Bytes queued per connection before it is closed as slow."
    )
    max_client_frame_bytes: StrictInt = Field(
        4 * KiB, ge=MIN_CLIENT_FRAME_BYTES, description="Largest frame accepted from a client."
    )
    max_record_bytes: StrictInt = Field(
        MiB, ge=1, description="Largest Kafka record forwarded; at most queueMaxBytes."
    )
    batch_max_events: StrictInt = Field(
        64, ge=1, description="Events coalesced into one frame; at most queueMaxEvents."
    )
    batch_max_bytes: StrictInt = Field(
        64 * KiB, ge=1, description="Bytes coalesced into one frame."
    )

    @model_validator(mode="after")
    def _batches_fit_queues(self) -> LimitsSettings:
        problems = []
        for small, large in self.ORDER:
            if getattr(self, _snake(small)) > getattr(self, _snake(large)):
                problems.append(f"{small}: must not exceed limits.{large}")
        _rules(problems)
        return self


class HeartbeatSettings(_Section):
    interval_seconds: Seconds = Field(25.0, ge=1, description="Server heartbeat period.")
    timeout_seconds: Seconds = Field(10.0, ge=1, description="Heartbeat answer deadline.")


class ResumeSettings(_Section):
    """Resume of a reconnecting client from its per-partition offsets.

    ``spec.workers.resume`` is a view of this model (whole seconds there): the CRD's schema
    for it is generated from these fields."""

    window_events: StrictInt = Field(
        10000, ge=0, description="Recent events kept in memory per worker (fast resume)."
    )
    max_replay_events: StrictInt = Field(
        100000,
        ge=0,
        description="Most events replayed from Kafka; beyond it the client gets reset.",
    )
    max_replay_age_seconds: Seconds = Field(
        86400.0, ge=0, description="Oldest gap replayed from Kafka, in seconds."
    )


class DrainSettings(_Section):
    window_seconds: Seconds = Field(30.0, ge=0, description="Time to spread drain closes over.")


class WorkerConfig(_Section):
    """The worker settings document (``worker.json``), as the operator writes it."""

    api_version: StrictStr = Field(
        description=f"Document version; must be {CONFIG_API_VERSION}.", alias="apiVersion"
    )
    channel: Text = Field(description="Name of the RealtimeChannel this worker serves.")
    kafka: KafkaSettings
    topics: tuple[TopicSettings, ...] = Field(
        description="Topics of the channel (at least one).", min_length=1
    )
    routing: RoutingSettings = RoutingSettings()
    server: ServerSettings = ServerSettings()
    auth: AuthSettings
    limits: LimitsSettings = LimitsSettings()
    heartbeat: HeartbeatSettings = HeartbeatSettings()
    resume: ResumeSettings = ResumeSettings()
    drain: DrainSettings = DrainSettings()

    @field_validator("api_version")
    @classmethod
    def _known_version(cls, value: str) -> str:
        if value != CONFIG_API_VERSION:
            raise PydanticCustomError(
                "api_version",
                "must be {expected}, not {got}",
                {"expected": CONFIG_API_VERSION, "got": value},
            )
        return value

    @field_validator("topics")
    @classmethod
    def _distinct_topics(cls, value: tuple[TopicSettings, ...]) -> tuple[TopicSettings, ...]:
        seen: set[str] = set()
        for index, topic in enumerate(value):
            if topic.name in seen:
                _rules([f"[{index}].name: duplicate topic {topic.name}"])
            seen.add(topic.name)
        return value

    @model_validator(mode="after")
    def _default_client_id(self) -> WorkerConfig:
        if "client_id" not in self.kafka.model_fields_set:
            # Derived, so not "set": rendering the document leaves it out.
            object.__setattr__(self.kafka, "client_id", f"clarion-{self.channel}")
        return self

    def audience_of(self, topic: str) -> Audience | None:
        for item in self.topics:
            if item.name == topic:
                return item.audience
        return None


class WorkerSettings(WorkerConfig):
    """The validated settings of one worker replica: the document plus its replica id."""

    replica_id: Text = Field(description="This replica's id (CLARION_REPLICA_ID or hostname).")


#: The worker's defaults for the ``limits`` keys that its cross-field rules compare
#: (``batchMaxEvents <= queueMaxEvents``, ``maxRecordBytes <= queueMaxBytes``): the
#: operator refuses a channel whose values, with these filled in, the worker would refuse.
LIMIT_DEFAULTS: Final[Mapping[str, int]] = MappingProxyType(
    {
        key: int(LimitsSettings.model_fields[_snake(key)].default)
        for pair in LimitsSettings.ORDER
        for key in pair
    }
)


# ---- loading -------------------------------------------------------------------------


class SettingsError(ValueError):
    """Every problem found in the settings, each prefixed by its key path."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("invalid worker settings:\n  " + "\n  ".join(problems))
        self.problems = tuple(problems)


def validate_document(doc: object) -> WorkerConfig:
    """``doc`` checked against the model the worker loads (no environment, no replica):
    what the operator runs on the document it is about to write."""
    if not isinstance(doc, Mapping):
        raise SettingsError(["(document): must be an object"])
    try:
        return WorkerConfig.model_validate(doc)
    except ValidationError as error:
        raise SettingsError(_problems(error)) from None


def load_worker_settings(
    doc: object,
    env: Mapping[str, str] | None = None,
    *,
    hostname: str = "",
    edge_env_names: Collection[str] = (),
) -> WorkerSettings:
    """Validate ``doc`` (a parsed document) with ``CLARION_*`` overrides from ``env``."""
    if not isinstance(doc, Mapping):
        raise SettingsError(["(document): must be an object"])
    problems: list[str] = []
    merged: dict[Any, Any] = _deep_copy(doc)
    if "replicaId" in merged:
        problems.append(f"replicaId: unknown key (the replica id comes from {REPLICA_ID_ENV})")
        del merged["replicaId"]
    replica_id = hostname
    for name, text in sorted((env or {}).items()):
        if not name.startswith(ENV_PREFIX):
            continue
        if name == REPLICA_ID_ENV:
            replica_id = text.strip()
            continue
        key = _ENV_KEYS.get(name)
        if key is None:
            if name not in edge_env_names:
                problems.append(f"{name}: unknown environment variable")
            continue
        try:
            value = _parse_env(key.kind, text)
        except ValueError as error:
            problems.append(f"{name}: {error}")
            continue
        section = merged
        *parents, leaf = key.path.split(".")
        for part in parents:
            inner = section.get(part)
            if not isinstance(inner, dict):
                inner = section[part] = {}
            section = inner
        section[leaf] = value
    if not replica_id:
        problems.append(f"{REPLICA_ID_ENV}: required (no hostname given)")
    merged["replicaId"] = replica_id or "-"
    try:
        settings = WorkerSettings.model_validate(merged)
    except ValidationError as error:
        problems.extend(_problems(error))
        raise SettingsError(problems) from None
    if problems:
        raise SettingsError(problems)
    return settings


def _deep_copy(mapping: Mapping[Any, Any]) -> dict[Any, Any]:
    return {k: _deep_copy(v) if isinstance(v, Mapping) else v for k, v in mapping.items()}


_TRUE: Final = frozenset({"true", "1", "yes", "on"})
_FALSE: Final = frozenset({"false", "0", "no", "off"})


def _parse_env(kind: str, text: str) -> object:
    text = text.strip()
    if kind == "str_list":
        return [item.strip() for item in text.split(",") if item.strip()]
    if kind == "bool":
        if text.lower() in _TRUE:
            return True
        if text.lower() in _FALSE:
            return False
        raise ValueError("must be true or false")
    if kind == "int":
        try:
            return int(text)
        except ValueError:
            raise ValueError("must be an integer") from None
    if kind == "float":
        try:
            return float(text)
        except ValueError:
            raise ValueError("must be a number") from None
    return text


#: How pydantic's error types read in a settings problem (the rest say what pydantic says).
_MESSAGES: Final = {
    "missing": "required",
    "extra_forbidden": "unknown key",
    "invalid_key": "keys must be strings",
    "int_type": "must be an integer",
    "int_from_float": "must be an integer",
    "float_type": "must be a number",
    "finite_number": "must be finite",
    "bool_type": "must be true or false",
    "string_type": "must be a string",
    "string_too_long": "must be at most {max_length} characters",
    "string_pattern_mismatch": "must match {pattern}",
    "model_type": "must be an object",
    "model_attributes_type": "must be an object",
    "tuple_type": "must be a list",
    "too_short": "must be a non-empty list",
    "too_long": "must have at most {max_length} items",
    "string_too_short": "must not be empty",
    "dict_type": "must be an object",
    "mapping_type": "must be an object",
}


def problems(error: ValidationError, prefix: str = "") -> list[str]:
    """``error``'s problems as ``path: message`` lines, paths in camelCase below ``prefix``
    (for a part of a larger document validated alone)."""
    if not prefix:
        return _problems(error)
    out = []
    for line in _problems(error):
        path, _, message = line.partition(": ")
        if path == "(document)":
            out.append(f"{prefix}: {message}")
        else:
            out.append(f"{prefix}{'' if path.startswith('[') else '.'}{path}: {message}")
    return out


def _problems(error: ValidationError) -> list[str]:
    out: list[str] = []
    for item in error.errors(include_url=False):
        kind = item["type"]
        loc = item["loc"]
        if kind == "invalid_key":
            # The offending key is the last part of the location, whatever its type.
            loc = (*loc[:-1], str(loc[-1]))
        path = _path(loc)
        ctx = item.get("ctx") or {}
        if kind == "too_short" and len(item["input"]) >= ctx["min_length"]:
            # Counted after validation: the items that failed are reported on their own.
            continue
        if kind == "greater_than_equal":
            message = f"must be at least {_number_text(ctx['ge'])}"
        elif kind == "less_than_equal":
            message = f"must be at most {_number_text(ctx['le'])}"
        elif kind == "literal_error":
            message = "must be one of " + str(ctx["expected"]).replace("'", "").replace(
                " or ", ", "
            )
        elif kind == "value_error":
            for line in str(ctx.get("error", item["msg"])).splitlines():
                key, sep, rest = line.partition(": ")
                if sep and " " not in key:
                    joint = "" if key.startswith("[") or not path else "."
                    out.append(f"{path}{joint}{key}: {rest}")
                else:
                    out.append(f"{path or '(document)'}: {line}")
            continue
        else:
            message = _MESSAGES.get(kind, item["msg"]).format(**ctx)
        if kind == "missing" and path == "replicaId":
            continue
        out.append(f"{path or '(document)'}: {message}")
    return out


def _path(loc: tuple[int | str, ...]) -> str:
    text = ""
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else str(part)
    return text


def _number_text(value: object) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


# ---- keys, environment names and the reference table ---------------------------------


@dataclass(frozen=True, slots=True)
class KeyInfo:
    """One key of the document: its path, kind, default, bounds and meaning."""

    path: str
    kind: str
    default: object
    required: bool
    meaning: str
    minimum: float | None = None
    choices: tuple[str, ...] = ()
    #: The default as the reference table shows it.
    default_text: str = ""

    @property
    def env_name(self) -> str:
        return ENV_PREFIX + "__".join(_snake(part).upper() for part in self.path.split("."))


def _kind(annotation: Any) -> tuple[str, tuple[str, ...]]:
    """The scalar kind of a field and its allowed values (Literal choices)."""
    origin = typing.get_origin(annotation)
    if origin in (types.UnionType, typing.Union):
        inner = [a for a in typing.get_args(annotation) if a is not type(None)]
        return _kind(inner[0])
    if origin is Annotated:
        return _kind(typing.get_args(annotation)[0])
    if origin is Literal:
        return "str", tuple(str(a) for a in typing.get_args(annotation))
    if origin is tuple:
        return "str_list", ()
    if annotation is bool:
        return "bool", ()
    if annotation is int:
        return "int", ()
    if annotation is float:
        return "float", ()
    return "str", ()


def _keys(model: type[BaseModel], prefix: str) -> Iterator[KeyInfo]:
    for name, info in model.model_fields.items():
        path = prefix + (info.alias or to_camel(name))
        annotation = info.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            yield from _keys(annotation, path + ".")
            continue
        if typing.get_origin(annotation) is tuple:
            item = typing.get_args(annotation)[0]
            if isinstance(item, type) and issubclass(item, BaseModel):
                yield KeyInfo(
                    path, "list", None, True, info.description or "", None, (), "required"
                )
                yield from _keys(item, path + "[].")
                continue
        kind, choices = _kind(annotation)
        if name == "algorithms":
            choices = JWT_ALGORITHMS
        minimum = next((m.ge for m in info.metadata if hasattr(m, "ge")), None)
        extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
        yield KeyInfo(
            path=path,
            kind=kind,
            default=None if info.is_required() else info.default,
            required=info.is_required(),
            meaning=info.description or "",
            minimum=minimum,
            choices=choices,
            default_text=str(
                extra.get("defaultText") or _default_text(info.is_required(), info.default)
            ),
        )


def _default_text(required: bool, default: object) -> str:
    if required:
        return "required"
    if default is None:
        return "unset"
    if isinstance(default, bool):
        return "true" if default else "false"
    if isinstance(default, tuple):
        return "[" + ", ".join(str(item) for item in default) + "]"
    if isinstance(default, float) and default.is_integer():
        return str(int(default))
    return str(default)


#: Every key of the document, in documentation order (the model's field order).
KEYS: Final[tuple[KeyInfo, ...]] = tuple(_keys(WorkerConfig, ""))
#: Keys an environment variable can set (``topics`` has no override).
_ENV_KEYS: Final = {
    key.env_name: key for key in KEYS if "[]" not in key.path and key.kind != "list"
}


@dataclass(frozen=True, slots=True)
class KeyReference:
    """One row of the settings reference table (docs/worker-config.md)."""

    key: str
    type: str
    default: str
    meaning: str
    env: str


def key_reference() -> tuple[KeyReference, ...]:
    """Every document key with its type, default, meaning and environment override."""
    return tuple(
        KeyReference(
            key.path,
            key.kind,
            key.default_text,
            key.meaning,
            key.env_name if key.env_name in _ENV_KEYS else "-",
        )
        for key in KEYS
    )
