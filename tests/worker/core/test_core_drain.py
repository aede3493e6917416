"""Drain plans spread closes and reconnects (the clients' backoff: tests/clients/python)."""

from __future__ import annotations

import random

from clarion_worker.core.drain import plan_drain


def test_drain_spreads_every_connection_over_the_window() -> None:
    ids = [f"c{i}" for i in range(1000)]
    plan = plan_drain(ids, window_seconds=30, rng=random.Random(1))
    assert len(plan) == 15
    assert [b.at_seconds for b in plan] == [i * 2.0 for i in range(15)]
    assert all(b.at_seconds < 30 for b in plan)
    notices = [n for b in plan for n in b.notices]
    assert sorted(n.connection_id for n in notices) == sorted(ids)
    assert max(len(b.notices) for b in plan) - min(len(b.notices) for b in plan) <= 67
    delays = [n.after_ms for n in notices]
    assert all(0 <= d < 2000 for d in delays)
    assert len(set(delays)) > 500  # jittered, not lock-step
    assert [n.connection_id for n in plan[0].notices] != ids[: len(plan[0].notices)]  # shuffled


def test_drain_edge_cases() -> None:
    assert plan_drain([], window_seconds=30, rng=random.Random(1)) == []
    few = plan_drain(["a", "b"], window_seconds=30, rng=random.Random(1))
    assert len(few) == 2
    assert few[1].at_seconds == 15
    instant = plan_drain(["a", "b", "c"], window_seconds=0, rng=random.Random(1))
    assert len(instant) == 1
    assert instant[0].at_seconds == 0
    assert all(n.after_ms == 0 for n in instant[0].notices)
