"""A channel asking for a ServiceMonitor on a cluster without its CRD gets a condition and
an Event (issue 12, item 13), and the channel stays Ready: the workers run, scraped through
their prometheus.io annotations."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from clarion_operator.core.conditions import (
    MONITORED,
    DeploymentObservation,
    Event,
    compute_status,
    follow_workers,
    monitoring_condition,
    transition_events,
)
from clarion_operator.core.reasons import Reason
from clarion_operator.core.topics import TopicState, TopicStatus

T0 = datetime(2026, 11, 30, 7, 0, 0, tzinfo=UTC)
TOPIC = TopicStatus("orders", TopicState.READY, 6, 1, True)
HEALTHY = DeploymentObservation(desired=2, replicas=2, ready=2, updated=2, available=2)


def _status(previous: dict[str, Any] | None, *, asked: bool, available: bool) -> dict[str, Any]:
    return dict(
        compute_status(
            previous,
            generation=1,
            now=T0,
            topics=(TOPIC,),
            workers=HEALTHY,
            monitored=monitoring_condition(asked, available),
        )
    )


def _condition(status: dict[str, Any], kind: str) -> dict[str, Any] | None:
    hits = [c for c in status["conditions"] if c["type"] == kind]
    return dict(hits[0]) if hits else None


def test_no_condition_when_no_service_monitor_is_asked_for() -> None:
    assert monitoring_condition(False, False) is None
    assert _condition(_status(None, asked=False, available=False), MONITORED) is None


def test_missing_crd_is_a_false_condition_and_a_warning_event_but_ready_stays() -> None:
    status = _status(None, asked=True, available=False)
    monitored = _condition(status, MONITORED)
    assert monitored is not None
    assert (monitored["status"], monitored["reason"]) == ("False", "ServiceMonitorUnavailable")
    assert "monitoring.coreos.com/v1 ServiceMonitor" in monitored["message"]
    ready = _condition(status, "Ready")
    assert ready is not None
    assert ready["status"] == "True"
    events = transition_events(None, status)
    assert Event("Warning", Reason.SERVICE_MONITOR_UNAVAILABLE, monitored["message"]) in events
    # Said once: the next identical round posts nothing more.
    again = _status(status, asked=True, available=False)
    assert all(
        e.reason != Reason.SERVICE_MONITOR_UNAVAILABLE for e in transition_events(status, again)
    )


def test_crd_installed_later_turns_the_condition_true() -> None:
    before = _status(None, asked=True, available=False)
    after = _status(before, asked=True, available=True)
    monitored = _condition(after, MONITORED)
    assert monitored is not None
    assert (monitored["status"], monitored["reason"]) == ("True", "ServiceMonitorApplied")


def test_following_the_workers_keeps_the_condition() -> None:
    status = _status(None, asked=True, available=False)
    followed = follow_workers(status, workers=HEALTHY, problem=None, now=T0 + timedelta(seconds=5))
    assert followed is not None
    assert _condition(dict(followed), MONITORED) == _condition(status, MONITORED)
