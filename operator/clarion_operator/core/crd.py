"""The single source of the ``RealtimeChannel`` CustomResourceDefinition.

The chart's ``crds/realtimechannels.yaml`` and ``manifests/crd.yaml`` are generated from
:func:`render_yaml`; never edit them by hand (a drift test fails). The schema is written
with small builders so every field carries a ``description`` (``kubectl explain`` is the
user's manual), and defaults, bounds and enums sit next to the field they constrain.

Defaulting note: the API server applies a nested default only when the parent object is
present, so optional parent objects whose children all have defaults are given
``default: {}``. The operator applies the same defaults itself (``spec.py``) and never
relies on the API server having done so.

CEL rules (``x-kubernetes-validations``) catch cross-field mistakes at admission time;
``spec.py`` repeats them so objects created before a rule existed are still rejected.
Strings and lists used in CEL have ``maxLength``/``maxItems`` so the API server can bound
rule cost.
"""

from __future__ import annotations

import types
import typing
from typing import Any, Final

import yaml
from pydantic import BaseModel

from clarion_contract.worker_config import (
    JWT_ALGORITHMS,
    JWT_ALGORITHMS_HMAC,
    LIMIT_DEFAULTS,
    SASL_MECHANISMS,
    SECURITY_PROTOCOLS,
    LimitsSettings,
    ResumeSettings,
    RoutingSettings,
    not_blank,
)
from clarion_contract.zones import TIMESTAMP_ZONE_PATTERN as TIMESTAMP_ZONE_PATTERN

GROUP: Final = "realtime.clarion.dev"
VERSION: Final = "v1alpha1"
API_VERSION: Final = f"{GROUP}/{VERSION}"
KIND: Final = "RealtimeChannel"
PLURAL: Final = "realtimechannels"
SINGULAR: Final = "realtimechannel"
SHORT_NAMES: Final = ("rtc",)
CRD_NAME: Final = f"{PLURAL}.{GROUP}"

#: Annotation on an autoscaled channel's worker Deployment: the HorizontalPodAutoscaler's
#: minReplicas. The Deployment starts at 1 replica (spec.replicas belongs to the HPA, so the
#: operator never writes it) and the HPA raises it to the floor on its next sync; until the
#: ready workers reach the floor, WorkersReady and Ready stay False.
MIN_REPLICAS_ANNOTATION: Final = "clarion.dev/min-replicas"

#: Channel names feed ``<name>-worker`` object names, DNS-1035 labels of at most 63.
MAX_NAME_LENGTH: Final = 56

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
EXPOSURE_TYPES: Final = ("none", "gateway", "ingress")
INGRESS_PROFILES: Final = ("traefik", "haproxy", "nginx", "generic")
MAX_HOSTNAMES: Final = 16
DEFAULT_MIN_REPLICAS: Final = 2
DEFAULT_MAX_REPLICAS: Final = 10
DEFAULT_TARGET_CPU: Final = 70
DEFAULT_SCRAPE_INTERVAL: Final = "30s"

TOPIC_NAME_PATTERN: Final = r"^[a-zA-Z0-9._-]+$"
HTTP_PATH_PATTERN: Final = r"^/[A-Za-z0-9._~/-]*$"
DNS_LABEL_PATTERN: Final = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
DNS_SUBDOMAIN_PATTERN: Final = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
HOST_PATTERN: Final = r"^(\*\.)?[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
SECRET_KEY_PATTERN: Final = r"^[-._a-zA-Z0-9]+$"
DURATION_PATTERN: Final = r"^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$"
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

AUDIENCES: Final = ("organization", "user", "broadcast")
WITHOUT_USER_RULES: Final = ("organization", "reject")
DELETION_POLICIES: Final = ("Retain", "Delete")
AUTH_MODES: Final = ("jwt", "none")
PULL_POLICIES: Final = ("Always", "IfNotPresent", "Never")

Schema = dict[str, Any]


# --- schema builders ---------------------------------------------------------------


def rule(expr: str, message: str, *, field_path: str | None = None) -> Schema:
    """One CEL validation rule with the message users see when it fails."""
    out: Schema = {"rule": expr, "message": message}
    if field_path is not None:
        out["fieldPath"] = field_path
    return out


def string(
    desc: str,
    *,
    default: str | None = None,
    pattern: str | None = None,
    enum: tuple[str, ...] | None = None,
    min_length: int | None = None,
    max_length: int | None = None,
    fmt: str | None = None,
) -> Schema:
    out: Schema = {"type": "string", "description": desc}
    if enum is not None:
        out["enum"] = list(enum)
    if pattern is not None:
        out["pattern"] = pattern
    if min_length is not None:
        out["minLength"] = min_length
    if max_length is not None:
        out["maxLength"] = max_length
    if fmt is not None:
        out["format"] = fmt
    if default is not None:
        out["default"] = default
    return out


def integer(
    desc: str,
    *,
    minimum: int | None = None,
    maximum: int | None = None,
    default: int | None = None,
) -> Schema:
    out: Schema = {"type": "integer", "description": desc}
    if minimum is not None:
        out["minimum"] = minimum
    if maximum is not None:
        out["maximum"] = maximum
    if default is not None:
        out["default"] = default
    return out


