"""Worker settings: the operator's ``WorkerConfigDoc`` plus environment overrides, validated.

``load_settings(doc, env, hostname=...)`` turns a parsed document (``parse_document`` reads
JSON or YAML text) into a frozen ``WorkerSettings`` tree. It never reads ``os.environ``:
the edge passes the environment as a mapping.

Environment overrides: ``CLARION_`` + the key path in upper snake case, sections separated
by a double underscore, e.g. ``CLARION_KAFKA__BOOTSTRAP_SERVERS`` or
``CLARION_LIMITS__MAX_CONNECTIONS``. Lists (``auth.algorithms``, ``auth.allowedOrigins``)
are comma-separated; booleans accept true/false/1/0/yes/no. ``CLARION_REPLICA_ID`` sets
the replica id (default: the hostname the edge passes in). ``topics`` has no override.
Any other ``CLARION_*`` variable is an error (typo protection) unless the edge lists it
in ``edge_env_names``.

Validation collects every problem, with its key path, into one ``SettingsError``.
``key_reference()`` returns the table (key, type, default, meaning, env) that
docs/worker-config.md is generated from and checked against.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass
from typing import Final, Literal

import yaml

from clarion_contract.worker_config import (
    AUDIENCES,
    CONFIG_API_VERSION,
    JWT_ALGORITHMS_ASYMMETRIC,
    JWT_ALGORITHMS_HMAC,
    SASL_MECHANISMS,
    SECURITY_PROTOCOLS,
    WITHOUT_USER_RULES,
    Audience,
    WithoutUser,
)
from clarion_worker.core.timestamps import resolve_zone

ENV_PREFIX: Final = "CLARION_"
REPLICA_ID_ENV: Final = "CLARION_REPLICA_ID"

Kind = Literal["str", "int", "float", "bool", "str_list"]


class _Required:
    def __repr__(self) -> str:
        return "REQUIRED"


class _Unset:
    def __repr__(self) -> str:
        return "UNSET"


REQUIRED: Final = _Required()
UNSET: Final = _Unset()


@dataclass(frozen=True, slots=True)
class KeySpec:
    """One scalar key of the document: its type, default, bounds and meaning."""

    path: str
    kind: Kind
    default: object
    meaning: str
    minimum: float | None = None
    choices: tuple[str, ...] = ()

    @property
    def env_name(self) -> str:
        parts = [_upper_snake(part) for part in self.path.split(".")]
        return ENV_PREFIX + "__".join(parts)


def _upper_snake(camel: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", camel).upper()


KiB: Final = 1024
MiB: Final = 1024 * 1024
ALGORITHMS_HMAC: Final = JWT_ALGORITHMS_HMAC
ALGORITHMS_ASYMMETRIC: Final = JWT_ALGORITHMS_ASYMMETRIC

# The single source of truth for scalar keys. Order is the documentation order.
KEYS: Final[tuple[KeySpec, ...]] = (
    KeySpec("apiVersion", "str", REQUIRED, f"Document version; must be {CONFIG_API_VERSION}."),
    KeySpec("channel", "str", REQUIRED, "Name of the RealtimeChannel this worker serves."),
    KeySpec("kafka.bootstrapServers", "str", REQUIRED, "Comma-separated host:port list."),
    KeySpec("kafka.clientId", "str", UNSET, "Kafka client id (default: clarion-<channel>)."),
    KeySpec(
        "kafka.metadataRefreshSeconds",
        "float",
        30.0,
        "How often partition counts are re-read, so added partitions are picked up.",
        minimum=0.1,
    ),
    KeySpec(
        "kafka.security.protocol",
        "str",
        "PLAINTEXT",
        "Kafka security protocol.",
        choices=SECURITY_PROTOCOLS,
    ),
    KeySpec(
        "kafka.security.saslMechanism",
        "str",
        UNSET,
        "SASL mechanism; required with SASL_* protocols.",
        choices=SASL_MECHANISMS,
    ),
    KeySpec("kafka.security.usernameFile", "str", UNSET, "File holding the SASL username."),
    KeySpec("kafka.security.passwordFile", "str", UNSET, "File holding the SASL password."),
    KeySpec("kafka.security.caFile", "str", UNSET, "CA bundle for TLS to Kafka."),
    KeySpec("kafka.security.certFile", "str", UNSET, "Client certificate for mutual TLS."),
    KeySpec("kafka.security.keyFile", "str", UNSET, "Client key for mutual TLS."),
    KeySpec("routing.typeField", "str", "type", "JSON field holding the event type."),
    KeySpec("routing.organizationField", "str", "organizationId", "JSON field: organization."),
    KeySpec("routing.userField", "str", "userId", "JSON field: target user (user topics)."),
    KeySpec("routing.dataField", "str", "data", "JSON field holding the payload sent to clients."),
    KeySpec("routing.timestampField", "str", "timestamp", "JSON field: producer timestamp."),
    KeySpec(
        "routing.timestampZone",
        "str",
        "UTC",
        "Zone of producer timestamps written without an offset (Java's LocalDateTime): "
        "UTC, +HH:MM or an IANA name such as Africa/Abidjan.",
    ),
    KeySpec("routing.typeHeader", "str", UNSET, "Record header holding the type (wins if set)."),
    KeySpec("routing.organizationHeader", "str", UNSET, "Record header holding the organization."),
    KeySpec("routing.userHeader", "str", UNSET, "Record header holding the target user."),
    KeySpec("routing.organizationFromKey", "bool", False, "Take the organization from the key."),
    KeySpec("server.websocketPath", "str", "/ws/dashboard", "HTTP path of the WebSocket endpoint."),
    KeySpec("server.ssePath", "str", "/sse/dashboard", "HTTP path of the SSE endpoint."),
    KeySpec("server.sseEnabled", "bool", True, "Serve the SSE endpoint."),
    KeySpec(
        "server.directWrites",
        "bool",
        True,
        "Write pre-built WebSocket frames straight to each socket, one write per client per "
        "fan-out pass (false: one ASGI send per frame, several times slower).",
    ),
    KeySpec(
        "server.handshakeTimeoutSeconds",
        "float",
        10.0,
        "Time a new connection gets to send its whole request head; then 408 and closed "
        "(slow-loris).",
        minimum=0.1,
    ),
    KeySpec(
        "auth.mode",
        "str",
        REQUIRED,
        "jwt, or none (development only: no verification).",
        choices=("jwt", "none"),
    ),
    KeySpec(
        "auth.algorithms",
        "str_list",
        UNSET,
        "Accepted JWT algorithms (default: HS256 with hmacSecretFile; RS256, ES256 with JWKS).",
        choices=ALGORITHMS_HMAC + ALGORITHMS_ASYMMETRIC,
    ),
    KeySpec("auth.issuer", "str", UNSET, "Required iss claim (unset: not checked)."),
    KeySpec("auth.audience", "str", UNSET, "Required aud claim (unset: not checked)."),
    KeySpec("auth.hmacSecretFile", "str", UNSET, "File holding the HMAC secret."),
    KeySpec("auth.jwksUrl", "str", UNSET, "URL of a JWKS document (fetched and cached)."),
    KeySpec("auth.jwksFile", "str", UNSET, "File holding a JWKS document."),
    KeySpec("auth.organizationsClaim", "str", "organizations", "Claim: organization id(s)."),
    KeySpec("auth.userClaim", "str", "sub", "Claim holding the user id."),
    KeySpec(
        "auth.allowedOrigins",
        "str_list",
        (),
        "Allowed Origin values (exact, or *.example.com); empty: any origin.",
    ),
    KeySpec("auth.leewaySeconds", "int", 30, "Clock skew allowed for exp/nbf.", minimum=0),
    KeySpec(
        "auth.requiredClaims",
        "str_list",
        (),
        "Claims every token must carry, non-empty (e.g. sub, organizations: the claim "
        "names); empty: at least one of the user and organizations claims.",
    ),
    KeySpec("limits.maxConnections", "int", 20000, "Connections per replica.", minimum=1),
    KeySpec(
        "limits.maxPendingHandshakes",
        "int",
        1000,
        "Connections still sending their request head; more are refused (503) at once.",
        minimum=1,
    ),
    KeySpec(
        "limits.maxUrlBytes",
        "int",
        8 * KiB,
        "Longest request target (path and query, a ?access_token= included); longer: 414.",
        minimum=256,
    ),
    KeySpec(
        "limits.maxHeaderBytes",
        "int",
        16 * KiB,
        "Largest request header section (Authorization and bearer. subprotocol included); "
        "larger: 431.",
        minimum=1024,
    ),
    KeySpec("limits.queueMaxEvents", "int", 1000, "Queued events per connection.", minimum=1),
    KeySpec("limits.queueMaxBytes", "int", MiB, "Queued bytes per connection.", minimum=1),
    KeySpec("limits.maxClientFrameBytes", "int", 4 * KiB, "Largest client frame.", minimum=16),
    KeySpec("limits.maxRecordBytes", "int", MiB, "Largest Kafka record value.", minimum=1),
    KeySpec("limits.batchMaxEvents", "int", 64, "Events per batch frame.", minimum=1),
    KeySpec("limits.batchMaxBytes", "int", 64 * KiB, "Bytes per batch frame.", minimum=1),
    KeySpec("heartbeat.intervalSeconds", "float", 25.0, "Server heartbeat period.", minimum=1),
    KeySpec("heartbeat.timeoutSeconds", "float", 10.0, "Heartbeat answer deadline.", minimum=1),
    KeySpec("resume.windowEvents", "int", 10000, "Recent events kept per partition.", minimum=0),
    KeySpec("resume.maxReplayEvents", "int", 100000, "Largest replay before reset.", minimum=0),
    KeySpec(
        "resume.maxReplayAgeSeconds", "float", 86400.0, "Oldest replay before reset.", minimum=0
    ),
    KeySpec("drain.windowSeconds", "float", 30.0, "Time to spread drain closes over.", minimum=0),
)

_SPEC_BY_PATH: Final = {spec.path: spec for spec in KEYS}
_SPEC_BY_ENV: Final = {spec.env_name: spec for spec in KEYS}
_SECTIONS: Final = frozenset(
    ".".join(spec.path.split(".")[:depth])
    for spec in KEYS
    for depth in range(1, spec.path.count(".") + 1)
)
_TOPIC_NAME: Final = re.compile(r"[A-Za-z0-9._-]{1,249}")


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
    rows = [
        KeyReference("topics", "list", "required", "Topics of the channel (at least one).", "-"),
        KeyReference("topics[].name", "str", "required", "Kafka topic name.", "-"),
        KeyReference(
            "topics[].audience",
            "str",
            "required",
            "Who receives its events: " + ", ".join(AUDIENCES) + ".",
            "-",
        ),
        KeyReference(
            "topics[].withoutUser",
            "str",
            "organization",
            "User topics only: an event naming no user goes to the members of its "
            "organization (organization), or is skipped as a bad record (reject).",
            "-",
        ),
    ]
    for spec in KEYS:
        rows.append(
            KeyReference(spec.path, spec.kind, _default_text(spec), spec.meaning, spec.env_name)
        )
    rows.sort(key=lambda row: 0 if row.key in ("apiVersion", "channel") else 1)
    return tuple(rows)


def _default_text(spec: KeySpec) -> str:
    if spec.default is REQUIRED:
        return "required"
    if spec.default is UNSET:
        return "unset"
    if isinstance(spec.default, bool):
        return "true" if spec.default else "false"
    if isinstance(spec.default, tuple):
        return "[" + ", ".join(spec.default) + "]"
    if isinstance(spec.default, float) and spec.default.is_integer():
        return str(int(spec.default))
    return str(spec.default)


# ---- the settings tree -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class KafkaSecurity:
    protocol: str
    sasl_mechanism: str | None
    username_file: str | None
    password_file: str | None
    ca_file: str | None
    cert_file: str | None
    key_file: str | None


@dataclass(frozen=True, slots=True)
class KafkaSettings:
    bootstrap_servers: str
    client_id: str
    security: KafkaSecurity
    metadata_refresh_seconds: float = 30.0


@dataclass(frozen=True, slots=True)
class TopicSettings:
    name: str
    audience: Audience
    #: ``user`` topics: what happens to an event that names no user.
    without_user: WithoutUser = "organization"


@dataclass(frozen=True, slots=True)
class RoutingSettings:
    type_field: str = "type"
    organization_field: str = "organizationId"
    user_field: str = "userId"
    data_field: str = "data"
    timestamp_field: str = "timestamp"
    #: Zone of zoneless producer timestamps (``resolve_zone`` accepts it).
    timestamp_zone: str = "UTC"
    type_header: str | None = None
    organization_header: str | None = None
    user_header: str | None = None
    organization_from_key: bool = False


@dataclass(frozen=True, slots=True)
class ServerSettings:
    websocket_path: str
    sse_path: str
    sse_enabled: bool
    direct_writes: bool = True
    handshake_timeout_seconds: float = 10.0


@dataclass(frozen=True, slots=True)
class AuthSettings:
    mode: Literal["jwt", "none"]
    algorithms: tuple[str, ...]
    issuer: str | None
    audience: str | None
    hmac_secret_file: str | None
    jwks_url: str | None
    jwks_file: str | None
    organizations_claim: str
    user_claim: str
    allowed_origins: tuple[str, ...]
    leeway_seconds: int
    required_claims: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class LimitsSettings:
    max_connections: int = 20000
    max_pending_handshakes: int = 1000
    max_url_bytes: int = 8 * KiB
    max_header_bytes: int = 16 * KiB
    queue_max_events: int = 1000
    queue_max_bytes: int = MiB
    max_client_frame_bytes: int = 4 * KiB
    max_record_bytes: int = MiB
    batch_max_events: int = 64
    batch_max_bytes: int = 64 * KiB


@dataclass(frozen=True, slots=True)
class HeartbeatSettings:
    interval_seconds: float
    timeout_seconds: float


@dataclass(frozen=True, slots=True)
class ResumeSettings:
    window_events: int = 10000
    max_replay_events: int = 100000
    max_replay_age_seconds: float = 86400.0


@dataclass(frozen=True, slots=True)
class DrainSettings:
    window_seconds: float


@dataclass(frozen=True, slots=True)
class WorkerSettings:
    """The validated settings of one worker replica."""

    channel: str
    replica_id: str
    kafka: KafkaSettings
    topics: tuple[TopicSettings, ...]
    routing: RoutingSettings
    server: ServerSettings
    auth: AuthSettings
    limits: LimitsSettings
    heartbeat: HeartbeatSettings
    resume: ResumeSettings
    drain: DrainSettings

    def audience_of(self, topic: str) -> Audience | None:
        for item in self.topics:
            if item.name == topic:
                return item.audience
        return None


class SettingsError(ValueError):
    """Every problem found in the settings, each prefixed by its key path."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("invalid worker settings:\n  " + "\n  ".join(problems))
        self.problems = tuple(problems)


