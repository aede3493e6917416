"""Kafka topic plans with Strimzi's semantics, computed from plain observations.

The kopf edge describes the topics (partition count, replication factor, and the config
entries whose source is the dynamic topic config, as the strings Kafka returns), calls
:func:`plan_topics`, executes the actions with the admin client, and reports
:meth:`TopicPlan.settled` in the status. Rules (Strimzi proposal 051):

* partitions only grow; a decrease leaves the topic untouched, state ``NotSupported``,
  until the spec is reverted;
* a replication-factor difference is reported (``ReplicationFactorChangeNotApplied``),
  never applied: reassignment is a cluster-operator decision;
* dynamic config overrides equal the spec exactly; drift made outside the resource is
  reverted. aiokafka's ``alter_configs`` replaces a topic's whole override set, so an
  :class:`AlterConfigs` action always carries the complete desired set, and an empty
  desired set with overrides present is sent as ``{}``, which clears them. Adopting an
  existing topic therefore also adopts its config: list every override you want to keep;
* "already exists" on create is adoption, not failure (``errors.classify_kafka_error``);
* two channels claiming one topic: the older wins, the other gets ``ResourceConflict``;
* every topic carries ``max.message.bytes`` derived from the channel's
  ``limits.maxRecordBytes`` (:func:`max_message_bytes`), so the broker refuses a record
  the workers would skip, and its producer gets ``RecordTooLargeException``, instead of
  every worker fetching it; an explicit ``max.message.bytes`` in ``spec.topics[].config``
  wins.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from enum import StrEnum
from types import MappingProxyType
from typing import Any, Final

from clarion_contract.worker_config import LIMIT_DEFAULTS
from clarion_operator.core.reasons import Reason
from clarion_operator.core.spec import DeletionPolicy, TopicSpec

#: Annotation on a RealtimeChannel that releases its finalizer without touching Kafka:
#: the escape hatch when Kafka is gone and the namespace must still be deleted.
FORCE_DELETE_ANNOTATION: Final = "realtime.clarion.dev/force-delete"

_EMPTY: Final[Mapping[str, str]] = MappingProxyType({})

MAX_MESSAGE_BYTES: Final = "max.message.bytes"
#: Kafka's default ``max.message.bytes`` (a topic's) and ``message.max.bytes`` (a
#: broker's): 1 MiB plus the 12 bytes of a batch's offset and length. Producers batch small
#: records up to about this size by default (librdkafka's ``batch.size`` is 1,000,000), and
#: a batch the broker refuses is lost to every producer but Java's, which splits it: the
#: topic's limit is never set below it.
KAFKA_DEFAULT_MAX_MESSAGE_BYTES: Final = 1024 * 1024 + 12
#: What Kafka counts besides the value when it compares a one-record batch with
#: ``max.message.bytes``: the batch header (61 bytes, offset and length included), the
#: record's varint fields (at most 21 bytes), and the key and headers; 16 KiB leaves
#: about 16,300 bytes for key and headers.
RECORD_ALLOWANCE_BYTES: Final = 16 * 1024


def max_message_bytes(max_record_bytes: int | None) -> int:
    """A topic's ``max.message.bytes`` for a channel whose workers skip record values
    above ``max_record_bytes`` (None: the worker's default, 1 MiB).

    Kafka compares the record batch as stored (compressed, if the producer compresses)
    with this limit, so a record whose value the workers accept is never refused (its key
    and headers within :data:`RECORD_ALLOWANCE_BYTES`), one well above it is refused with
    ``RecordTooLargeException``, and no value is below Kafka's own default.
    """
    value = LIMIT_DEFAULTS["maxRecordBytes"] if max_record_bytes is None else max_record_bytes
    return max(KAFKA_DEFAULT_MAX_MESSAGE_BYTES, value + RECORD_ALLOWANCE_BYTES)


@dataclass(frozen=True)
class DesiredTopic:
    name: str
    partitions: int
    #: None: broker default at creation, and never compared afterwards.
    replication_factor: int | None = None
    configs: Mapping[str, str] = field(default_factory=lambda: _EMPTY)
    deletion_policy: DeletionPolicy = "Retain"

    @classmethod
    def from_spec(cls, topic: TopicSpec, max_record_bytes: int | None = None) -> DesiredTopic:
        """The topic as the spec asks, with ``max.message.bytes`` from the channel's
        ``limits.maxRecordBytes`` unless ``topic.config`` names it."""
        configs = {MAX_MESSAGE_BYTES: str(max_message_bytes(max_record_bytes))}
        configs.update(topic.config)
        return cls(
            name=topic.name,
            partitions=topic.partitions,
            replication_factor=topic.replication_factor,
            configs=MappingProxyType(configs),
            deletion_policy=topic.deletion_policy,
        )


@dataclass(frozen=True)
class PartitionState:
    """One partition as Kafka's metadata reports it."""

    partition: int
    #: Broker id of the leader; -1 (or any negative) when the partition has none.
    leader: int
    replicas: tuple[int, ...]
    isr: tuple[int, ...]

    @property
    def offline(self) -> bool:
        return self.leader < 0

    @property
    def under_replicated(self) -> bool:
        return len(self.isr) < len(self.replicas)


@dataclass(frozen=True)
class TopicHealth:
    name: str
    partitions: tuple[PartitionState, ...]
    #: The topic's effective min.insync.replicas (an override, or the broker's default).
    min_insync_replicas: int = 1


@dataclass(frozen=True)
class ObservedTopic:
    """What Kafka reports about an existing topic."""

    partitions: int
    replication_factor: int
    #: Only entries whose source is DYNAMIC_TOPIC_CONFIG, values as Kafka returns them.
    dynamic_configs: Mapping[str, str] = field(default_factory=lambda: _EMPTY)
    #: Leaders and in-sync replicas per partition (``core.health``); None: not described.
    health: TopicHealth | None = field(default=None, compare=False)


@dataclass(frozen=True)
class CreateTopic:
    name: str
    partitions: int
    #: None: let the broker apply default.replication.factor (send -1).
    replication_factor: int | None
    configs: Mapping[str, str]


@dataclass(frozen=True)
class GrowPartitions:
    name: str
    #: The new total partition count (Kafka's create_partitions takes the total).
    total: int


@dataclass(frozen=True)
class AlterConfigs:
    name: str
    #: The complete override set to leave on the topic (replaces, not merges).
    configs: Mapping[str, str]


TopicAction = CreateTopic | GrowPartitions | AlterConfigs


class TopicState(StrEnum):
    READY = "Ready"
    CREATING = "Creating"
    UPDATING = "Updating"
    NOT_SUPPORTED = "NotSupported"
    REPLICATION_FACTOR_CHANGE_NOT_APPLIED = "ReplicationFactorChangeNotApplied"
    RESOURCE_CONFLICT = "ResourceConflict"
    ERROR = "Error"


@dataclass(frozen=True)
class TopicStatus:
    name: str
    state: TopicState
    #: Observed partitions, or the desired count when the topic is being created.
    partitions: int | None
    replication_factor: int | None
    config_in_sync: bool
    reason: Reason | None = None
    message: str | None = None
    #: True when the replication factor differs from the spec (kept across settling).
    replication_factor_mismatch: bool = False

    @property
    def ready(self) -> bool:
        return self.state is TopicState.READY


@dataclass(frozen=True)
class TopicFailure:
    """An action for a topic failed; ``reason`` comes from the error classification."""

    reason: Reason
    message: str


@dataclass(frozen=True)
class TopicPlan:
    actions: tuple[TopicAction, ...]
    statuses: tuple[TopicStatus, ...]

    @property
    def in_sync(self) -> bool:
        return not self.actions and all(s.ready for s in self.statuses)

    def settled(
        self, failures: Mapping[str, TopicFailure] | None = None
    ) -> tuple[TopicStatus, ...]:
        """Statuses once the actions ran: Creating/Updating become their end state,
        unless the topic's action failed, in which case it is ``Error`` with the reason."""
        failures = failures or {}
        out: list[TopicStatus] = []
        for status in self.statuses:
            failure = failures.get(status.name)
            if failure is not None:
                out.append(
                    replace(
                        status,
                        state=TopicState.ERROR,
                        reason=failure.reason,
                        message=failure.message,
                    )
                )
            elif status.state in (TopicState.CREATING, TopicState.UPDATING):
                if status.replication_factor_mismatch:
                    out.append(
                        replace(
                            status,
                            state=TopicState.REPLICATION_FACTOR_CHANGE_NOT_APPLIED,
                            reason=Reason.REPLICATION_FACTOR_CHANGE_NOT_APPLIED,
                            config_in_sync=True,
                        )
                    )
                else:
                    out.append(
                        replace(
                            status,
                            state=TopicState.READY,
                            config_in_sync=True,
                            reason=None,
                            message=None,
                        )
                    )
            else:
                out.append(status)
        return tuple(out)


@dataclass(frozen=True, order=True)
class ChannelRef:
    namespace: str
    name: str

    def __str__(self) -> str:
        return f"{self.namespace}/{self.name}"


@dataclass(frozen=True)
class ChannelClaim:
    """One channel's claim on topics of one Kafka cluster."""

    namespace: str
    name: str
    #: metadata.creationTimestamp (RFC 3339, as the API server writes it) or a datetime.
    creation_timestamp: str | datetime
    uid: str
    topics: tuple[str, ...]

    @property
    def ref(self) -> ChannelRef:
        return ChannelRef(self.namespace, self.name)


def kafka_cluster_key(bootstrap_servers: str) -> str:
    """Normalized bootstrap list: claims conflict only between channels with equal keys."""
    hosts = sorted({h.strip().lower() for h in bootstrap_servers.split(",") if h.strip()})
    return ",".join(hosts)


def channel_claim(body: Mapping[str, Any]) -> tuple[str, ChannelClaim] | None:
    """A RealtimeChannel's claim from its raw body, with its Kafka cluster key.

    The raw topic names, not a parsed spec: an invalid channel still claims its topics,
    so a sibling never takes them over while it is being fixed. None when the body names
    no bootstrap servers (then it claims nothing anywhere).
    """
    meta = body.get("metadata") or {}
    raw = body.get("spec") or {}
    servers = (raw.get("kafka") or {}).get("bootstrapServers")
    if not isinstance(servers, str):
        return None
    topics = tuple(
        str(t["name"])
        for t in raw.get("topics") or []
        if isinstance(t, Mapping) and isinstance(t.get("name"), str)
    )
    claim = ChannelClaim(
        namespace=str(meta.get("namespace")),
        name=str(meta.get("name")),
        creation_timestamp=str(meta.get("creationTimestamp")),
        uid=str(meta.get("uid")),
        topics=topics,
    )
    return kafka_cluster_key(servers), claim


def _created(ts: str | datetime) -> datetime:
    # fromisoformat accepts "Z" from Python 3.11 on; the API server always writes UTC.
    return ts if isinstance(ts, datetime) else datetime.fromisoformat(ts)


def resolve_claims(channels: Sequence[ChannelClaim]) -> dict[str, ChannelRef]:
    """Owner of every claimed topic: the oldest claimant (creationTimestamp, then uid).

    Pass only channels pointing at the same Kafka cluster (:func:`kafka_cluster_key`);
    topic names are unique per cluster, not per namespace.
    """
    owners: dict[str, ChannelRef] = {}
    ordered = sorted(channels, key=lambda c: (_created(c.creation_timestamp), c.uid))
    for channel in ordered:
        for topic in channel.topics:
            owners.setdefault(topic, channel.ref)
    return owners


def plan_topics(
    desired: Sequence[DesiredTopic],
    observed: Mapping[str, ObservedTopic | None],
    claims: Mapping[str, ChannelRef] | None = None,
    *,
    channel: ChannelRef | None = None,
) -> TopicPlan:
    """Actions that bring Kafka to ``desired``, and each topic's state before they run.

    ``observed`` maps a topic name to its description, or None (or no entry) when Kafka
    does not have it. ``claims`` is :func:`resolve_claims`' answer; a topic owned by a
    channel other than ``channel`` is left alone with state ``ResourceConflict``.
    """
    actions: list[TopicAction] = []
    statuses: list[TopicStatus] = []
    for topic in desired:
        owner = (claims or {}).get(topic.name)
        seen = observed.get(topic.name)
        if owner is not None and channel is not None and owner != channel:
            statuses.append(
                TopicStatus(
                    name=topic.name,
                    state=TopicState.RESOURCE_CONFLICT,
                    partitions=seen.partitions if seen else None,
                    replication_factor=seen.replication_factor if seen else None,
                    config_in_sync=False,
                    reason=Reason.RESOURCE_CONFLICT,
                    message=f"topic {topic.name} is owned by the older RealtimeChannel {owner}",
                )
            )
            continue
        if seen is None:
            actions.append(
                CreateTopic(
                    topic.name,
                    topic.partitions,
                    topic.replication_factor,
                    MappingProxyType(dict(topic.configs)),
                )
            )
            statuses.append(
                TopicStatus(
                    name=topic.name,
                    state=TopicState.CREATING,
                    partitions=topic.partitions,
                    replication_factor=topic.replication_factor,
                    config_in_sync=False,
                    reason=Reason.TOPICS_CREATING,
                    message=f"creating topic {topic.name}",
                )
            )
            continue
        configs_equal = dict(seen.dynamic_configs) == dict(topic.configs)
        base = TopicStatus(
            name=topic.name,
            state=TopicState.READY,
            partitions=seen.partitions,
            replication_factor=seen.replication_factor,
            config_in_sync=configs_equal,
        )
        if topic.partitions < seen.partitions:
            # Kafka cannot remove partitions; touching configs now would half-apply a
            # spec the user must revert anyway.
            statuses.append(
                replace(
                    base,
                    state=TopicState.NOT_SUPPORTED,
                    reason=Reason.NOT_SUPPORTED,
                    message=(
                        f"decreasing partitions of {topic.name} from {seen.partitions} to "
                        f"{topic.partitions} is not supported; the topic is left unchanged "
                        "until spec.topics[].partitions is at least the current count"
                    ),
                )
            )
            continue
        rf_mismatch = (
            topic.replication_factor is not None
            and topic.replication_factor != seen.replication_factor
        )
        changes: list[str] = []
        if topic.partitions > seen.partitions:
            actions.append(GrowPartitions(topic.name, topic.partitions))
            changes.append(f"partitions {seen.partitions} -> {topic.partitions}")
        if not configs_equal:
            actions.append(AlterConfigs(topic.name, MappingProxyType(dict(topic.configs))))
            changes.append("config overrides")
        rf_message = (
            f"replication factor of {topic.name} is {seen.replication_factor}, spec asks "
            f"{topic.replication_factor}; changes are not applied (reassign partitions "
            "with Kafka tooling, or set the spec to the current value)"
        )
        if changes:
            statuses.append(
                replace(
                    base,
                    state=TopicState.UPDATING,
                    reason=Reason.TOPICS_UPDATING,
                    message=rf_message if rf_mismatch else f"updating {', '.join(changes)}",
                    replication_factor_mismatch=rf_mismatch,
                )
            )
        elif rf_mismatch:
            statuses.append(
                replace(
                    base,
                    state=TopicState.REPLICATION_FACTOR_CHANGE_NOT_APPLIED,
                    reason=Reason.REPLICATION_FACTOR_CHANGE_NOT_APPLIED,
                    message=rf_message,
                    replication_factor_mismatch=True,
                )
            )
        else:
            statuses.append(base)
    return TopicPlan(tuple(actions), tuple(statuses))


def plan_deletion(
    topics: Sequence[DesiredTopic],
    claims: Mapping[str, ChannelRef] | None = None,
    *,
    channel: ChannelRef | None = None,
    force: bool = False,
) -> tuple[str, ...]:
    """Topics to delete when the channel is deleted.

    ``Delete`` policy deletes, ``Retain`` keeps; a topic owned by another channel is never
    deleted. ``force`` (the :data:`FORCE_DELETE_ANNOTATION`) skips Kafka entirely so the
    finalizer can be released when Kafka is gone.
    """
    if force:
        return ()
    out: list[str] = []
    for topic in topics:
        if topic.deletion_policy != "Delete":
            continue
        owner = (claims or {}).get(topic.name)
        if owner is not None and channel is not None and owner != channel:
            continue
        out.append(topic.name)
    return tuple(out)


def is_force_delete(annotations: Mapping[str, str] | None) -> bool:
    return (annotations or {}).get(FORCE_DELETE_ANNOTATION, "").lower() == "true"