def number(
    desc: str,
    *,
    minimum: float | None = None,
    maximum: float | None = None,
    default: float | None = None,
) -> Schema:
    out: Schema = {"type": "number", "description": desc}
    if minimum is not None:
        out["minimum"] = minimum
    if maximum is not None:
        out["maximum"] = maximum
    if default is not None:
        out["default"] = default
    return out


def boolean(desc: str, *, default: bool | None = None) -> Schema:
    out: Schema = {"type": "boolean", "description": desc}
    if default is not None:
        out["default"] = default
    return out


def obj(
    desc: str,
    props: dict[str, Schema],
    *,
    required: tuple[str, ...] = (),
    rules: tuple[Schema, ...] = (),
    default: dict[str, Any] | None = None,
) -> Schema:
    out: Schema = {"type": "object", "description": desc, "properties": props}
    if required:
        out["required"] = list(required)
    if rules:
        out["x-kubernetes-validations"] = list(rules)
    if default is not None:
        out["default"] = default
    return out


def array(
    desc: str,
    items: Schema,
    *,
    map_keys: tuple[str, ...] | None = None,
    list_type: str | None = None,
    min_items: int | None = None,
    max_items: int | None = None,
    rules: tuple[Schema, ...] = (),
) -> Schema:
    out: Schema = {"type": "array", "description": desc, "items": items}
    if map_keys is not None:
        out["x-kubernetes-list-type"] = "map"
        out["x-kubernetes-list-map-keys"] = list(map_keys)
    elif list_type is not None:
        out["x-kubernetes-list-type"] = list_type
    if min_items is not None:
        out["minItems"] = min_items
    if max_items is not None:
        out["maxItems"] = max_items
    if rules:
        out["x-kubernetes-validations"] = list(rules)
    return out


def string_map(desc: str, *, value_desc: str, max_properties: int = 64) -> Schema:
    return {
        "type": "object",
        "description": desc,
        "additionalProperties": {"type": "string", "description": value_desc},
        "maxProperties": max_properties,
    }


def quantity_map(desc: str) -> Schema:
    return {
        "type": "object",
        "description": desc,
        "additionalProperties": {
            "description": "A Kubernetes quantity, for example 250m or 512Mi.",
            "anyOf": [{"type": "integer"}, {"type": "string"}],
            "x-kubernetes-int-or-string": True,
            "pattern": QUANTITY_PATTERN,
        },
    }


def secret_key_ref(desc: str, *, key_desc: str) -> Schema:
    return obj(
        desc,
        {
            "name": string(
                "Name of a Secret in the channel's namespace.",
                pattern=DNS_SUBDOMAIN_PATTERN,
                max_length=253,
            ),
            "key": string(key_desc, pattern=SECRET_KEY_PATTERN, max_length=253),
        },
        required=("name", "key"),
    )


def _cel_list(items: tuple[str, ...]) -> str:
    return "[" + ", ".join(f"'{item}'" for item in items) + "]"


#: Pairs of ``spec.workers.limits`` keys the worker requires in order (small <= large):
#: the worker settings model's own rule.
LIMIT_ORDER: Final = LimitsSettings.ORDER
#: ``spec.routing``: every key of the worker's routing settings.
ROUTING_KEYS: Final = tuple(
    info.alias or name for name, info in RoutingSettings.model_fields.items()
)
#: ``spec.workers.resume``: every key of the worker's resume settings.
RESUME_KEYS: Final = tuple(info.alias or n for n, info in ResumeSettings.model_fields.items())
#: The worker's limits a channel may set (``spec.workers.limits``), in schema order.
SPEC_LIMIT_KEYS: Final = (
    "maxConnections",
    "queueMaxEvents",
    "queueMaxBytes",
    "maxClientFrameBytes",
    "maxRecordBytes",
    "batchMaxEvents",
    "batchMaxBytes",
)


def model_properties(
    model: type[BaseModel],
    keys: tuple[str, ...],
    *,
    defaults: tuple[str, ...] = (),
    whole: tuple[str, ...] = (),
) -> dict[str, Schema]:
    """The OpenAPI schema of ``keys`` (camelCase) of a settings model: type, bounds,
    pattern and description from the model's fields. No default unless named in
    ``defaults``: an unset key is the worker's default. Number keys named in ``whole``
    are integers in the spec."""
    by_alias = {info.alias or name: info for name, info in model.model_fields.items()}
    out: dict[str, Schema] = {}
    for key in keys:
        info = by_alias[key]
        base, metadata = _unwrap(info.annotation, list(info.metadata))
        desc = info.description or ""
        default = info.default if key in defaults else None
        limits = {
            name: next(
                (getattr(m, name) for m in metadata if getattr(m, name, None) is not None), None
            )
            for name in ("ge", "le", "max_length", "pattern")
        }
        if base is bool:
            out[key] = boolean(desc, default=default)
        elif base is int or (base is float and key in whole):
            out[key] = integer(desc, minimum=limits["ge"], maximum=limits["le"], default=default)
        elif base is str:
            extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
            if extra.get("pattern") is not None:
                limits["pattern"] = extra["pattern"]
            text = any(getattr(m, "func", None) is not_blank for m in metadata)
            out[key] = string(
                desc,
                default=default,
                pattern=NOT_BLANK_PATTERN if text else limits["pattern"],
                min_length=1 if text else None,
                max_length=limits["max_length"],
            )
        else:
            raise TypeError(f"{model.__name__}.{key}: {base!r} is not generated yet")
    return out


