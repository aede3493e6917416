"""The worker settings document: what the operator writes and the worker reads.

Keys are camelCase, as in the ``RealtimeChannel`` spec they come from. Every key but
``apiVersion``, ``channel``, ``kafka.bootstrapServers`` and ``topics`` is optional;
the worker's settings loader owns the defaults and validation, and
docs/worker-config.md lists them. Secrets never appear in the document: it names
files (mounted Secrets) that hold them.
"""

from __future__ import annotations

from types import MappingProxyType
from typing import Final, Literal, NotRequired, TypedDict

CONFIG_API_VERSION: Final = "clarion.dev/worker-config/v1"
#: File name of the document inside the ConfigMap and the mounted volume.
CONFIG_FILENAME: Final = "worker.json"
#: The port every worker listens on for WebSocket, SSE, probes and metrics.
WORKER_PORT: Final = 8080
HEALTH_PATH: Final = "/healthz"
READY_PATH: Final = "/readyz"
METRICS_PATH: Final = "/metrics"

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

#: The worker's defaults for the ``limits`` keys that its cross-field rules compare
#: (``batchMaxEvents <= queueMaxEvents``, ``maxRecordBytes <= queueMaxBytes``): the
#: operator refuses a channel whose values, with these filled in, the worker would refuse.
#: A test checks they equal the worker's own defaults.
LIMIT_DEFAULTS: Final = MappingProxyType(
    {
        "queueMaxEvents": 1000,
        "queueMaxBytes": 1024 * 1024,
        "maxRecordBytes": 1024 * 1024,
        "batchMaxEvents": 64,
    }
)
#: Smallest ``limits.maxClientFrameBytes`` the worker accepts.
MIN_CLIENT_FRAME_BYTES: Final = 16

Audience = Literal["organization", "user", "broadcast"]
AUDIENCES: Final[tuple[Audience, ...]] = ("organization", "user", "broadcast")
#: What a ``user`` topic does with an event that names no user: deliver it to the
#: members of the organization it names (counted apart), or skip it as a bad record.
WithoutUser = Literal["organization", "reject"]
WITHOUT_USER_RULES: Final[tuple[WithoutUser, ...]] = ("organization", "reject")


class KafkaSecurityDoc(TypedDict, total=False):
    protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
    saslMechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]
    usernameFile: str
    passwordFile: str
    caFile: str
    certFile: str
    keyFile: str


class KafkaDoc(TypedDict):
    bootstrapServers: str
    clientId: NotRequired[str]
    metadataRefreshSeconds: NotRequired[float]
    security: NotRequired[KafkaSecurityDoc]


class TopicDoc(TypedDict):
    name: str
    audience: Audience
    withoutUser: NotRequired[WithoutUser]


class RoutingDoc(TypedDict, total=False):
    """Where each record's routing facts are found: JSON fields, or headers and key."""

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


class ServerDoc(TypedDict, total=False):
    websocketPath: str
    ssePath: str
    sseEnabled: bool
    directWrites: bool


class AuthDoc(TypedDict, total=False):
    mode: Literal["jwt", "none"]
    algorithms: list[str]
    issuer: str
    audience: str
    hmacSecretFile: str
    jwksUrl: str
    jwksFile: str
    organizationsClaim: str
    userClaim: str
    allowedOrigins: list[str]
    leewaySeconds: int


class LimitsDoc(TypedDict, total=False):
    maxConnections: int
    queueMaxEvents: int
    queueMaxBytes: int
    maxClientFrameBytes: int
    maxRecordBytes: int
    batchMaxEvents: int
    batchMaxBytes: int


class HeartbeatDoc(TypedDict, total=False):
    intervalSeconds: float
    timeoutSeconds: float


class ResumeDoc(TypedDict, total=False):
    windowEvents: int
    maxReplayEvents: int
    maxReplayAgeSeconds: float


class DrainDoc(TypedDict, total=False):
    windowSeconds: float


class WorkerConfigDoc(TypedDict):
    apiVersion: str
    channel: str
    kafka: KafkaDoc
    topics: list[TopicDoc]
    routing: NotRequired[RoutingDoc]
    server: NotRequired[ServerDoc]
    auth: NotRequired[AuthDoc]
    limits: NotRequired[LimitsDoc]
    heartbeat: NotRequired[HeartbeatDoc]
    resume: NotRequired[ResumeDoc]
    drain: NotRequired[DrainDoc]
