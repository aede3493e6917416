"""TopicsHealthy from Kafka's metadata, and what it does (and does not do) to Ready."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from clarion_operator.core.conditions import (
    DeploymentObservation,
    compute_status,
    follow_health,
    follow_workers,
    transition_events,
)
from clarion_operator.core.health import health_condition, health_of, min_insync_replicas
from clarion_operator.core.reasons import Reason
from clarion_operator.core.topics import (
    ObservedTopic,
    PartitionState,
    TopicHealth,
    TopicState,
    TopicStatus,
)

T0 = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)
T1 = T0 + timedelta(seconds=10)
WORKERS = DeploymentObservation(desired=2, replicas=2, ready=2, updated=2, available=2)
ALL = (1, 2, 3)


def _topic(name: str, *isrs: tuple[int, ...], leader: int = 1, min_isr: int = 2) -> TopicHealth:
    parts = tuple(PartitionState(i, leader if isr else -1, ALL, isr) for i, isr in enumerate(isrs))
    return TopicHealth(name, parts, min_isr)


def _cond(status: Any, kind: str) -> dict[str, Any]:
    (hit,) = [c for c in status["conditions"] if c["type"] == kind]
    return dict(hit)


def test_every_replica_in_sync_is_healthy() -> None:
    cond = health_condition([_topic("a", ALL, ALL), _topic("b", ALL)])
    assert cond is not None
    assert (cond.type, cond.status, cond.reason) == ("TopicsHealthy", "True", "TopicsHealthy")
    assert cond.message == "every replica of 3 partition(s) in 2 topic(s) in sync"


def test_a_broker_lost_is_under_replicated_with_counts_and_the_broker() -> None:
    cond = health_condition([_topic("a", (1, 3), (1, 3), ALL), _topic("b", (3, 1))])
    assert cond is not None
    assert (cond.status, cond.reason) == ("False", Reason.UNDER_REPLICATED_PARTITIONS)
    assert cond.message.startswith(
        "0 offline, 0 below min.insync.replicas, 3 under-replicated, of 4 partition(s) "
        "(under-replicated: a 2, b 1): reads and writes continue"
    )
    assert cond.message.endswith("replicas out of sync on broker(s) 2")


def test_fewer_in_sync_than_min_insync_replicas_says_producers_are_refused() -> None:
    cond = health_condition([_topic("a", (1,), ALL)])
    assert cond is not None
    assert (cond.status, cond.reason) == ("False", Reason.BELOW_MIN_IN_SYNC_REPLICAS)
    assert "1 below min.insync.replicas, 1 under-replicated" in cond.message
    assert "NotEnoughReplicas" in cond.message
    assert cond.message.endswith("broker(s) 2, 3")


def test_a_partition_without_a_leader_is_offline() -> None:
    cond = health_condition([_topic("a", (), (1,))])
    assert cond is not None
    assert (cond.status, cond.reason) == ("False", Reason.PARTITIONS_OFFLINE)
    assert cond.message.startswith("1 offline, 1 below min.insync.replicas, 1 under-replicated")


def test_nothing_described_is_no_condition() -> None:
    assert health_condition([]) is None
    assert health_condition([TopicHealth("a", ())]) is None
    # Topics that do not exist yet, or a describe without metadata (the unit fakes).
    assert health_of({"a": None, "b": ObservedTopic(1, 1)}) is None
    observed = {"a": ObservedTopic(1, 3, health=_topic("a", ALL))}
    assert health_of(observed) == health_condition([_topic("a", ALL)])


def test_min_insync_replicas_from_the_described_configs() -> None:
    assert min_insync_replicas({"min.insync.replicas": "2", "retention.ms": "1"}) == 2
    assert min_insync_replicas({}) == 1
    assert min_insync_replicas({"min.insync.replicas": None}) == 1


def _reconciled(healthy: Any) -> dict[str, Any]:
    return dict(
        compute_status(
            None,
            generation=1,
            now=T0,
            topics=(TopicStatus("a", TopicState.READY, 3, 3, True),),
            workers=WORKERS,
            healthy=healthy,
        )
    )


def test_under_replication_and_min_isr_leave_ready_alone_offline_does_not() -> None:
    for isrs, reason in (
        (((1, 3),), Reason.UNDER_REPLICATED_PARTITIONS),
        (((1,),), Reason.BELOW_MIN_IN_SYNC_REPLICAS),
    ):
        status = _reconciled(health_condition([_topic("a", *isrs)]))
        assert _cond(status, "Ready")["status"] == "True"
        assert _cond(status, "TopicsHealthy")["reason"] == reason
    offline = _reconciled(health_condition([_topic("a", ())]))
    assert _cond(offline, "Ready")["status"] == "False"
    assert _cond(offline, "Ready")["reason"] == "PartitionsOffline"
    assert _cond(offline, "TopicsReady")["status"] == "True"


def test_a_reconcile_that_could_not_ask_keeps_the_last_health() -> None:
    before = _reconciled(health_condition([_topic("a", (1, 3))]))
    after = compute_status(
        before,
        generation=1,
        now=T1,
        topics=(TopicStatus("a", TopicState.READY, 3, 3, True),),
        workers=WORKERS,
    )
    assert _cond(after, "TopicsHealthy") == _cond(before, "TopicsHealthy")


def test_follow_health_changes_only_topics_healthy_and_never_flaps_ready() -> None:
    healthy = _reconciled(health_condition([_topic("a", ALL)]))
    lost = follow_health(healthy, healthy=_h(_topic("a", (1, 3))), now=T1)
    assert lost is not None
    assert _cond(lost, "Ready") == _cond(healthy, "Ready")  # same time, same everything
    assert _cond(lost, "TopicsHealthy")["status"] == "False"
    assert _cond(lost, "TopicsHealthy")["lastTransitionTime"] == "2026-03-01T12:00:10Z"
    for key in ("topics", "workers", "endpoint", "observedGeneration"):
        assert lost.get(key) == healthy.get(key)
    events = transition_events(healthy, lost)
    assert [(e.type, e.reason) for e in events] == [("Warning", "UnderReplicatedPartitions")]
    # The same observation again: nothing to write.
    assert follow_health(lost, healthy=_h(_topic("a", (1, 3))), now=T1) is None
    back = follow_health(lost, healthy=_h(_topic("a", ALL)), now=T1)
    assert back is not None
    assert _cond(back, "Ready") == _cond(healthy, "Ready")
    assert [(e.type, e.reason) for e in transition_events(lost, back)] == [
        ("Normal", "TopicsHealthy")
    ]


def test_follow_health_offline_takes_ready_down_and_back() -> None:
    healthy = _reconciled(health_condition([_topic("a", ALL)]))
    offline = follow_health(healthy, healthy=_h(_topic("a", ())), now=T1)
    assert offline is not None
    assert (_cond(offline, "Ready")["status"], _cond(offline, "Ready")["reason"]) == (
        "False",
        "PartitionsOffline",
    )
    # A workers' watch event in between keeps the offline verdict.
    followed = follow_workers(offline, workers=WORKERS, problem=None, now=T1)
    assert followed is not None
    assert _cond(followed, "Ready")["reason"] == "PartitionsOffline"
    back = follow_health(followed, healthy=_h(_topic("a", ALL)), now=T1)
    assert back is not None
    assert _cond(back, "Ready")["status"] == "True"


def test_follow_health_waits_for_a_reconciled_status() -> None:
    assert follow_health(None, healthy=_h(_topic("a", ALL)), now=T0) is None
    assert follow_health({"conditions": []}, healthy=_h(_topic("a", ALL)), now=T0) is None


def _h(topic: TopicHealth) -> Any:
    cond = health_condition([topic])
    assert cond is not None
    return cond