def model_rules(model: type[BaseModel]) -> tuple[Schema, ...]:
    """The model's cross-field rules as CEL (its ``CEL`` pairs of rule and message)."""
    pairs: tuple[tuple[str, str], ...] = getattr(model, "CEL", ())
    return tuple(rule(expr, message) for expr, message in pairs)


def _unwrap(annotation: Any, metadata: list[Any]) -> tuple[Any, list[Any]]:
    """The scalar type under ``Optional`` and ``Annotated``, with all the metadata."""
    origin = typing.get_origin(annotation)
    if origin in (types.UnionType, typing.Union):
        inner = [a for a in typing.get_args(annotation) if a is not type(None)]
        return _unwrap(inner[0], metadata)
    if origin is typing.Annotated:
        base, *extra = typing.get_args(annotation)
        return _unwrap(base, [*metadata, *extra])
    return annotation, metadata


def _not_above(small: str, large: str) -> Schema:
    a, b = LIMIT_DEFAULTS[small], LIMIT_DEFAULTS[large]
    return rule(
        f"(has(self.{small}) ? self.{small} : {a}) <= (has(self.{large}) ? self.{large} : {b})",
        f"{small} must not exceed {large} (unset: the worker defaults, {small} {a}, {large} {b})",
        field_path=f".{small}",
    )


# --- spec --------------------------------------------------------------------------


def _kafka() -> Schema:
    credentials = obj(
        "Secret holding the SASL username and password. Mounted as files, never inlined.",
        {
            "name": string(
                "Name of a Secret in the channel's namespace.",
                pattern=DNS_SUBDOMAIN_PATTERN,
                max_length=253,
            ),
            "usernameKey": string(
                "Key of the username in the Secret.",
                default="username",
                pattern=SECRET_KEY_PATTERN,
                max_length=253,
            ),
            "passwordKey": string(
                "Key of the password in the Secret.",
                default="password",
                pattern=SECRET_KEY_PATTERN,
                max_length=253,
            ),
        },
        required=("name",),
        rules=(
            rule(
                "!has(self.usernameKey) || !has(self.passwordKey) || "
                "self.usernameKey != self.passwordKey",
                "usernameKey and passwordKey must differ",
            ),
        ),
    )
    tls = obj(
        "Secret holding the CA bundle (and, for mutual TLS, a client certificate and key).",
        {
            "name": string(
                "Name of a Secret in the channel's namespace.",
                pattern=DNS_SUBDOMAIN_PATTERN,
                max_length=253,
            ),
            "caKey": string(
                "Key of the PEM CA bundle in the Secret.",
                default="ca.crt",
                pattern=SECRET_KEY_PATTERN,
                max_length=253,
            ),
            "certKey": string(
                "Key of the PEM client certificate (mutual TLS only; set with keyKey).",
                pattern=SECRET_KEY_PATTERN,
                max_length=253,
            ),
            "keyKey": string(
                "Key of the PEM client private key (mutual TLS only; set with certKey).",
                pattern=SECRET_KEY_PATTERN,
                max_length=253,
            ),
        },
        required=("name",),
        rules=(
            rule("has(self.certKey) == has(self.keyKey)", "set certKey and keyKey together"),
            rule(
                "!has(self.certKey) || !has(self.keyKey) || (self.certKey != self.keyKey"
                " && (!has(self.caKey) || (self.caKey != self.certKey"
                " && self.caKey != self.keyKey)))",
                "caKey, certKey and keyKey must differ",
            ),
        ),
    )
    security = obj(
        "How the workers and the operator authenticate to Kafka.",
        {
            "protocol": string(
                "Kafka security.protocol.", enum=SECURITY_PROTOCOLS, default="PLAINTEXT"
            ),
            "saslMechanism": string(
                "SASL mechanism; required when protocol is SASL_PLAINTEXT or SASL_SSL.",
                enum=SASL_MECHANISMS,
            ),
            "credentialsSecret": credentials,
            "tlsSecret": tls,
        },
        default={},
        rules=(
            rule(
                "!(has(self.protocol) && self.protocol.startsWith('SASL')) || "
                "(has(self.saslMechanism) && has(self.credentialsSecret))",
                "SASL protocols need saslMechanism and credentialsSecret",
            ),
            rule(
                "!has(self.tlsSecret) || (has(self.protocol) && self.protocol.endsWith('SSL'))",
                "tlsSecret needs protocol SSL or SASL_SSL",
            ),
        ),
    )
    return obj(
        "The Kafka cluster the channel's topics live in.",
        {
            "bootstrapServers": string(
                "Comma-separated host:port list of Kafka brokers.",
                pattern=NOT_BLANK_PATTERN,
                min_length=1,
                max_length=2048,
            ),
            "clientId": string(
                "Kafka client.id of the workers (quotas and broker logs); defaults to "
                "clarion-<namespace>-<name>.",
                pattern=NOT_BLANK_PATTERN,
                min_length=1,
                max_length=255,
            ),
            "security": security,
        },
        required=("bootstrapServers",),
    )


