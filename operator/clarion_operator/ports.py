"""The ports the reconciler drives: Kafka's admin API, the Kubernetes API, and the
topic claims of the channels the operator watches.

The reconciler (``reconcile.py``) only sees these Protocols; ``kafka_admin.py``,
``kube.py`` and ``claims.py`` implement them with aiokafka, the kubernetes client and a
kopf index. Unit tests hand in fakes, so the orchestration is tested without a broker or
an API server.

Error contract: a Kafka port raises whatever the client raised for "could not talk to
Kafka" (classified by class names, ``errors.classify_kafka_exception``) and returns
per-topic protocol error codes (classified by ``errors.classify_kafka_error``), or
raises :class:`KafkaCodeError` with one where the call has no per-topic result; a
Kubernetes port raises :class:`ApiError` carrying the HTTP status.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any, Protocol

from clarion_operator.core.render import ObjectRef
from clarion_operator.core.topics import (
    AlterConfigs,
    ChannelClaim,
    CreateTopic,
    GrowPartitions,
    ObservedTopic,
    PartitionState,
)

Body = dict[str, Any]


@dataclass(frozen=True)
class KafkaConnection:
    """How to reach one Kafka cluster, with secret material already read."""

    bootstrap_servers: str
    client_id: str
    security_protocol: str = "PLAINTEXT"
    sasl_mechanism: str | None = None
    username: str | None = None
    password: str | None = None
    ca_pem: str | None = None
    cert_pem: str | None = None
    key_pem: str | None = None

    def __repr__(self) -> str:
        # Never let a password reach a log line through a repr.
        return (
            f"KafkaConnection(bootstrap_servers={self.bootstrap_servers!r}, "
            f"security_protocol={self.security_protocol!r})"
        )


class KafkaAdmin(Protocol):
    """Topic administration on one Kafka cluster (one connection, one reconcile)."""

    async def describe(self, names: Sequence[str]) -> dict[str, ObservedTopic | None]:
        """Every named topic's state; None for a topic Kafka does not have."""
        ...

    async def partitions(
        self, names: Sequence[str]
    ) -> dict[str, tuple[PartitionState, ...] | None]:
        """Every named topic's partitions (leader, replicas, in-sync replicas) from Kafka's
        metadata alone, without the configs ``describe`` reads too: the health probe's
        cheap question. None for a topic Kafka does not have."""
        ...

    async def create(self, action: CreateTopic) -> int:
        """Create one topic; the Kafka error code (0 ok, 36 already exists)."""
        ...

    async def grow(self, action: GrowPartitions) -> int:
        """Raise a topic's partition count; the Kafka error code."""
        ...

    async def alter(self, action: AlterConfigs) -> int:
        """Replace a topic's whole dynamic config override set; the Kafka error code."""
        ...

    async def delete(self, names: Sequence[str]) -> dict[str, int]:
        """Delete topics; the Kafka error code of each (3: it was already gone)."""
        ...


class KafkaAdminFactory(Protocol):
    def __call__(self, connection: KafkaConnection) -> AbstractAsyncContextManager[KafkaAdmin]:
        """A connected admin client, closed when the context exits."""
        ...


class KafkaCodeError(Exception):
    """A Kafka port's describe call failed with a Kafka error code (the reconciler
    classifies ``code`` with ``errors.classify_kafka_error``)."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(f"error code {code}: {message}")
        self.code = code


class ApiError(Exception):
    """The Kubernetes API answered with an error status (0: no answer at all)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"{status}: {message}")
        self.status = status
        self.message = message


@dataclass(frozen=True)
class EventPost:
    """One core/v1 Event about a channel. ``name`` is chosen once per Event, so a POST
    retried after a lost answer meets 409 AlreadyExists instead of a duplicate."""

    name: str
    channel: ObjectRef
    channel_uid: str
    type: str
    reason: str
    message: str


class KubeApi(Protocol):
    """The few Kubernetes calls the reconciler makes; blocking work stays off the loop."""

    async def patch_status(self, ref: ObjectRef, patch: Mapping[str, Any]) -> Body:
        """Merge-patch the ``status`` subresource of ``ref`` with ``{"status": patch}``."""
        ...

    async def post_event(self, event: EventPost) -> None:
        """Create the Event; one that already exists (a retried POST) is success."""
        ...

    async def apply(self, body: Mapping[str, Any]) -> Body:
        """Server-side apply ``body`` with the operator's field manager (force)."""
        ...

    async def delete_if_controlled(self, ref: ObjectRef, owner_uid: str) -> bool:
        """Delete ``ref`` only if its controller owner reference is ``owner_uid``."""
        ...

    async def get(self, ref: ObjectRef) -> Body | None:
        """The object, or None when it does not exist."""
        ...

    async def read_secret(self, namespace: str, name: str) -> dict[str, bytes] | None:
        """A Secret's decoded data, or None when it does not exist."""
        ...

    async def service_monitor_available(self) -> bool:
        """Whether monitoring.coreos.com/v1 ServiceMonitor is served."""
        ...

    async def served(self, group_version: str, plural: str) -> bool:
        """Whether the API server serves ``plural`` in ``group_version`` (discovery)."""
        ...

    async def probe(self) -> str | None:
        """None when the API server is ready (``/readyz``, which fails when etcd does),
        else what is wrong."""
        ...


class ClaimIndex(Protocol):
    """The topic claims of every RealtimeChannel the operator watches, kept in memory.

    Kept up to date by the watch (a kopf index), so resolving claims costs no API call:
    listing every channel on every reconcile made the total work grow with the square of
    the channel count.
    """

    def claims(self, cluster_key: str) -> list[ChannelClaim]:
        """Every watched channel's claim on the Kafka cluster ``cluster_key``
        (:func:`~clarion_operator.core.topics.kafka_cluster_key`), this one included."""
        ...
