"""Drain plans spread closes and reconnects; backoff uses full jitter, capped, with reset."""

from __future__ import annotations

import random

from clarion_worker.core.backoff import Backoff, full_jitter
from clarion_worker.core.drain import plan_drain


class Recorder(random.Random):
    """A seeded random source that records the bounds it was asked for."""

    def __init__(self) -> None:
        super().__init__(5)
        self.bounds: list[tuple[float, float]] = []

    def uniform(self, a: float, b: float) -> float:
        self.bounds.append((a, b))
        return super().uniform(a, b)


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


def test_full_jitter_bounds_and_cap() -> None:
    rng = Recorder()
    for attempt in range(10):
        delay = full_jitter(attempt, rng, base=1.0, cap=60.0)
        assert 0 <= delay <= min(60.0, 2.0**attempt)
    assert rng.bounds[:7] == [
        (0.0, 1.0),
        (0.0, 2.0),
        (0.0, 4.0),
        (0.0, 8.0),
        (0.0, 16.0),
        (0.0, 32.0),
        (0.0, 60.0),
    ]
    full_jitter(10**6, rng)  # huge attempt counts neither overflow nor exceed the cap
    assert rng.bounds[-1] == (0.0, 60.0)


def test_backoff_resets_only_after_a_stable_connection() -> None:
    rng = Recorder()
    backoff = Backoff(rng, stable_seconds=30)
    for _ in range(4):
        backoff.next_delay()
    assert backoff.attempt == 4
    backoff.connected(100.0)
    backoff.disconnected(110.0)  # flapping: keep backing off
    assert backoff.attempt == 4
    backoff.next_delay()
    assert rng.bounds[-1] == (0.0, 16.0)
    backoff.connected(200.0)
    backoff.disconnected(230.0)
    assert backoff.attempt == 0
    backoff.disconnected(231.0)  # without a connection: no change
    assert backoff.attempt == 0