def _topics() -> Schema:
    topic = obj(
        "One Kafka topic the channel owns and streams.",
        {
            "name": string(
                "Kafka topic name (cluster-wide: two channels claiming it conflict, the "
                "older wins).",
                pattern=TOPIC_NAME_PATTERN,
                min_length=1,
                max_length=249,
            ),
            "partitions": integer(
                "Partition count. Can only grow: a decrease is reported as NotSupported "
                "and the topic is left alone until the spec is reverted.",
                minimum=1,
                maximum=10000,
                default=DEFAULT_PARTITIONS,
            ),
            "replicationFactor": integer(
                "Replication factor at creation. Unset uses the broker's "
                "default.replication.factor (as Strimzi does). Changes on an existing "
                "topic are reported (ReplicationFactorChangeNotApplied), never applied.",
                minimum=1,
                maximum=32,
            ),
            "config": string_map(
                "Topic config overrides (retention.ms, cleanup.policy, ...). The whole set "
                "is authoritative: overrides made outside this resource are reverted.",
                value_desc="Config value, as a string (Kafka stores strings).",
                max_properties=100,
            ),
            "audience": string(
                "Who receives this topic's events: members of the event's organization, the "
                "event's user only, or every connected client.",
                enum=AUDIENCES,
                default="organization",
            ),
            "withoutUser": string(
                "Topics of audience user only: what an event that names no user becomes. "
                "organization (the workers' default): delivered to every member of the "
                "organization it names, counted in clarion_worker_userless_events_total; "
                "reject: skipped as a missing_user bad record.",
                enum=WITHOUT_USER_RULES,
            ),
            "deletionPolicy": string(
                "What happens to the Kafka topic when the channel is deleted.",
                enum=DELETION_POLICIES,
                default="Retain",
            ),
        },
        required=("name",),
        rules=(
            rule(
                "self.name != '.' && self.name != '..'",
                "'.' and '..' are not topic names",
                field_path=".name",
            ),
            rule(
                "!has(self.withoutUser) || (has(self.audience) && self.audience == 'user')",
                "withoutUser is only for topics of audience user",
                field_path=".withoutUser",
            ),
        ),
    )
    return array(
        "Kafka topics the channel streams; at least one, names unique.",
        topic,
        map_keys=("name",),
        min_items=1,
        max_items=64,
    )


def model_description(model: type[BaseModel]) -> str:
    """The first paragraph of the model's docstring, on one line."""
    return " ".join((model.__doc__ or "").split("\n\n")[0].split())


def _routing() -> Schema:
    return obj(
        model_description(RoutingSettings),
        model_properties(RoutingSettings, ROUTING_KEYS, defaults=("organizationFromKey",)),
        default={},
        rules=model_rules(RoutingSettings),
    )


def _server() -> Schema:
    return obj(
        "Client-facing endpoints of the workers.",
        {
            "websocketPath": string(
                "HTTP path of the WebSocket endpoint; starts with '/'.",
                default=DEFAULT_WEBSOCKET_PATH,
                pattern=HTTP_PATH_PATTERN,
                max_length=256,
            ),
            "sse": obj(
                "Server-Sent Events endpoint, for clients that cannot use WebSocket.",
                {
                    "enabled": boolean("Serve SSE.", default=True),
                    "path": string(
                        "HTTP path of the SSE endpoint; starts with '/'.",
                        default=DEFAULT_SSE_PATH,
                        pattern=HTTP_PATH_PATTERN,
                        max_length=256,
                    ),
                },
                default={},
            ),
            "sessionAffinityTimeoutSeconds": integer(
                "ClientIP affinity timeout of the Service when the ingress is disabled "
                "(keeps a reconnecting client on the replica holding its recent events).",
                minimum=1,
                maximum=86400,
                default=DEFAULT_AFFINITY_TIMEOUT,
            ),
        },
        default={},
        rules=(
            # The worker refuses equal paths even with SSE off, so the rule holds then too;
            # unset paths are the defaults.
            rule(
                f"(has(self.websocketPath) ? self.websocketPath : '{DEFAULT_WEBSOCKET_PATH}') != "
                f"(has(self.sse) && has(self.sse.path) ? self.sse.path : '{DEFAULT_SSE_PATH}')",
                "websocketPath and sse.path must differ (even with SSE disabled)",
            ),
        ),
    )


