"""The full-collection policy: only after closes, rate-limited, sooner after a burst; and
when new sessions leave the young generation (a freeze)."""

from __future__ import annotations

import pytest

from clarion_worker.core.collection import CollectionPolicy

POLICY = CollectionPolicy(
    min_interval_seconds=5.0, max_interval_seconds=30.0, burst_closes=1000, freeze_opens=200
)


@pytest.mark.parametrize(
    ("closes", "seconds", "due"),
    [
        (0, 3600.0, False),  # a steady fleet never pays for a collection
        (1, 29.9, False),  # one close waits for the interval
        (1, 30.0, True),
        (999, 10.0, False),
        (1000, 10.0, True),  # a burst of closes: as soon as allowed
        (5000, 4.9, False),  # never two collections closer than the minimum
        (5000, 5.0, True),
    ],
)
def test_a_collection_is_due_only_after_closes(closes: int, seconds: float, due: bool) -> None:
    assert POLICY.due(closes, seconds) is due


@pytest.mark.parametrize(("opens", "due"), [(0, False), (199, False), (200, True), (5000, True)])
def test_a_freeze_is_due_after_enough_new_sessions(opens: int, due: bool) -> None:
    assert POLICY.freeze_due(opens) is due


def test_a_policy_freezes_nothing_unless_its_process_asks() -> None:
    assert CollectionPolicy().freeze_due(10**6) is False
