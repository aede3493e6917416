"""Topic plans with Strimzi semantics, ownership claims and deletion policy."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from clarion_operator.core.reasons import Reason
from clarion_operator.core.spec import TopicSpec
from clarion_operator.core.topics import (
    FORCE_DELETE_ANNOTATION,
    AlterConfigs,
    ChannelClaim,
    ChannelRef,
    CreateTopic,
    DesiredTopic,
    GrowPartitions,
    ObservedTopic,
    TopicFailure,
    TopicState,
    channel_claim,
    is_force_delete,
    kafka_cluster_key,
    max_message_bytes,
    plan_deletion,
    plan_topics,
    resolve_claims,
)

ME = ChannelRef("apps", "dash")
OTHER = ChannelRef("team", "older")


def _desired(**kw: object) -> DesiredTopic:
    base: dict[str, object] = {"name": "orders", "partitions": 6}
    base.update(kw)
    return DesiredTopic(**base)  # type: ignore[arg-type]


def _observed(partitions: int = 6, rf: int = 1, **configs: str) -> ObservedTopic:
    return ObservedTopic(partitions, rf, {k.replace("_", "."): v for k, v in configs.items()})


def test_create_missing_topic() -> None:
    desired = _desired(replication_factor=3, configs={"retention.ms": "1000"})
    plan = plan_topics([desired], {"orders": None})
    assert plan.actions == (CreateTopic("orders", 6, 3, {"retention.ms": "1000"}),)
    (status,) = plan.statuses
    assert status.state is TopicState.CREATING
    assert status.partitions == 6
    assert not plan.in_sync
    # No entry at all means missing too.
    assert plan_topics([desired], {}).actions == plan.actions


def test_create_uses_broker_default_rf_when_unset() -> None:
    (action,) = plan_topics([_desired()], {}).actions
    assert isinstance(action, CreateTopic)
    assert action.replication_factor is None


def test_in_sync_topic_has_no_actions() -> None:
    plan = plan_topics(
        [_desired(configs={"retention.ms": "1000"})], {"orders": _observed(retention_ms="1000")}
    )
    assert plan.actions == ()
    (status,) = plan.statuses
    assert status.state is TopicState.READY
    assert status.config_in_sync is True
    assert status.reason is None
    assert plan.in_sync


def test_adopted_topic_in_sync() -> None:
    # An existing topic with the spec's shape is adopted without any action.
    plan = plan_topics([_desired(partitions=3)], {"orders": _observed(partitions=3, rf=3)})
    assert plan.actions == ()
    assert plan.statuses[0].replication_factor == 3


def test_grow_partitions() -> None:
    plan = plan_topics([_desired(partitions=12)], {"orders": _observed(partitions=6)})
    assert plan.actions == (GrowPartitions("orders", 12),)
    assert plan.statuses[0].state is TopicState.UPDATING
    assert plan.statuses[0].reason is Reason.TOPICS_UPDATING


def test_partition_decrease_is_not_supported_and_leaves_topic_alone() -> None:
    plan = plan_topics(
        [_desired(partitions=3, configs={"retention.ms": "5"})],
        {"orders": _observed(partitions=6)},
    )
    assert plan.actions == ()
    (status,) = plan.statuses
    assert status.state is TopicState.NOT_SUPPORTED
    assert status.reason is Reason.NOT_SUPPORTED
    assert status.partitions == 6
    assert "6 to 3" in (status.message or "")
    # Reverting the spec clears it.
    reverted = plan_topics([_desired(partitions=6)], {"orders": _observed(partitions=6)})
    assert reverted.statuses[0].state is TopicState.READY


def test_replication_factor_change_is_reported_not_applied() -> None:
    plan = plan_topics([_desired(replication_factor=3)], {"orders": _observed(rf=1)})
    assert plan.actions == ()
    (status,) = plan.statuses
    assert status.state is TopicState.REPLICATION_FACTOR_CHANGE_NOT_APPLIED
    assert status.reason is Reason.REPLICATION_FACTOR_CHANGE_NOT_APPLIED
    assert status.replication_factor == 1
    # Equal or unset replication factors are not compared.
    assert plan_topics([_desired(replication_factor=1)], {"orders": _observed(rf=1)}).in_sync
    assert plan_topics([_desired()], {"orders": _observed(rf=3)}).in_sync


def test_rf_mismatch_does_not_block_other_changes() -> None:
    plan = plan_topics([_desired(partitions=8, replication_factor=3)], {"orders": _observed(rf=1)})
    assert plan.actions == (GrowPartitions("orders", 8),)
    (settled,) = plan.settled()
    assert settled.state is TopicState.REPLICATION_FACTOR_CHANGE_NOT_APPLIED
    assert settled.reason is Reason.REPLICATION_FACTOR_CHANGE_NOT_APPLIED


def test_config_drift_is_reverted_with_the_full_desired_set() -> None:
    desired = _desired(configs={"retention.ms": "1000", "cleanup.policy": "delete"})
    observed = _observed(retention_ms="999", cleanup_policy="delete", segment_ms="5")
    plan = plan_topics([desired], {"orders": observed})
    assert plan.actions == (
        AlterConfigs("orders", {"retention.ms": "1000", "cleanup.policy": "delete"}),
    )
    assert plan.statuses[0].config_in_sync is False


def test_empty_desired_config_clears_outside_overrides() -> None:
    plan = plan_topics([_desired()], {"orders": _observed(retention_ms="5")})
    assert plan.actions == (AlterConfigs("orders", {}),)


def test_grow_and_alter_together() -> None:
    plan = plan_topics(
        [_desired(partitions=9, configs={"a": "1"})], {"orders": _observed(partitions=6)}
    )
    assert plan.actions == (GrowPartitions("orders", 9), AlterConfigs("orders", {"a": "1"}))


def test_several_topics_keep_spec_order() -> None:
    plan = plan_topics(
        [_desired(name="b"), _desired(name="a", partitions=7)],
        {"a": _observed(), "b": None},
    )
    assert [s.name for s in plan.statuses] == ["b", "a"]
    assert plan.actions == (CreateTopic("b", 6, None, {}), GrowPartitions("a", 7))


def test_conflict_leaves_topic_alone() -> None:
    claims = {"orders": OTHER, "mine": ME}
    plan = plan_topics(
        [_desired(partitions=12), _desired(name="mine")],
        {"orders": _observed(), "mine": None},
        claims,
        channel=ME,
    )
    assert plan.actions == (CreateTopic("mine", 6, None, {}),)
    conflict = plan.statuses[0]
    assert conflict.state is TopicState.RESOURCE_CONFLICT
    assert conflict.reason is Reason.RESOURCE_CONFLICT
    assert "team/older" in (conflict.message or "")
    # Settling keeps the conflict.
    assert plan.settled()[0].state is TopicState.RESOURCE_CONFLICT


def test_settled_promotes_successful_actions_and_marks_failures() -> None:
    plan = plan_topics(
        [_desired(name="new"), _desired(name="grow", partitions=8), _desired(name="bad")],
        {"new": None, "grow": _observed(), "bad": None},
    )
    failure = TopicFailure(Reason.INVALID_REPLICATION_FACTOR, "rf 3 > 1 broker")
    new, grow, bad = plan.settled({"bad": failure})
    assert (new.state, new.config_in_sync, new.reason) == (TopicState.READY, True, None)
    assert grow.state is TopicState.READY
    assert bad.state is TopicState.ERROR
    assert bad.reason is Reason.INVALID_REPLICATION_FACTOR
    assert bad.message == "rf 3 > 1 broker"


def test_from_spec() -> None:
    topic = TopicSpec(name="x", partitions=3, config={"a": "b"}, deletion_policy="Delete")
    assert DesiredTopic.from_spec(topic) == DesiredTopic(
        "x", 3, None, {"a": "b", "max.message.bytes": "1064960"}, "Delete"
    )


@pytest.mark.parametrize(
    ("max_record_bytes", "expected"),
    [
        (None, 1024 * 1024 + 16 * 1024),  # the worker's default, 1 MiB
        (1024 * 1024, 1024 * 1024 + 16 * 1024),
        (4 * 1024 * 1024, 4 * 1024 * 1024 + 16 * 1024),  # raised above Kafka's default
        (64 * 1024, 1048588),  # never below Kafka's default: producers' batches fit
        (1, 1048588),
    ],
)
def test_max_message_bytes_follows_max_record_bytes(
    max_record_bytes: int | None, expected: int
) -> None:
    assert max_message_bytes(max_record_bytes) == expected
    topic = TopicSpec(name="x", partitions=1)
    desired = DesiredTopic.from_spec(topic, max_record_bytes)
    assert dict(desired.configs) == {"max.message.bytes": str(expected)}


def test_a_record_the_workers_accept_fits_and_a_five_mib_one_does_not() -> None:
    limit = max_message_bytes(None)
    # One record in a batch: 61 bytes of batch header, at most 21 of record fields.
    assert limit >= 61 + 21 + 1024 * 1024 + 256  # a 1 MiB value with a 256-byte key
    assert limit < 5 * 1024 * 1024


def test_an_explicit_max_message_bytes_in_the_spec_wins() -> None:
    topic = TopicSpec(name="x", partitions=1, config={"max.message.bytes": "2000000"})
    assert dict(DesiredTopic.from_spec(topic, 4096).configs) == {"max.message.bytes": "2000000"}


def test_a_topic_without_the_limit_gets_it_and_a_larger_one_set_outside_is_reverted() -> None:
    desired = DesiredTopic.from_spec(TopicSpec(name="orders", partitions=6))
    for found in ({}, {"max.message.bytes": "10485760"}, {"max.message.bytes": "1064960"}):
        plan = plan_topics([desired], {"orders": ObservedTopic(6, 1, found)})
        if found == {"max.message.bytes": "1064960"}:
            assert plan.actions == ()
            continue
        assert plan.actions == (AlterConfigs("orders", {"max.message.bytes": "1064960"}),)
        assert [s.state for s in plan.statuses] == [TopicState.UPDATING]


def _claim(name: str, ts: str | datetime, uid: str, *topics: str) -> ChannelClaim:
    return ChannelClaim("ns", name, ts, uid, topics)


def test_resolve_claims_older_wins() -> None:
    owners = resolve_claims(
        [
            _claim("young", "2025-02-01T00:00:00Z", "a", "orders", "young-only"),
            _claim("old", "2025-01-01T00:00:00Z", "z", "orders"),
        ]
    )
    assert owners == {"orders": ChannelRef("ns", "old"), "young-only": ChannelRef("ns", "young")}


def test_resolve_claims_uid_breaks_ties() -> None:
    owners = resolve_claims(
        [
            _claim("b", "2025-01-01T00:00:00Z", "uid-2", "orders"),
            _claim("a", datetime(2025, 1, 1, tzinfo=UTC), "uid-1", "orders"),
        ]
    )
    assert owners == {"orders": ChannelRef("ns", "a")}


def test_channel_claim_from_the_raw_body_even_when_invalid() -> None:
    body = {
        "metadata": {
            "namespace": "team",
            "name": "older",
            "uid": "u0",
            "creationTimestamp": "2026-01-01T00:00:00Z",
        },
        # No auth, a topic without a name, an invalid name: the raw names still claim.
        "spec": {
            "kafka": {"bootstrapServers": "B:9092, a:9092"},
            "topics": [{"name": "orders"}, {"partitions": 2}, {"name": ".."}, "junk"],
        },
    }
    assert channel_claim(body) == (
        "a:9092,b:9092",
        ChannelClaim("team", "older", "2026-01-01T00:00:00Z", "u0", ("orders", "..")),
    )


@pytest.mark.parametrize("kafka", [None, {}, {"bootstrapServers": 9092}])
def test_channel_claim_needs_bootstrap_servers(kafka: object) -> None:
    body = {"metadata": {"name": "x"}, "spec": {"kafka": kafka, "topics": [{"name": "t"}]}}
    assert channel_claim(body) is None


def test_kafka_cluster_key_normalizes() -> None:
    assert kafka_cluster_key(" B:9092,a:9092 ,") == kafka_cluster_key("a:9092,b:9092")
    assert kafka_cluster_key("a:9092") != kafka_cluster_key("a:9093")


def test_plan_deletion_by_policy_and_ownership() -> None:
    topics = [
        _desired(name="keep", deletion_policy="Retain"),
        _desired(name="drop", deletion_policy="Delete"),
        _desired(name="theirs", deletion_policy="Delete"),
    ]
    claims = {"keep": ME, "drop": ME, "theirs": OTHER}
    assert plan_deletion(topics, claims, channel=ME) == ("drop",)
    assert plan_deletion(topics) == ("drop", "theirs")
    assert plan_deletion(topics, claims, channel=ME, force=True) == ()


@pytest.mark.parametrize(
    ("annotations", "force"),
    [
        (None, False),
        ({}, False),
        ({FORCE_DELETE_ANNOTATION: "true"}, True),
        ({FORCE_DELETE_ANNOTATION: "TRUE"}, True),
        ({FORCE_DELETE_ANNOTATION: "no"}, False),
    ],
)
def test_force_delete_annotation(annotations: dict[str, str] | None, force: bool) -> None:
    assert is_force_delete(annotations) is force