def _auth() -> Schema:
    jwks = obj(
        "JSON Web Key Set for asymmetric algorithms: a URL or a Secret, exactly one.",
        {
            "url": string(
                "HTTPS URL of the JWKS document.",
                pattern=r"^https?://",
                max_length=2048,
            ),
            "secret": secret_key_ref(
                "Secret holding the JWKS document (mounted as a file).",
                key_desc="Key of the JWKS JSON document in the Secret.",
            ),
        },
        rules=(rule("has(self.url) != has(self.secret)", "set exactly one of url and secret"),),
    )
    return obj(
        "Client authentication. mode is required: 'none' (no authentication, every client "
        "sees broadcast events only) must be chosen explicitly.",
        {
            "mode": string("jwt: clients present a JWT; none: no authentication.", enum=AUTH_MODES),
            "issuer": string(
                "Expected iss claim.", pattern=NOT_BLANK_PATTERN, min_length=1, max_length=2048
            ),
            "audience": string(
                "Expected aud claim.", pattern=NOT_BLANK_PATTERN, min_length=1, max_length=2048
            ),
            "algorithms": array(
                "Accepted signing algorithms: HS* with hmacSecret, the others with jwks.",
                string("A JWS algorithm.", enum=JWT_ALGORITHMS),
                list_type="set",
                max_items=16,
            ),
            "hmacSecret": secret_key_ref(
                "Secret holding the shared HMAC key (HS* algorithms).",
                key_desc="Key of the HMAC key in the Secret.",
            ),
            "jwks": jwks,
            "organizationsClaim": string(
                "Claim listing the organizations the user belongs to.",
                pattern=NOT_BLANK_PATTERN,
                min_length=1,
                max_length=253,
            ),
            "userClaim": string(
                "Claim holding the user id.",
                pattern=NOT_BLANK_PATTERN,
                min_length=1,
                max_length=253,
            ),
            "allowedOrigins": array(
                "Origins allowed to open a WebSocket (browser CSWSH protection).",
                string("An origin such as https://app.example.com.", min_length=1, max_length=2048),
                list_type="set",
                max_items=64,
            ),
            "leewaySeconds": integer("Clock skew tolerated on exp/nbf.", minimum=0, maximum=600),
        },
        required=("mode",),
        rules=(
            rule(
                "self.mode != 'jwt' || (has(self.hmacSecret) != has(self.jwks))",
                "mode jwt needs exactly one of hmacSecret and jwks",
            ),
            rule(
                "self.mode != 'jwt' || !has(self.algorithms) || (has(self.hmacSecret) ? "
                f"self.algorithms.all(a, a in {_cel_list(JWT_ALGORITHMS_HMAC)}) : "
                f"self.algorithms.all(a, !(a in {_cel_list(JWT_ALGORITHMS_HMAC)})))",
                "algorithms: HS256, HS384 and HS512 need hmacSecret, the others need jwks",
                field_path=".algorithms",
            ),
        ),
    )


def _workers() -> Schema:
    autoscaling = obj(
        "Horizontal autoscaling; its presence turns it on and the HorizontalPodAutoscaler "
        "then owns the replica count.",
        {
            "minReplicas": integer(
                "Lower bound. A new Deployment starts at 1 replica (the HorizontalPodAutoscaler "
                "owns the count and raises it on its next sync); WorkersReady and Ready stay "
                "False until this many workers are ready.",
                minimum=1,
                maximum=1000,
                default=DEFAULT_MIN_REPLICAS,
            ),
            "maxReplicas": integer(
                "Upper bound.", minimum=1, maximum=1000, default=DEFAULT_MAX_REPLICAS
            ),
            "targetCPUUtilizationPercentage": integer(
                "Average CPU utilization target, percent of the CPU request.",
                minimum=1,
                maximum=100,
                default=DEFAULT_TARGET_CPU,
            ),
            "targetConnectionsPerPod": integer(
                "Average open connections per pod (needs a custom metrics adapter serving "
                "the worker's connection gauge).",
                minimum=1,
                maximum=1000000,
            ),
        },
        rules=(
            rule(
                "!has(self.minReplicas) || !has(self.maxReplicas) || "
                "self.minReplicas <= self.maxReplicas",
                "minReplicas must not exceed maxReplicas",
            ),
        ),
    )
    limits = obj(
        "Per-worker limits; unset keys use the worker's defaults (docs/worker-config.md).",
        model_properties(LimitsSettings, SPEC_LIMIT_KEYS),
        default={},
        # The worker refuses these pairs (unset keys are its defaults): every replica of
        # such a channel would exit at start.
        rules=tuple(_not_above(small, large) for small, large in LIMIT_ORDER),
    )
    resume = obj(
        model_description(ResumeSettings),
        model_properties(ResumeSettings, RESUME_KEYS, whole=("maxReplayAgeSeconds",)),
        default={},
    )
    resources = obj(
        "Compute resources of the worker container. Defaults: requests cpu 250m, memory "
        "256Mi; limits memory 512Mi. CPU autoscaling needs a CPU request.",
        {
            "requests": quantity_map("Minimum resources (cpu, memory)."),
            "limits": quantity_map("Maximum resources (cpu, memory)."),
        },
    )
    return obj(
        "The broadcast worker Deployment.",
        {
            "image": string(
                "Worker container image.", default=DEFAULT_IMAGE, min_length=1, max_length=1024
            ),
            "imagePullPolicy": string(
                "Image pull policy.", enum=PULL_POLICIES, default="IfNotPresent"
            ),
            "replicas": integer(
                "Worker replicas when autoscaling is not set (the scale subresource "
                "writes here). Frozen while autoscaling is set.",
                minimum=0,
                maximum=1000,
                default=DEFAULT_REPLICAS,
            ),
            "autoscaling": autoscaling,
            "resources": resources,
            "limits": limits,
            "drainWindowSeconds": integer(
                "On shutdown, connections are closed in batches over this window so "
                "clients reconnect spread out; the pod's grace period is derived from it.",
                minimum=0,
                maximum=3600,
                default=DEFAULT_DRAIN_WINDOW_SECONDS,
            ),
            "heartbeatSeconds": integer(
                "Application-level ping interval (mobile clients cannot see protocol "
                "pings); keep it far below the ingress timeouts.",
                minimum=1,
                maximum=600,
            ),
            "heartbeatTimeoutSeconds": integer(
                "Time allowed for a pong before the connection is closed.",
                minimum=1,
                maximum=600,
            ),
            "resume": resume,
        },
        default={},
        rules=(
            rule(
                "!has(self.autoscaling) || !has(oldSelf.autoscaling) || "
                "!has(self.replicas) || !has(oldSelf.replicas) || "
                "self.replicas == oldSelf.replicas",
                "replicas cannot change while autoscaling is set: the "
                "HorizontalPodAutoscaler owns the count; change autoscaling instead",
                field_path=".replicas",
            ),
            # Given resources are taken as written (the defaults hold a CPU request).
            rule(
                "!has(self.autoscaling) || !has(self.resources) || "
                "(has(self.resources.requests) && 'cpu' in self.resources.requests) || "
                "(has(self.resources.limits) && 'cpu' in self.resources.limits)",
                "resources.requests.cpu is required with autoscaling (CPU utilization is a "
                "percentage of the request)",
                field_path=".resources",
            ),
        ),
    )


