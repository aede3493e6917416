"""The status of a channel seen for the first time, written before any Kafka call."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from clarion_operator.core.conditions import (
    DeploymentObservation,
    compute_status,
    first_status,
    follow_workers,
    state_line,
    transition_events,
)
from clarion_operator.core.topics import TopicState, TopicStatus

T0 = datetime(2026, 11, 30, 10, 0, 0, tzinfo=UTC)
T1 = T0 + timedelta(seconds=20)
READY_TOPIC = TopicStatus("orders", TopicState.READY, 1, 1, True)
STARTING = DeploymentObservation(desired=2, replicas=2, ready=0, updated=2, available=0)


def conditions(status: Any) -> dict[str, tuple[str, str]]:
    return {c["type"]: (c["status"], c["reason"]) for c in status["conditions"]}


def test_a_new_channel_says_reconciling_with_topics_and_workers_unknown() -> None:
    status = first_status({}, generation=1, now=T0)
    assert status is not None
    assert status["observedGeneration"] == 1
    assert conditions(status) == {
        "Ready": ("False", "Reconciling"),
        "TopicsReady": ("Unknown", "Reconciling"),
        "WorkersReady": ("Unknown", "Reconciling"),
    }
    assert all(c["lastTransitionTime"] == "2026-11-30T10:00:00Z" for c in status["conditions"])
    # In progress: a Normal transition and an INFO line, never a warning.
    line = state_line(status)
    assert line is not None
    assert line.level == "info"
    assert {e.type for e in transition_events({}, status)} == {"Normal"}


def test_a_channel_with_a_status_keeps_it() -> None:
    # A restarted operator or a spec edit: the status stands until the reconcile's own.
    written = compute_status(
        {}, generation=1, now=T0, topics=[READY_TOPIC], workers=STARTING, config_hash="h"
    )
    assert first_status(written, generation=2, now=T1) is None


def test_the_reconcile_after_it_makes_the_same_events_as_without_it() -> None:
    early = first_status(None, generation=1, now=T0)
    assert early is not None
    final = compute_status(
        early, generation=1, now=T1, topics=[READY_TOPIC], workers=STARTING, config_hash="h"
    )
    without = compute_status(
        {}, generation=1, now=T1, topics=[READY_TOPIC], workers=STARTING, config_hash="h"
    )
    assert conditions(final) == conditions(without)
    assert transition_events(early, final) == transition_events({}, without)
    # Ready stayed False: it keeps the first status's transition time.
    ready = next(c for c in final["conditions"] if c["type"] == "Ready")
    assert ready["lastTransitionTime"] == "2026-11-30T10:00:00Z"


def test_a_worker_watch_event_before_the_first_reconcile_ends_keeps_topics_unknown() -> None:
    early = first_status(None, generation=1, now=T0)
    followed = follow_workers(early, workers=STARTING, problem=None, now=T1)
    assert followed is not None
    assert conditions(followed)["TopicsReady"] == ("Unknown", "Reconciling")
    assert conditions(followed)["Ready"] == ("False", "WorkersProgressing")