# ---- loading -------------------------------------------------------------------------


def parse_document(text: str) -> object:
    """Parse the settings document; JSON is YAML, so one safe YAML parse reads both."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise SettingsError([f"(document): not valid JSON or YAML: {error}"]) from error


def load_settings(
    doc: object,
    env: Mapping[str, str] | None = None,
    *,
    hostname: str = "",
    edge_env_names: Collection[str] = (),
) -> WorkerSettings:
    """Validate ``doc`` (a parsed ``WorkerConfigDoc``) with ``env`` overrides applied."""
    problems: list[str] = []
    values: dict[str, object] = {}
    raw_topics: object = None
    if not isinstance(doc, Mapping):
        raise SettingsError(["(document): must be an object"])
    for path, value in _walk(doc, "", problems):
        if path == "topics":
            raw_topics = value
        else:
            values[path] = value

    replica_id = hostname
    for name, text in sorted((env or {}).items()):
        if not name.startswith(ENV_PREFIX):
            continue
        if name == REPLICA_ID_ENV:
            replica_id = text.strip()
            continue
        spec = _SPEC_BY_ENV.get(name)
        if spec is None:
            if name not in edge_env_names:
                problems.append(f"{name}: unknown environment variable")
            continue
        parsed = _parse_env(spec, text)
        if isinstance(parsed, _EnvProblem):
            problems.append(f"{name}: {parsed.message}")
        else:
            values[spec.path] = parsed

    checked: dict[str, object] = {}
    for spec in KEYS:
        value = values.get(spec.path, UNSET)
        if value is UNSET:
            if spec.default is REQUIRED:
                problems.append(f"{spec.path}: required")
            checked[spec.path] = spec.default
            continue
        problem = _check(spec, value)
        if problem:
            problems.append(f"{spec.path}: {problem}")
            checked[spec.path] = spec.default
        else:
            checked[spec.path] = tuple(value) if isinstance(value, list) else value
    if not replica_id:
        problems.append(f"{REPLICA_ID_ENV}: required (no hostname given)")
    topics = _check_topics(raw_topics, problems)
    view = _Values(checked)
    _cross_check(view, problems)
    if problems:
        raise SettingsError(problems)
    return _build(view, topics, replica_id)


def _walk(
    mapping: Mapping[object, object], prefix: str, problems: list[str]
) -> Iterator[tuple[str, object]]:
    for key, value in mapping.items():
        path = f"{prefix}{key}"
        if not isinstance(key, str):
            problems.append(f"{path}: keys must be strings")
        elif path == "topics" or path in _SPEC_BY_PATH:
            yield path, value
        elif path in _SECTIONS:
            if isinstance(value, Mapping):
                yield from _walk(value, path + ".", problems)
            else:
                problems.append(f"{path}: must be an object")
        else:
            problems.append(f"{path}: unknown key")


@dataclass(frozen=True, slots=True)
class _EnvProblem:
    message: str


_TRUE: Final = frozenset({"true", "1", "yes", "on"})
_FALSE: Final = frozenset({"false", "0", "no", "off"})


def _parse_env(spec: KeySpec, text: str) -> object:
    text = text.strip()
    if spec.kind == "str":
        return text
    if spec.kind == "str_list":
        return [item.strip() for item in text.split(",") if item.strip()]
    if spec.kind == "bool":
        if text.lower() in _TRUE:
            return True
        if text.lower() in _FALSE:
            return False
        return _EnvProblem("must be true or false")
    try:
        return int(text) if spec.kind == "int" else float(text)
    except ValueError:
        return _EnvProblem(f"must be {'an integer' if spec.kind == 'int' else 'a number'}")


def _check(spec: KeySpec, value: object) -> str | None:
    """The problem with ``value`` for ``spec``, or None when it is fine."""
    if spec.kind == "str":
        if not isinstance(value, str):
            return "must be a string"
        if not value.strip():
            return "must not be empty"
        if spec.choices and value not in spec.choices:
            return "must be one of " + ", ".join(spec.choices)
        return None
    if spec.kind == "bool":
        return None if isinstance(value, bool) else "must be true or false"
    if spec.kind == "str_list":
        if not isinstance(value, list | tuple) or not all(isinstance(i, str) for i in value):
            return "must be a list of strings"
        wrong = [item for item in value if spec.choices and item not in spec.choices]
        if wrong:
            return f"unsupported {', '.join(wrong)}; allowed: {', '.join(spec.choices)}"
        return None
    # bool is an int in Python, and true is never a sensible count or duration.
    if isinstance(value, bool) or not isinstance(value, int | float):
        return "must be an integer" if spec.kind == "int" else "must be a number"
    if spec.kind == "int" and not isinstance(value, int):
        return "must be an integer"
    if not math.isfinite(value):
        return "must be finite"
    if spec.minimum is not None and value < spec.minimum:
        return f"must be at least {_number_text(spec.minimum)}"
    return None


def _number_text(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def _check_topics(raw: object, problems: list[str]) -> tuple[TopicSettings, ...]:
    if raw is None:
        problems.append("topics: required")
        return ()
    if not isinstance(raw, list) or not raw:
        problems.append("topics: must be a non-empty list")
        return ()
    topics: list[TopicSettings] = []
    seen: set[str] = set()
    for index, item in enumerate(raw):
        where = f"topics[{index}]"
        if not isinstance(item, Mapping):
            problems.append(f"{where}: must be an object")
            continue
        for key in item:
            if key not in ("name", "audience", "withoutUser"):
                problems.append(f"{where}.{key}: unknown key")
        name, audience = item.get("name"), item.get("audience")
        without_user = item.get("withoutUser", "organization")
        ok = True
        if not isinstance(name, str) or not _TOPIC_NAME.fullmatch(name):
            problems.append(f"{where}.name: must be a Kafka topic name ([A-Za-z0-9._-], 1-249)")
            ok = False
        elif name in seen:
            problems.append(f"{where}.name: duplicate topic {name}")
            ok = False
        if audience not in AUDIENCES:
            problems.append(f"{where}.audience: must be one of {', '.join(AUDIENCES)}")
            ok = False
        if without_user not in WITHOUT_USER_RULES:
            problems.append(f"{where}.withoutUser: must be one of {', '.join(WITHOUT_USER_RULES)}")
            ok = False
        elif "withoutUser" in item and audience != "user":
            problems.append(f"{where}.withoutUser: only for topics of audience user")
            ok = False
        if ok and isinstance(name, str):
            seen.add(name)
            rule: WithoutUser = "reject" if without_user == "reject" else "organization"
            topics.append(TopicSettings(name, _audience(audience), rule))
    return tuple(topics)


def _audience(value: object) -> Audience:
    for audience in AUDIENCES:
        if value == audience:
            return audience
    raise AssertionError(value)


class _Values:
    """Typed reads of checked values (defaults already filled in)."""

    def __init__(self, values: Mapping[str, object]) -> None:
        self._values = values

    def is_set(self, path: str) -> bool:
        return self._values[path] is not UNSET

    def text(self, path: str) -> str:
        value = self._values[path]
        return value if isinstance(value, str) else ""

    def optional(self, path: str) -> str | None:
        value = self._values[path]
        return value if isinstance(value, str) else None

    def integer(self, path: str) -> int:
        value = self._values[path]
        return value if isinstance(value, int) else 0

    def number(self, path: str) -> float:
        value = self._values[path]
        return float(value) if isinstance(value, int | float) else 0.0

    def flag(self, path: str) -> bool:
        return self._values[path] is True

    def texts(self, path: str) -> tuple[str, ...]:
        value = self._values[path]
        return tuple(str(item) for item in value) if isinstance(value, tuple) else ()


def _cross_check(values: _Values, problems: list[str]) -> None:
    api_version = values.optional("apiVersion")
    if api_version is not None and api_version != CONFIG_API_VERSION:
        problems.append(f"apiVersion: must be {CONFIG_API_VERSION}, not {api_version}")
    protocol = values.text("kafka.security.protocol")
    if protocol.startswith("SASL_"):
        for key in ("saslMechanism", "usernameFile", "passwordFile"):
            if not values.is_set(f"kafka.security.{key}"):
                problems.append(f"kafka.security.{key}: required with protocol {protocol}")
    if values.flag("routing.organizationFromKey") and values.is_set("routing.organizationHeader"):
        problems.append(
            "routing.organizationFromKey: set either organizationFromKey or organizationHeader"
        )
    try:
        resolve_zone(values.text("routing.timestampZone"))
    except ValueError as error:
        problems.append(f"routing.timestampZone: {error}")
    for key in ("server.websocketPath", "server.ssePath"):
        if not values.text(key).startswith("/"):
            problems.append(f"{key}: must start with /")
    if values.text("server.websocketPath") == values.text("server.ssePath"):
        problems.append("server.ssePath: must differ from server.websocketPath")
    if values.integer("limits.batchMaxEvents") > values.integer("limits.queueMaxEvents"):
        problems.append("limits.batchMaxEvents: must not exceed limits.queueMaxEvents")
    if values.integer("limits.maxRecordBytes") > values.integer("limits.queueMaxBytes"):
        problems.append("limits.maxRecordBytes: must not exceed limits.queueMaxBytes")
    if values.text("auth.mode") == "jwt":
        _check_jwt(values, problems)


def _check_jwt(values: _Values, problems: list[str]) -> None:
    has_hmac = values.is_set("auth.hmacSecretFile")
    has_jwks = values.is_set("auth.jwksUrl") or values.is_set("auth.jwksFile")
    if not (has_hmac or has_jwks):
        problems.append("auth: mode jwt needs hmacSecretFile, jwksUrl or jwksFile")
        return
    if values.is_set("auth.jwksUrl") and not values.text("auth.jwksUrl").startswith(
        ("https://", "http://")
    ):
        problems.append("auth.jwksUrl: must be an http(s) URL")
    for algorithm in values.texts("auth.algorithms"):
        if algorithm in ALGORITHMS_HMAC and not has_hmac:
            problems.append(f"auth.algorithms: {algorithm} needs auth.hmacSecretFile")
        if algorithm in ALGORITHMS_ASYMMETRIC and not has_jwks:
            problems.append(f"auth.algorithms: {algorithm} needs auth.jwksUrl or auth.jwksFile")
    if values.is_set("auth.algorithms") and not values.texts("auth.algorithms"):
        problems.append("auth.algorithms: must not be empty")


def _default_algorithms(values: _Values) -> tuple[str, ...]:
    if values.is_set("auth.algorithms"):
        return values.texts("auth.algorithms")
    if values.text("auth.mode") != "jwt":
        return ()
    algorithms: tuple[str, ...] = ()
    if values.is_set("auth.hmacSecretFile"):
        algorithms += ("HS256",)
    if values.is_set("auth.jwksUrl") or values.is_set("auth.jwksFile"):
        algorithms += ("RS256", "ES256")
    return algorithms


def _build(v: _Values, topics: tuple[TopicSettings, ...], replica_id: str) -> WorkerSettings:
    channel = v.text("channel")
    mode: Literal["jwt", "none"] = "jwt" if v.text("auth.mode") == "jwt" else "none"
    return WorkerSettings(
        channel=channel,
        replica_id=replica_id,
        kafka=KafkaSettings(
            bootstrap_servers=v.text("kafka.bootstrapServers"),
            client_id=v.optional("kafka.clientId") or f"clarion-{channel}",
            metadata_refresh_seconds=v.number("kafka.metadataRefreshSeconds"),
            security=KafkaSecurity(
                protocol=v.text("kafka.security.protocol"),
                sasl_mechanism=v.optional("kafka.security.saslMechanism"),
                username_file=v.optional("kafka.security.usernameFile"),
                password_file=v.optional("kafka.security.passwordFile"),
                ca_file=v.optional("kafka.security.caFile"),
                cert_file=v.optional("kafka.security.certFile"),
                key_file=v.optional("kafka.security.keyFile"),
            ),
        ),
        topics=topics,
        routing=RoutingSettings(
            type_field=v.text("routing.typeField"),
            organization_field=v.text("routing.organizationField"),
            user_field=v.text("routing.userField"),
            data_field=v.text("routing.dataField"),
            timestamp_field=v.text("routing.timestampField"),
            timestamp_zone=v.text("routing.timestampZone"),
            type_header=v.optional("routing.typeHeader"),
            organization_header=v.optional("routing.organizationHeader"),
            user_header=v.optional("routing.userHeader"),
            organization_from_key=v.flag("routing.organizationFromKey"),
        ),
        server=ServerSettings(
            websocket_path=v.text("server.websocketPath"),
            sse_path=v.text("server.ssePath"),
            sse_enabled=v.flag("server.sseEnabled"),
            direct_writes=v.flag("server.directWrites"),
            handshake_timeout_seconds=v.number("server.handshakeTimeoutSeconds"),
        ),
        auth=AuthSettings(
            mode=mode,
            algorithms=_default_algorithms(v),
            issuer=v.optional("auth.issuer"),
            audience=v.optional("auth.audience"),
            hmac_secret_file=v.optional("auth.hmacSecretFile"),
            jwks_url=v.optional("auth.jwksUrl"),
            jwks_file=v.optional("auth.jwksFile"),
            organizations_claim=v.text("auth.organizationsClaim"),
            user_claim=v.text("auth.userClaim"),
            allowed_origins=v.texts("auth.allowedOrigins"),
            leeway_seconds=v.integer("auth.leewaySeconds"),
            required_claims=v.texts("auth.requiredClaims"),
        ),
        limits=LimitsSettings(
            max_connections=v.integer("limits.maxConnections"),
            max_pending_handshakes=v.integer("limits.maxPendingHandshakes"),
            max_url_bytes=v.integer("limits.maxUrlBytes"),
            max_header_bytes=v.integer("limits.maxHeaderBytes"),
            queue_max_events=v.integer("limits.queueMaxEvents"),
            queue_max_bytes=v.integer("limits.queueMaxBytes"),
            max_client_frame_bytes=v.integer("limits.maxClientFrameBytes"),
            max_record_bytes=v.integer("limits.maxRecordBytes"),
            batch_max_events=v.integer("limits.batchMaxEvents"),
            batch_max_bytes=v.integer("limits.batchMaxBytes"),
        ),
        heartbeat=HeartbeatSettings(
            interval_seconds=v.number("heartbeat.intervalSeconds"),
            timeout_seconds=v.number("heartbeat.timeoutSeconds"),
        ),
        resume=ResumeSettings(
            window_events=v.integer("resume.windowEvents"),
            max_replay_events=v.integer("resume.maxReplayEvents"),
            max_replay_age_seconds=v.number("resume.maxReplayAgeSeconds"),
        ),
        drain=DrainSettings(window_seconds=v.number("drain.windowSeconds")),
    )


def settings_to_json(settings: WorkerSettings) -> str:
    """A stable JSON rendering, for logging the effective settings (files, never secrets)."""
    from dataclasses import asdict

    return json.dumps(asdict(settings), sort_keys=True, separators=(",", ":"))