def _ingress() -> Schema:
    return obj(
        "Deprecated: use exposure. An ingress-nginx Ingress in front of the workers (read "
        "as exposure type ingress, profile nginx), with cookie stickiness and "
        "timeouts suited to long-lived connections.",
        {
            "enabled": boolean("Create the Ingress.", default=False),
            "className": string(
                "IngressClass name.", default=DEFAULT_INGRESS_CLASS, min_length=1, max_length=253
            ),
            "host": string(
                "Public host name; required with tlsSecretName.",
                pattern=HOST_PATTERN,
                max_length=253,
            ),
            "tlsSecretName": string(
                "Secret holding the TLS certificate for host; enables TLS (wss://).",
                pattern=DNS_SUBDOMAIN_PATTERN,
                max_length=253,
            ),
            "stickyCookie": obj(
                "Affinity cookie keeping a client on the replica holding its recent events.",
                {
                    "name": string(
                        "Cookie name.",
                        default=DEFAULT_STICKY_COOKIE,
                        pattern=r"^[A-Za-z0-9_-]+$",
                        max_length=64,
                    ),
                    "maxAgeSeconds": integer(
                        "Cookie lifetime.",
                        minimum=1,
                        maximum=31536000,
                        default=DEFAULT_STICKY_MAX_AGE,
                    ),
                },
                default={},
            ),
            "annotations": string_map(
                "Extra Ingress annotations; they override the operator's.",
                value_desc="Annotation value.",
            ),
        },
        default={},
        rules=(rule("!has(self.tlsSecretName) || has(self.host)", "tlsSecretName needs host"),),
    )


