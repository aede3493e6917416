"""The health of a channel's topics, from Kafka's metadata: the ``TopicsHealthy`` condition.

Kafka's metadata names, per partition, its leader (-1: none), its replicas and its in-sync
replicas (ISR); the topic's effective ``min.insync.replicas`` comes from its configs. From
them, in the order a user must look at them:

* **offline**: no leader. Nobody can read or write the partition: the channel's workers
  deliver nothing from it, so ``Ready`` turns False (``PartitionsOffline``);
* **below min.insync.replicas**: a leader, but fewer in-sync replicas than the topic's
  ``min.insync.replicas``. Producers with ``acks=all`` are refused
  (``NotEnoughReplicas``); the workers still read and deliver what is there, so ``Ready``
  stays True;
* **under-replicated**: fewer in-sync replicas than replicas (a broker is down or lagging).
  Reads and writes go on; one more loss may stop them. ``Ready`` stays True.

The condition is beside ``Ready``, like Strimzi's and Kafka's own health reporting, so a
broker lost from a replicated cluster shows on the channel without making it flap. Its
message carries the counts and the brokers whose replicas are out of sync.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Final

from clarion_operator.core.conditions import MAX_MESSAGE, TOPICS_HEALTHY, Condition
from clarion_operator.core.reasons import Reason
from clarion_operator.core.topics import ObservedTopic, TopicHealth

MIN_INSYNC_REPLICAS: Final = "min.insync.replicas"


def _counts(name_parts: Iterable[tuple[str, int]]) -> str:
    per_topic: dict[str, int] = {}
    for name, _ in name_parts:
        per_topic[name] = per_topic.get(name, 0) + 1
    return ", ".join(f"{name} {count}" for name, count in sorted(per_topic.items()))


def health_condition(topics: Sequence[TopicHealth]) -> Condition | None:
    """``TopicsHealthy`` from the topics' metadata; None when no topic was described
    (none exists yet, or Kafka could not be asked: the last answer stands)."""
    described = [t for t in topics if t.partitions]
    if not described:
        return None
    total = sum(len(t.partitions) for t in described)
    offline = [(t.name, p.partition) for t in described for p in t.partitions if p.offline]
    below = [
        (t.name, p.partition)
        for t in described
        for p in t.partitions
        if not p.offline and len(p.isr) < t.min_insync_replicas
    ]
    under = [
        (t.name, p.partition)
        for t in described
        for p in t.partitions
        if not p.offline and p.under_replicated
    ]
    lagging = sorted(
        {b for t in described for p in t.partitions for b in p.replicas if b not in p.isr}
    )
    counts = (
        f"{len(offline)} offline, {len(below)} below min.insync.replicas, "
        f"{len(under)} under-replicated, of {total} partition(s)"
    )
    brokers = (
        f"; replicas out of sync on broker(s) {', '.join(map(str, lagging))}" if lagging else ""
    )
    if offline:
        return Condition(
            TOPICS_HEALTHY,
            "False",
            Reason.PARTITIONS_OFFLINE,
            _message(
                f"{counts} (offline: {_counts(offline)}): partitions without a leader deliver "
                f"nothing until a replica's broker returns{brokers}"
            ),
        )
    if below:
        return Condition(
            TOPICS_HEALTHY,
            "False",
            Reason.BELOW_MIN_IN_SYNC_REPLICAS,
            _message(
                f"{counts} (below: {_counts(below)}): producers with acks=all are refused "
                f"(NotEnoughReplicas); the workers still deliver what is written{brokers}"
            ),
        )
    if under:
        return Condition(
            TOPICS_HEALTHY,
            "False",
            Reason.UNDER_REPLICATED_PARTITIONS,
            _message(
                f"{counts} (under-replicated: {_counts(under)}): reads and writes continue; "
                f"fewer copies until the replicas catch up{brokers}"
            ),
        )
    return Condition(
        TOPICS_HEALTHY,
        "True",
        Reason.TOPICS_HEALTHY,
        f"every replica of {total} partition(s) in {len(described)} topic(s) in sync",
    )


def health_of(observed: Mapping[str, ObservedTopic | None]) -> Condition | None:
    """``TopicsHealthy`` from a describe of the channel's topics (the ones that exist)."""
    return health_condition([t.health for t in observed.values() if t and t.health])


def _message(text: str) -> str:
    return text if len(text) <= MAX_MESSAGE else text[: MAX_MESSAGE - 3] + "..."


def min_insync_replicas(configs: Mapping[str, str | None]) -> int:
    """The effective min.insync.replicas from a topic's described configs (any source)."""
    raw = configs.get(MIN_INSYNC_REPLICAS)
    try:
        return max(1, int(raw)) if raw is not None else 1
    except ValueError:
        return 1
