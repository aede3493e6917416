"""Errors classified by what the operator should do next.

The core never raises kopf's exceptions (it may not import kopf); it raises these, and the
kopf edge maps them one to one: :class:`RetryableError` to ``kopf.TemporaryError(delay=...)``
and :class:`PermanentError` to ``kopf.PermanentError``. Both carry the condition
:class:`~clarion_operator.core.reasons.Reason` so the status says why.

Kafka errors are classified from plain error codes and exception class names, so this
module needs no aiokafka import and tests need no broker.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import Enum
from typing import Final, Literal

from clarion_operator.core.reasons import Reason

#: Default delays (seconds). Short for blips, long where a human or the cluster must act.
SHORT_RETRY: Final = 10.0
LONG_RETRY: Final = 120.0
#: Cap of the backoff of failures that heal by themselves (no answer, 5xx, a conflict,
#: Kafka unreachable): 1, 2, 4, 5, 5, ... seconds, so a channel caught by an outage is
#: retried within this many seconds of the service coming back, however long it lasted.
QUICK_RETRY: Final = 5.0


class ReconcileError(Exception):
    """Base: a reconcile step failed; ``reason`` goes on the Ready condition."""

    def __init__(self, reason: Reason, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


class RetryableError(ReconcileError):
    """Try again after ``delay`` seconds (Kafka unreachable, API conflict, throttling)."""

    def __init__(self, reason: Reason, message: str, delay: float = SHORT_RETRY) -> None:
        super().__init__(reason, message)
        self.delay = delay


class PermanentError(ReconcileError):
    """Retrying cannot help until the resource changes (an invalid spec)."""


class KafkaOutcome(Enum):
    """What a Kafka error code means for the operation that returned it."""

    #: The goal is already reached ("topic already exists" on create: adopt it).
    SUCCESS = "success"
    #: Transient: retry soon.
    RETRY = "retry"
    #: Kafka refused the request as asked; retrying will fail the same way until the spec
    #: or the cluster changes. Reported on the topic, retried slowly by the drift timer.
    REJECTED = "rejected"


KafkaOperation = Literal["create", "delete", "create_partitions", "alter_configs", "describe"]


@dataclass(frozen=True)
class KafkaErrorClass:
    """The classification of one Kafka error: outcome, condition reason, retry delay."""

    outcome: KafkaOutcome
    reason: Reason
    delay: float
    name: str

    def to_error(self, message: str) -> ReconcileError | None:
        """The exception to raise for this outcome, or None when it is a success."""
        if self.outcome is KafkaOutcome.SUCCESS:
            return None
        return RetryableError(self.reason, f"{self.name}: {message}", self.delay)


# Kafka protocol error codes (org.apache.kafka.common.protocol.Errors) the operator meets.
UNKNOWN_SERVER_ERROR: Final = -1
NONE: Final = 0
UNKNOWN_TOPIC_OR_PARTITION: Final = 3
LEADER_NOT_AVAILABLE: Final = 5
NOT_LEADER_OR_FOLLOWER: Final = 6
REQUEST_TIMED_OUT: Final = 7
BROKER_NOT_AVAILABLE: Final = 8
NETWORK_EXCEPTION: Final = 13
INVALID_TOPIC_EXCEPTION: Final = 17
NOT_ENOUGH_REPLICAS: Final = 19
TOPIC_AUTHORIZATION_FAILED: Final = 29
CLUSTER_AUTHORIZATION_FAILED: Final = 31
UNSUPPORTED_VERSION: Final = 35
TOPIC_ALREADY_EXISTS: Final = 36
INVALID_PARTITIONS: Final = 37
INVALID_REPLICATION_FACTOR: Final = 38
INVALID_REPLICA_ASSIGNMENT: Final = 39
INVALID_CONFIG: Final = 40
NOT_CONTROLLER: Final = 41
INVALID_REQUEST: Final = 42
POLICY_VIOLATION: Final = 44
KAFKA_STORAGE_ERROR: Final = 56
SASL_AUTHENTICATION_FAILED: Final = 58
TOPIC_DELETION_DISABLED: Final = 73
THROTTLING_QUOTA_EXCEEDED: Final = 89

_TRANSIENT: Final[dict[int, str]] = {
    UNKNOWN_SERVER_ERROR: "UnknownServerError",
    LEADER_NOT_AVAILABLE: "LeaderNotAvailable",
    NOT_LEADER_OR_FOLLOWER: "NotLeaderOrFollower",
    REQUEST_TIMED_OUT: "RequestTimedOut",
    BROKER_NOT_AVAILABLE: "BrokerNotAvailable",
    NETWORK_EXCEPTION: "NetworkException",
    NOT_ENOUGH_REPLICAS: "NotEnoughReplicas",
    NOT_CONTROLLER: "NotController",
    KAFKA_STORAGE_ERROR: "KafkaStorageError",
    THROTTLING_QUOTA_EXCEEDED: "ThrottlingQuotaExceeded",
}

_REJECTED: Final[dict[int, tuple[str, Reason]]] = {
    INVALID_TOPIC_EXCEPTION: ("InvalidTopic", Reason.KAFKA_ERROR),
    TOPIC_AUTHORIZATION_FAILED: ("TopicAuthorizationFailed", Reason.KAFKA_AUTHORIZATION_FAILED),
    CLUSTER_AUTHORIZATION_FAILED: (
        "ClusterAuthorizationFailed",
        Reason.KAFKA_AUTHORIZATION_FAILED,
    ),
    SASL_AUTHENTICATION_FAILED: ("SaslAuthenticationFailed", Reason.KAFKA_AUTHORIZATION_FAILED),
    UNSUPPORTED_VERSION: ("UnsupportedVersion", Reason.KAFKA_ERROR),
    INVALID_PARTITIONS: ("InvalidPartitions", Reason.INVALID_PARTITIONS),
    INVALID_REPLICATION_FACTOR: ("InvalidReplicationFactor", Reason.INVALID_REPLICATION_FACTOR),
    INVALID_REPLICA_ASSIGNMENT: ("InvalidReplicaAssignment", Reason.INVALID_REPLICATION_FACTOR),
    INVALID_CONFIG: ("InvalidConfig", Reason.INVALID_TOPIC_CONFIG),
    INVALID_REQUEST: ("InvalidRequest", Reason.KAFKA_ERROR),
    POLICY_VIOLATION: ("PolicyViolation", Reason.KAFKA_ERROR),
    TOPIC_DELETION_DISABLED: ("TopicDeletionDisabled", Reason.KAFKA_ERROR),
}


def create_refusal(code: int, requested: int, registered_brokers: int) -> int:
    """The code to classify for a topic create Kafka answered with ``code``.

    Kafka answers ``InvalidReplicationFactor`` both to a factor the cluster cannot honour
    (a spec a human must change: retried slowly) and to any create while no broker is
    registered: the only broker shutting down or starting, which heals by itself. A create
    caught by a broker restart used to wait 120 s for its retry. So the refusal counts as
    ``BrokerNotAvailable`` (retried within seconds) when no broker is registered or when
    the cluster has, by now, enough brokers for the factor asked for (``requested``; -1, the
    broker's default, counts as 1).
    """
    if code != INVALID_REPLICATION_FACTOR:
        return code
    if not registered_brokers or max(requested, 1) <= registered_brokers:
        return BROKER_NOT_AVAILABLE
    return code


def classify_kafka_error(code: int, operation: KafkaOperation) -> KafkaErrorClass:
    """Classify one per-topic Kafka error code returned by ``operation``.

    ``create_topics`` and friends report per-topic errors as codes in the response, not as
    exceptions; the edge passes each code here.
    """
    if code == NONE:
        return KafkaErrorClass(KafkaOutcome.SUCCESS, Reason.RECONCILED, 0.0, "None")
    # "Already exists" on create is adoption (Strimzi semantics), and "unknown topic" on
    # delete means someone deleted it first: both reached the goal.
    if code == TOPIC_ALREADY_EXISTS:
        if operation == "create":
            return KafkaErrorClass(KafkaOutcome.SUCCESS, Reason.RECONCILED, 0.0, "TopicExists")
        return KafkaErrorClass(KafkaOutcome.RETRY, Reason.KAFKA_ERROR, SHORT_RETRY, "TopicExists")
    if code == UNKNOWN_TOPIC_OR_PARTITION:
        if operation == "delete":
            return KafkaErrorClass(
                KafkaOutcome.SUCCESS, Reason.RECONCILED, 0.0, "UnknownTopicOrPartition"
            )
        # Right after a create, metadata may not have propagated yet: transient.
        return KafkaErrorClass(
            KafkaOutcome.RETRY, Reason.KAFKA_ERROR, SHORT_RETRY, "UnknownTopicOrPartition"
        )
    if code in _TRANSIENT:
        return KafkaErrorClass(
            KafkaOutcome.RETRY, Reason.KAFKA_ERROR, SHORT_RETRY, _TRANSIENT[code]
        )
    if code in _REJECTED:
        name, reason = _REJECTED[code]
        return KafkaErrorClass(KafkaOutcome.REJECTED, reason, LONG_RETRY, name)
    # An unknown code is most likely new in a later Kafka: report it and retry slowly
    # rather than hammer the broker.
    return KafkaErrorClass(KafkaOutcome.REJECTED, Reason.KAFKA_ERROR, LONG_RETRY, f"Error{code}")


# Exception class names (anywhere in the MRO) that mean "could not talk to Kafka".
_UNREACHABLE_NAMES: Final = frozenset(
    {
        "KafkaConnectionError",
        "NodeNotReadyError",
        "NoBrokersAvailable",
        "KafkaTimeoutError",
        "RequestTimedOutError",
        "NotControllerError",
        "LeaderNotAvailableError",
        "TimeoutError",
        "CancelledError",
        "ConnectionError",
        "OSError",
    }
)
_AUTH_NAMES: Final = frozenset(
    {
        "SaslAuthenticationFailedError",
        "SaslAuthenticationFailed",  # aiokafka 0.14's name for Kafka error 58
        "UnsupportedSaslMechanismError",
        "AuthenticationFailedError",
        "TopicAuthorizationFailedError",
        "ClusterAuthorizationFailedError",
        "SSLError",
    }
)


def classify_kafka_exception(type_names: Iterable[str]) -> KafkaErrorClass:
    """Classify an exception raised by the Kafka client from its class names.

    Pass every class in the MRO (``[c.__name__ for c in type(exc).__mro__]``) so that
    subclasses (``ConnectionRefusedError`` is an ``OSError``) are recognised.
    """
    names = list(type_names)
    # Authentication is checked first: ssl.SSLError is also an OSError, and a bad
    # certificate will not heal by itself the way a refused connection does.
    for name in names:
        if name in _AUTH_NAMES:
            return KafkaErrorClass(
                KafkaOutcome.REJECTED, Reason.KAFKA_AUTHORIZATION_FAILED, LONG_RETRY, name
            )
    for name in names:
        if name in _UNREACHABLE_NAMES:
            return KafkaErrorClass(KafkaOutcome.RETRY, Reason.KAFKA_UNREACHABLE, SHORT_RETRY, name)
    first = names[0] if names else "Exception"
    return KafkaErrorClass(KafkaOutcome.RETRY, Reason.KAFKA_ERROR, SHORT_RETRY, first)


def retry_delay(error: RetryableError, attempt: int) -> float:
    """The delay before retry number ``attempt`` (0 for the first) after ``error``.

    Errors expected to heal by themselves (their own delay at most :data:`SHORT_RETRY`)
    back off exponentially from 1 s up to :data:`QUICK_RETRY` (never beyond their own
    delay); the others (403, a Kafka refusal, a missing Secret) wait their own delay.
    """
    if error.delay > SHORT_RETRY:
        return error.delay
    return float(min(error.delay, QUICK_RETRY, 2.0 ** max(0, min(attempt, 10))))


#: Retries a reconcile that kopf does not retry (the one after a Secret change) makes by
#: itself before it leaves the channel to its own handler or the next drift check.
FOLLOW_UP_RETRIES: Final = 5


def follow_up_delay(error: ReconcileError | None, attempt: int) -> float | None:
    """Whether a reconcile that kopf does not retry tries again by itself, and after how
    long (``attempt``: 0 after its first failure).

    Only failures that heal by themselves, at :func:`retry_delay`'s pace, at most
    :data:`FOLLOW_UP_RETRIES` times: a fixed password opens the broker, and the topic just
    created there may not be described yet (UnknownTopicOrPartition for a moment). The
    channel's own handler may meanwhile sit out the refusal's 120 s, and the drift check
    come a minute later. None: nothing to retry, or not soon."""
    if not isinstance(error, RetryableError) or error.delay > SHORT_RETRY:
        return None
    if attempt >= FOLLOW_UP_RETRIES:
        return None
    return retry_delay(error, attempt)


def classify_api_status(code: int) -> RetryableError | PermanentError:
    """Classify a Kubernetes API error status code from applying a child object.

    409 (conflict), 0 (no answer at all: connection refused or reset, a timeout), 408,
    429 and 5xx are retried soon; 422 (the rendered object is invalid, a bug or a spec
    value the API server rejects) and 403 (missing RBAC) need a human.
    """
    if code == 409:
        return RetryableError(Reason.API_CONFLICT, "conflict applying a child object", 2.0)
    if code == 0:
        return RetryableError(Reason.KUBERNETES_API_ERROR, "no answer from the API server")
    if code in (408, 429) or code >= 500:
        return RetryableError(Reason.KUBERNETES_API_ERROR, f"API server answered {code}")
    if code == 422:
        return PermanentError(Reason.INVALID_SPEC, "the API server rejected a rendered object")
    return RetryableError(Reason.KUBERNETES_API_ERROR, f"API server answered {code}", LONG_RETRY)