def _exposure() -> Schema:
    return obj(
        "How clients reach the workers: a Gateway API HTTPRoute, an Ingress for a named "
        "class and controller, or neither. Replaces the deprecated spec.ingress (do not set "
        "both).",
        {
            "type": string(
                "gateway renders an HTTPRoute, ingress an Ingress, none neither.",
                enum=EXPOSURE_TYPES,
            ),
            "hostnames": array(
                "Public host names (HTTPRoute hostnames, one Ingress rule each); the first "
                "without a wildcard is status.endpoint's host.",
                string(
                    "A DNS name, optionally with a leading '*.'.",
                    pattern=HOST_PATTERN,
                    max_length=253,
                ),
                list_type="set",
                max_items=MAX_HOSTNAMES,
            ),
            "stickyCookie": obj(
                "Affinity cookie keeping a client on the replica holding its recent events "
                "(an optimisation: resume works on any replica).",
                {
                    "name": string(
                        "Cookie name.",
                        default=DEFAULT_STICKY_COOKIE,
                        pattern=r"^[A-Za-z0-9_-]+$",
                        max_length=64,
                    ),
                    "maxAgeSeconds": integer(
                        "Cookie lifetime.",
                        minimum=1,
                        maximum=31536000,
                        default=DEFAULT_STICKY_MAX_AGE,
                    ),
                },
                default={},
            ),
            "streamTimeoutSeconds": integer(
                "Idle timeout asked of the ingress controller for WebSocket and SSE streams "
                "(where the profile can say it); keep it far above the heartbeat interval.",
                minimum=MIN_STREAM_TIMEOUT,
                maximum=86400,
                default=DEFAULT_STREAM_TIMEOUT,
            ),
            "gateway": obj(
                "The Gateway the HTTPRoute attaches to (type gateway).",
                {
                    "name": string("Gateway name.", pattern=DNS_SUBDOMAIN_PATTERN, max_length=253),
                    "namespace": string(
                        "Gateway namespace; the channel's when empty.",
                        pattern=DNS_LABEL_PATTERN,
                        max_length=63,
                    ),
                    "sectionName": string(
                        "Listener of the Gateway to attach to; all of them when empty.",
                        pattern=DNS_SUBDOMAIN_PATTERN,
                        max_length=253,
                    ),
                    "tls": boolean(
                        "The listener terminates TLS (status.endpoint then says wss://).",
                        default=False,
                    ),
                },
                required=("name",),
            ),
            "ingress": obj(
                "The Ingress (type ingress) and the controller that serves its class.",
                {
                    "className": string("IngressClass name.", min_length=1, max_length=253),
                    "profile": string(
                        "Controller serving className, whose own annotations the operator "
                        "writes for cookie stickiness, stream timeouts and unbuffered "
                        "responses: traefik, haproxy (HAProxy Kubernetes Ingress), nginx "
                        "(ingress-nginx, retired in March 2026: existing clusters only) or "
                        "generic (only the annotations given here).",
                        enum=INGRESS_PROFILES,
                    ),
                    "tlsSecretName": string(
                        "Secret holding the TLS certificate for hostnames (wss://).",
                        pattern=DNS_SUBDOMAIN_PATTERN,
                        max_length=253,
                    ),
                    "annotations": string_map(
                        "Extra Ingress annotations; they override the operator's.",
                        value_desc="Annotation value.",
                    ),
                },
                required=("className", "profile"),
            ),
        },
        required=("type",),
        rules=(
            rule("self.type != 'gateway' || has(self.gateway)", "type gateway needs gateway"),
            rule("self.type != 'ingress' || has(self.ingress)", "type ingress needs ingress"),
            rule(
                "!has(self.ingress) || !has(self.ingress.tlsSecretName) || "
                "(has(self.hostnames) && size(self.hostnames) > 0)",
                "ingress.tlsSecretName needs hostnames",
            ),
        ),
    )


def _monitoring() -> Schema:
    return obj(
        "Prometheus scraping. Without a ServiceMonitor the pods carry prometheus.io "
        "annotations instead.",
        {
            "serviceMonitor": obj(
                "A prometheus-operator ServiceMonitor (created only when its CRD exists).",
                {
                    "enabled": boolean("Create the ServiceMonitor.", default=False),
                    "labels": string_map(
                        "Extra labels, for a Prometheus serviceMonitorSelector.",
                        value_desc="Label value.",
                    ),
                },
                default={},
            ),
            "interval": string(
                "Scrape interval.", default=DEFAULT_SCRAPE_INTERVAL, pattern=DURATION_PATTERN
            ),
        },
        default={},
    )


def spec_schema() -> Schema:
    """The ``spec`` schema."""
    return obj(
        "Desired state: topics to own in Kafka and workers that stream them to clients.",
        {
            "kafka": _kafka(),
            "topics": _topics(),
            "routing": _routing(),
            "server": _server(),
            "auth": _auth(),
            "workers": _workers(),
            "ingress": _ingress(),
            "exposure": _exposure(),
            "monitoring": _monitoring(),
        },
        required=("kafka", "topics", "auth"),
        rules=(
            rule(
                "!has(self.exposure) || !has(self.ingress) || !has(self.ingress.enabled) "
                "|| !self.ingress.enabled",
                "set spec.exposure or the deprecated spec.ingress, not both",
            ),
        ),
    )


# --- status ------------------------------------------------------------------------


