"""Conditions, status assembly, change detection and Events."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from clarion_operator.core.conditions import (
    DeploymentObservation,
    Event,
    Failure,
    action_events,
    adoption_events,
    blocked_status,
    compute_status,
    follow_workers,
    format_time,
    observe_deployment,
    pod_problem,
    state_line,
    status_changed,
    status_patch,
    transition_events,
)
from clarion_operator.core.reasons import Reason
from clarion_operator.core.topics import (
    AlterConfigs,
    CreateTopic,
    GrowPartitions,
    TopicAction,
    TopicFailure,
    TopicState,
    TopicStatus,
)

T0 = datetime(2025, 3, 1, 12, 0, 0, tzinfo=UTC)
T1 = T0 + timedelta(minutes=5)
READY_TOPIC = TopicStatus("orders", TopicState.READY, 6, 1, True)
HEALTHY = DeploymentObservation(desired=2, replicas=2, ready=2, updated=2, available=2)


def _cond(status: dict[str, Any], kind: str) -> dict[str, Any]:
    (hit,) = [c for c in status["conditions"] if c["type"] == kind]
    return dict(hit)


def _status(
    previous: dict[str, Any] | None = None,
    *,
    now: datetime = T0,
    topics: Any = (READY_TOPIC,),
    workers: Any = HEALTHY,
    generation: int = 1,
) -> dict[str, Any]:
    return dict(
        compute_status(
            previous,
            generation=generation,
            now=now,
            topics=topics,
            workers=workers,
            endpoint="ws://x/ws",
            selector="a=b",
            config_hash="abc",
        )
    )


def test_all_ready() -> None:
    status = _status()
    assert [c["type"] for c in status["conditions"]] == ["Ready", "TopicsReady", "WorkersReady"]
    ready = _cond(status, "Ready")
    assert ready == {
        "type": "Ready",
        "status": "True",
        "reason": "Reconciled",
        "message": "topics in sync and workers ready",
        "lastTransitionTime": "2025-03-01T12:00:00Z",
        "observedGeneration": 1,
    }
    assert _cond(status, "WorkersReady")["reason"] == "WorkersReady"
    assert status["observedGeneration"] == 1
    assert status["topicsSummary"] == "1/1"
    assert status["workersSummary"] == "2/2"
    assert status["replicas"] == 2
    assert status["workers"] == {"desired": 2, "ready": 2, "updated": 2, "available": 2}
    assert status["topics"] == [
        {
            "name": "orders",
            "state": "Ready",
            "configInSync": True,
            "partitions": 6,
            "replicationFactor": 1,
        }
    ]
    assert (status["endpoint"], status["selector"], status["configHash"]) == (
        "ws://x/ws",
        "a=b",
        "abc",
    )


def test_transition_time_kept_while_status_unchanged() -> None:
    first = _status(now=T0)
    second = _status(first, now=T1, generation=2)
    assert _cond(second, "Ready")["lastTransitionTime"] == "2025-03-01T12:00:00Z"
    assert _cond(second, "Ready")["observedGeneration"] == 2


def test_transition_time_kept_when_only_reason_changes() -> None:
    progressing = DeploymentObservation(2, 2, 1, 2, 1)
    first = _status(workers=progressing, now=T0)
    unavailable = DeploymentObservation(2, 2, 0, 2, 0, progress_deadline_exceeded=True)
    second = _status(first, workers=unavailable, now=T1)
    cond = _cond(second, "WorkersReady")
    assert cond["reason"] == "WorkersUnavailable"
    assert cond["lastTransitionTime"] == "2025-03-01T12:00:00Z"


def test_transition_time_moves_when_status_changes() -> None:
    first = _status(workers=DeploymentObservation(2, 2, 1, 2, 1), now=T0)
    second = _status(first, now=T1)
    assert _cond(first, "Ready")["status"] == "False"
    assert _cond(second, "Ready")["status"] == "True"
    assert _cond(second, "Ready")["lastTransitionTime"] == "2025-03-01T12:05:00Z"
    # TopicsReady stayed True: its time stays.
    assert _cond(second, "TopicsReady")["lastTransitionTime"] == "2025-03-01T12:00:00Z"


def test_status_changed_false_for_identical_input() -> None:
    first = _status(now=T0)
    again = _status(first, now=T1)
    assert not status_changed(first, again)
    assert status_changed(None, first)
    assert status_changed(first, _status(first, now=T1, generation=2))


def test_status_changed_ignores_kopf_keys_and_condition_order() -> None:
    first = _status()
    stored = {**first, "kopf": {"progress": {}}, "conditions": list(reversed(first["conditions"]))}
    assert not status_changed(stored, first)


@pytest.mark.parametrize(
    ("state", "reason"),
    [
        (TopicState.RESOURCE_CONFLICT, "ResourceConflict"),
        (TopicState.NOT_SUPPORTED, "NotSupported"),
        (TopicState.REPLICATION_FACTOR_CHANGE_NOT_APPLIED, "ReplicationFactorChangeNotApplied"),
        (TopicState.CREATING, "TopicsCreating"),
        (TopicState.UPDATING, "TopicsUpdating"),
        (TopicState.ERROR, "KafkaError"),
    ],
)
def test_topic_states_make_topics_not_ready(state: TopicState, reason: str) -> None:
    topic = TopicStatus("orders", state, 6, 1, False, message="why")
    status = _status(topics=(READY_TOPIC, topic))
    cond = _cond(status, "TopicsReady")
    assert (cond["status"], cond["reason"], cond["message"]) == ("False", reason, "why")
    assert _cond(status, "Ready")["reason"] == reason
    assert status["topicsSummary"] == "1/2"
    assert status["topics"][1]["message"] == "why"


def test_error_topic_keeps_classified_reason() -> None:
    topic = TopicStatus(
        "o", TopicState.ERROR, None, None, False, Reason.INVALID_TOPIC_CONFIG, "bad"
    )
    assert _cond(_status(topics=(topic,)), "TopicsReady")["reason"] == "InvalidTopicConfig"


def test_conflict_outranks_progress() -> None:
    creating = TopicStatus("a", TopicState.CREATING, 6, None, False, message="creating a")
    conflict = TopicStatus("b", TopicState.RESOURCE_CONFLICT, None, None, False, message="owned")
    assert (
        _cond(_status(topics=(creating, conflict)), "TopicsReady")["reason"] == "ResourceConflict"
    )


def test_kafka_failure_keeps_last_topic_states() -> None:
    first = _status()
    failure = Failure(Reason.KAFKA_UNREACHABLE, "connection refused")
    second = _status(first, topics=failure, now=T1)
    cond = _cond(second, "TopicsReady")
    assert (cond["status"], cond["reason"]) == ("False", "KafkaUnreachable")
    assert second["topics"] == first["topics"]
    assert second["topicsSummary"] == "1/1"
    assert _cond(second, "Ready")["reason"] == "KafkaUnreachable"
    assert "topics" not in _status(None, topics=failure)


def test_workers_unknown_before_deployment_exists() -> None:
    status = _status(workers=None)
    assert _cond(status, "WorkersReady")["status"] == "Unknown"
    ready = _cond(status, "Ready")
    assert (ready["status"], ready["reason"]) == ("Unknown", "WorkersProgressing")
    assert "workersSummary" not in status


@pytest.mark.parametrize(
    ("obs", "status", "reason"),
    [
        (DeploymentObservation(2, 2, 2, 2, 2), "True", "WorkersReady"),
        (DeploymentObservation(0, 0, 0, 0, 0), "True", "WorkersReady"),
        (DeploymentObservation(2, 2, 0, 0, 0), "False", "WorkersProgressing"),
        (
            DeploymentObservation(2, 2, 0, 0, 0, progress_deadline_exceeded=True),
            "False",
            "WorkersUnavailable",
        ),
        (DeploymentObservation(2, 3, 2, 1, 2), "False", "WorkersProgressing"),
        (
            DeploymentObservation(2, 2, 2, 2, 2, generation_observed=False),
            "False",
            "WorkersProgressing",
        ),
        (DeploymentObservation(3, 3, 2, 3, 2), "False", "WorkersProgressing"),
    ],
)
def test_workers_condition(obs: DeploymentObservation, status: str, reason: str) -> None:
    cond = _cond(_status(workers=obs), "WorkersReady")
    assert (cond["status"], cond["reason"]) == (status, reason)


def test_stuck_rollout_is_mentioned() -> None:
    obs = DeploymentObservation(2, 3, 2, 1, 2, progress_deadline_exceeded=True)
    assert "ProgressDeadlineExceeded" in _cond(_status(workers=obs), "WorkersReady")["message"]


def test_observe_deployment() -> None:
    raw = {
        "metadata": {"generation": 4},
        "spec": {"replicas": 3},
        "status": {
            "observedGeneration": 3,
            "replicas": 3,
            "readyReplicas": 2,
            "updatedReplicas": 1,
            "availableReplicas": 2,
            "conditions": [{"type": "Progressing", "reason": "ProgressDeadlineExceeded"}],
        },
    }
    assert observe_deployment(raw) == DeploymentObservation(
        desired=3,
        replicas=3,
        ready=2,
        updated=1,
        available=2,
        generation_observed=False,
        progress_deadline_exceeded=True,
    )
    assert observe_deployment(None) is None
    fresh = observe_deployment({"metadata": {"generation": 1}, "spec": {}})
    assert fresh == DeploymentObservation(1, 0, 0, 0, 0, generation_observed=False)


def test_blocked_status_keeps_other_conditions() -> None:
    first = _status(now=T0)
    blocked = dict(
        blocked_status(
            first, reason=Reason.INVALID_SPEC, message="spec.x: bad", generation=2, now=T1
        )
    )
    ready = _cond(blocked, "Ready")
    assert (ready["status"], ready["reason"], ready["message"]) == (
        "False",
        "InvalidSpec",
        "spec.x: bad",
    )
    assert ready["lastTransitionTime"] == "2025-03-01T12:05:00Z"
    assert ready["observedGeneration"] == 2
    assert _cond(blocked, "TopicsReady") == _cond(first, "TopicsReady")
    assert blocked["observedGeneration"] == 2
    assert blocked["endpoint"] == first["endpoint"]
    fresh = blocked_status(None, reason=Reason.INVALID_SPEC, message="m", generation=1, now=T0)
    assert [c["type"] for c in fresh["conditions"]] == ["Ready"]


def test_status_patch_nulls_dropped_keys() -> None:
    old = {"endpoint": "x", "kopf": {"a": 1}, "observedGeneration": 1}
    assert status_patch(old, {"observedGeneration": 2}) == {
        "observedGeneration": 2,
        "endpoint": None,
    }


def test_format_time() -> None:
    east = timezone(timedelta(hours=2))
    assert format_time(datetime(2025, 3, 1, 14, 0, 0, 999, tzinfo=east)) == "2025-03-01T12:00:00Z"
    with pytest.raises(ValueError, match="timezone-aware"):
        format_time(datetime(2025, 3, 1))


def test_message_is_clipped() -> None:
    topic = TopicStatus("o", TopicState.NOT_SUPPORTED, 6, 1, True, message="x" * 5000)
    message = _cond(_status(topics=(topic,)), "TopicsReady")["message"]
    assert len(message) == 1024
    assert message.endswith("...")


def test_workers_that_were_ready_and_are_all_gone_are_unavailable() -> None:
    ready = _status(workers=DeploymentObservation(2, 2, 2, 2, 2), now=T0)
    gone = _status(ready, workers=DeploymentObservation(2, 2, 0, 2, 0), now=T1)
    assert _cond(gone, "WorkersReady")["reason"] == "WorkersUnavailable"
    starting = _status(workers=DeploymentObservation(2, 2, 0, 0, 0), now=T0)
    still = _status(starting, workers=DeploymentObservation(2, 2, 0, 2, 0), now=T1)
    assert _cond(still, "WorkersReady")["reason"] == "WorkersProgressing"


def test_events_on_ready_transitions() -> None:
    ready = _status(workers=DeploymentObservation(2, 2, 2, 2, 2), now=T0)
    failing = _status(ready, workers=DeploymentObservation(2, 2, 0, 0, 0))
    assert transition_events(ready, failing) == [
        Event("Warning", "WorkersUnavailable", _cond(failing, "Ready")["message"])
    ]
    healthy = _status(failing, now=T1)
    assert transition_events(failing, healthy) == [
        Event("Normal", "Reconciled", "topics in sync and workers ready")
    ]
    assert transition_events(healthy, _status(healthy, now=T1)) == []


def test_progress_is_a_normal_event() -> None:
    progressing = _status(workers=DeploymentObservation(2, 2, 1, 1, 1))
    (event,) = transition_events(None, progressing)
    assert (event.type, event.reason) == ("Normal", "WorkersProgressing")


def test_events_for_topics_entering_bad_states() -> None:
    healthy = _status()
    bad = TopicStatus("orders", TopicState.NOT_SUPPORTED, 6, 1, True, Reason.NOT_SUPPORTED, "no")
    broken = _status(healthy, topics=(bad,), now=T1)
    events = transition_events(healthy, broken)
    # Ready went False with the same reason and message: one event, not two.
    assert events == [Event("Warning", "NotSupported", "no")]
    # Staying in the state emits nothing more.
    assert transition_events(broken, _status(broken, topics=(bad,), now=T1)) == []


def test_action_events() -> None:
    actions: list[TopicAction] = [
        CreateTopic("a", 6, None, {}),
        GrowPartitions("b", 12),
        AlterConfigs("c", {"z": "1", "a": "2"}),
        AlterConfigs("d", {}),
        CreateTopic("e", 3, 3, {}),
    ]
    failures = {"e": TopicFailure(Reason.INVALID_REPLICATION_FACTOR, "rf too big")}
    assert action_events(actions, failures) == [
        Event("Normal", "TopicCreated", "created topic a with 6 partition(s)"),
        Event("Normal", "TopicUpdated", "grew topic b to 12 partition(s)"),
        Event("Normal", "TopicUpdated", "set config overrides of topic c (keys: a, z)"),
        Event("Normal", "TopicUpdated", "set config overrides of topic d (keys: none)"),
        Event("Warning", "InvalidReplicationFactor", "e: rf too big"),
    ]


def test_a_new_channel_after_an_api_error_is_starting_not_unavailable() -> None:
    # The first reconcile failed at the API: WorkersReady carries KubernetesApiError.
    failed = _status(workers=Failure(Reason.KUBERNETES_API_ERROR, "no answer"), now=T0)
    starting = _status(failed, workers=DeploymentObservation(2, 2, 0, 2, 0), now=T1)
    assert _cond(starting, "WorkersReady")["reason"] == "WorkersProgressing"
    assert transition_events(failed, starting)[0].type == "Normal"
    # A Deployment that completed a rollout once has lost its workers: that is a Warning.
    lost = DeploymentObservation(2, 2, 0, 2, 0, rolled_out_before=True)
    gone = _status(failed, workers=lost, now=T1)
    assert _cond(gone, "WorkersReady")["reason"] == "WorkersUnavailable"


def test_an_api_failure_keeps_the_last_worker_counts() -> None:
    ready = _status(now=T0)
    failed = _status(ready, workers=Failure(Reason.KUBERNETES_API_ERROR, "no answer"), now=T1)
    assert (failed["workersSummary"], failed["workers"]) == (
        ready["workersSummary"],
        ready["workers"],
    )


def test_observe_deployment_sees_a_completed_rollout() -> None:
    raw = {
        "metadata": {"generation": 1},
        "spec": {"replicas": 1},
        "status": {
            "observedGeneration": 1,
            "conditions": [{"type": "Progressing", "reason": "NewReplicaSetAvailable"}],
        },
    }
    observed = observe_deployment(raw)
    assert observed is not None
    assert observed.rolled_out_before


REFUSED = "settings refused: workers.limits.queueMaxEvents (10) < batchMaxEvents (64)"


def _pod(container: dict[str, Any], **status: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": "dash-worker-abc"},
        "status": {"phase": "Running", "containerStatuses": [container], **status},
    }


def test_pod_problem_carries_the_workers_own_exit_message() -> None:
    crash = _pod(
        {
            "name": "worker",
            "ready": False,
            "restartCount": 3,
            "state": {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 40s"}},
            "lastState": {
                "terminated": {"exitCode": 2, "reason": "Error", "message": REFUSED + "\n"}
            },
        }
    )
    assert pod_problem(crash) == (
        "pod dash-worker-abc, container worker: CrashLoopBackOff, exit code 2 (Error), "
        f"3 restart(s): {REFUSED}"
    )
    image = _pod(
        {
            "name": "worker",
            "ready": False,
            "state": {"waiting": {"reason": "ImagePullBackOff", "message": "no such image"}},
        }
    )
    assert pod_problem(image) == (
        "pod dash-worker-abc, container worker: ImagePullBackOff: no such image"
    )
    # Running again after the crash, not ready since: still failing (no flapping).
    again = _pod(
        {
            "name": "worker",
            "ready": False,
            "restartCount": 4,
            "state": {"running": {}},
            "lastState": {"terminated": {"exitCode": 2, "message": REFUSED}},
        }
    )
    assert pod_problem(again) == (
        f"pod dash-worker-abc, container worker: exit code 2 (Error), 4 restart(s): {REFUSED}"
    )


@pytest.mark.parametrize(
    "container",
    [
        {"name": "worker", "ready": True, "state": {"running": {}}},
        {"name": "worker", "ready": False, "state": {"waiting": {"reason": "ContainerCreating"}}},
        # Ready after an old crash.
        {"name": "worker", "ready": True, "lastState": {"terminated": {"exitCode": 2}}},
    ],
)
def test_pod_problem_ignores_pods_starting_or_recovered(container: dict[str, Any]) -> None:
    assert pod_problem(_pod(container)) is None
    assert pod_problem(None) is None


def test_failing_pods_make_workers_failing_with_their_message() -> None:
    starting = DeploymentObservation(2, 2, 0, 2, 0)
    status = compute_status(
        None, generation=1, now=T0, topics=(READY_TOPIC,), workers=starting, problem=REFUSED
    )
    ready = _cond(dict(status), "Ready")
    assert (ready["status"], ready["reason"]) == ("False", "WorkersFailing")
    assert REFUSED in ready["message"]
    (event,) = transition_events(None, status)
    assert (event.type, event.reason) == ("Warning", "WorkersFailing")
    # A failing pod beside a fully rolled-out Deployment (an old crash) changes nothing.
    healthy = compute_status(
        None, generation=1, now=T0, topics=(READY_TOPIC,), workers=HEALTHY, problem=REFUSED
    )
    assert _cond(dict(healthy), "Ready")["status"] == "True"


def test_follow_workers_recomputes_workers_and_ready_and_keeps_the_rest() -> None:
    progressing = _status(workers=DeploymentObservation(2, 2, 0, 2, 0), now=T0, generation=3)
    followed = follow_workers(progressing, workers=HEALTHY, problem=None, now=T1)
    assert followed is not None
    after = dict(followed)
    assert _cond(after, "Ready")["status"] == "True"
    assert _cond(after, "Ready")["observedGeneration"] == 3
    assert _cond(after, "TopicsReady") == _cond(progressing, "TopicsReady")
    assert (after["topics"], after["endpoint"]) == (progressing["topics"], progressing["endpoint"])
    assert after["workersSummary"] == "2/2"
    # Nothing written by a reconcile yet: nothing to follow.
    assert follow_workers(None, workers=HEALTHY, problem=None, now=T1) is None
    assert follow_workers({}, workers=HEALTHY, problem=None, now=T1) is None


def test_follow_workers_leaves_a_blocking_ready_alone() -> None:
    first = _status(now=T0)
    blocked = dict(
        blocked_status(first, reason=Reason.INVALID_SPEC, message="bad", generation=2, now=T1)
    )
    followed = follow_workers(
        blocked, workers=DeploymentObservation(2, 2, 0, 2, 0), problem=None, now=T1
    )
    assert followed is not None
    assert _cond(dict(followed), "Ready") == _cond(blocked, "Ready")
    assert _cond(dict(followed), "WorkersReady")["status"] == "False"


def test_adoption_events_for_topics_no_status_recorded() -> None:
    orders = TopicStatus("orders", TopicState.READY, 6, 1, True)
    audit = TopicStatus("audit", TopicState.READY, 1, 1, True)
    # The operator created both, then crashed before writing any status.
    assert adoption_events({}, (orders, audit)) == [
        Event("Normal", "TopicAdopted", "adopted existing topic orders with 6 partition(s)"),
        Event("Normal", "TopicAdopted", "adopted existing topic audit with 1 partition(s)"),
    ]
    # Recorded before, or created this round: nothing.
    recorded = _status(topics=(orders,))
    assert adoption_events(recorded, (orders,)) == []
    assert adoption_events({}, (orders,), [CreateTopic("orders", 6, None, {})]) == []
    conflict = TopicStatus("orders", TopicState.RESOURCE_CONFLICT, 6, 1, True)
    assert adoption_events({}, (conflict,)) == []
    assert adoption_events({}, Failure(Reason.KAFKA_UNREACHABLE, "down")) == []


def test_a_create_that_finds_the_topic_is_an_adoption() -> None:
    events = action_events([CreateTopic("a", 6, None, {})], {}, frozenset({"a"}))
    assert [(e.type, e.reason) for e in events] == [("Normal", "TopicAdopted")]


def test_state_line_levels() -> None:
    ready = state_line(_status())
    assert ready is not None
    assert (ready.level, ready.key) == ("info", ("True", "Reconciled"))
    down = state_line(_status(topics=Failure(Reason.KAFKA_UNREACHABLE, "refused")))
    assert down is not None
    assert down.level == "warning"
    assert down.text == "Ready=False KafkaUnreachable: refused"
    starting = state_line(_status(workers=DeploymentObservation(2, 2, 0, 2, 0)))
    assert starting is not None
    assert starting.level == "info"
    assert state_line({}) is None