def status_schema() -> Schema:
    """The ``status`` schema: declared field by field (kopf and kubectl rely on it)."""
    condition = obj(
        "A condition in Kubernetes API conventions.",
        {
            "type": string(
                "Ready, TopicsReady, WorkersReady, Exposed or Monitored.", max_length=316
            ),
            "status": string("True, False or Unknown.", enum=("True", "False", "Unknown")),
            "reason": string("CamelCase reason, machine-readable.", max_length=1024),
            "message": string("Human-readable details.", max_length=32768),
            "lastTransitionTime": string("When status last changed.", fmt="date-time"),
            "observedGeneration": integer(
                "metadata.generation the condition was computed for.", minimum=0
            ),
        },
        required=("type", "status"),
    )
    topic = obj(
        "Observed state of one topic.",
        {
            "name": string("Topic name."),
            "partitions": integer("Partition count in Kafka (or to be created)."),
            "replicationFactor": integer("Replication factor in Kafka."),
            "configInSync": boolean("Dynamic config overrides equal the spec."),
            "state": string(
                "Ready, Creating, Updating, NotSupported, ReplicationFactorChangeNotApplied, "
                "ResourceConflict or Error."
            ),
            "reason": string("CamelCase reason when not Ready."),
            "message": string("Details when not Ready."),
        },
        required=("name",),
    )
    workers = obj(
        "Observed state of the worker Deployment.",
        {
            "desired": integer("Replicas wanted."),
            "ready": integer("Replicas ready."),
            "updated": integer("Replicas running the current template."),
            "available": integer("Replicas available."),
        },
    )
    return obj(
        "Observed state, written by the operator.",
        {
            "observedGeneration": integer("metadata.generation last reconciled.", minimum=0),
            "conditions": array(
                "Ready, TopicsReady, WorkersReady, and Exposed and Monitored when they apply.",
                condition,
                map_keys=("type",),
            ),
            "topics": array("Per-topic state.", topic, map_keys=("name",)),
            "topicsSummary": string("Ready topics over desired topics, e.g. 2/2."),
            "workers": workers,
            "workersSummary": string("Ready workers over desired workers, e.g. 2/2."),
            "endpoint": string("URL clients connect to."),
            "replicas": integer("Current worker replicas (scale subresource)."),
            "selector": string("Label selector of the worker pods (scale subresource)."),
            "configHash": string("sha256 of the rendered worker settings."),
            "kopf": {
                "type": "object",
                "description": "Handler progress kept by the kopf framework; not for users.",
                "x-kubernetes-preserve-unknown-fields": True,
            },
        },
    )


def printer_columns() -> list[Schema]:
    return [
        {
            "name": "Ready",
            "type": "string",
            "description": "Ready condition status.",
            "jsonPath": '.status.conditions[?(@.type=="Ready")].status',
        },
        {
            "name": "Reason",
            "type": "string",
            "description": "Ready condition reason.",
            "jsonPath": '.status.conditions[?(@.type=="Ready")].reason',
            "priority": 1,
        },
        {
            "name": "Topics",
            "type": "string",
            "description": "Ready topics over desired topics.",
            "jsonPath": ".status.topicsSummary",
        },
        {
            "name": "Workers",
            "type": "string",
            "description": "Ready workers over desired workers.",
            "jsonPath": ".status.workersSummary",
        },
        {
            "name": "Endpoint",
            "type": "string",
            "description": "URL clients connect to.",
            "jsonPath": ".status.endpoint",
        },
        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
    ]


def open_api_schema() -> Schema:
    return {
        "type": "object",
        "description": "A realtime channel: Kafka topics streamed to WebSocket and SSE clients "
        "by horizontally scaled workers.",
        "properties": {
            "apiVersion": {"type": "string", "description": "API version."},
            "kind": {"type": "string", "description": "RealtimeChannel."},
            # Structural schemas allow nothing but the type on metadata.
            "metadata": {"type": "object"},
            "spec": spec_schema(),
            "status": status_schema(),
        },
        "required": ["spec"],
        "x-kubernetes-validations": [
            rule(
                f"size(self.metadata.name) <= {MAX_NAME_LENGTH} && "
                "self.metadata.name.matches('^[a-z]([-a-z0-9]*[a-z0-9])?$')",
                f"name must be a DNS-1035 label of at most {MAX_NAME_LENGTH} characters "
                "(it prefixes the worker objects' names)",
            )
        ],
    }


def crd_manifest() -> dict[str, Any]:
    """The whole CustomResourceDefinition, as a plain dict."""
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": CRD_NAME,
            "labels": {
                "app.kubernetes.io/name": "clarion",
                "app.kubernetes.io/part-of": "clarion",
                "app.kubernetes.io/component": "crd",
            },
        },
        "spec": {
            "group": GROUP,
            "names": {
                "kind": KIND,
                "listKind": f"{KIND}List",
                "plural": PLURAL,
                "singular": SINGULAR,
                "shortNames": list(SHORT_NAMES),
                "categories": ["clarion"],
            },
            "scope": "Namespaced",
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "schema": {"openAPIV3Schema": open_api_schema()},
                    "subresources": {
                        "status": {},
                        "scale": {
                            "specReplicasPath": ".spec.workers.replicas",
                            "statusReplicasPath": ".status.replicas",
                            "labelSelectorPath": ".status.selector",
                        },
                    },
                    "additionalPrinterColumns": printer_columns(),
                }
            ],
        },
    }


_HEADER: Final = "# Generated by clarion_operator.core.crd.render_yaml(); do not edit by hand.\n"


def render_yaml() -> str:
    """Deterministic YAML text of :func:`crd_manifest` (insertion order, no aliases)."""

    class _NoAliasDumper(yaml.SafeDumper):
        def ignore_aliases(self, data: object) -> bool:
            return True

    body = yaml.dump(
        crd_manifest(),
        Dumper=_NoAliasDumper,
        sort_keys=False,
        default_flow_style=False,
        allow_unicode=True,
        width=100,
    )
    return _HEADER + body
