"""The Python client's reconnect policy: full jitter, capped, reset after a stable
connection (pure: the random source is injected, times are passed in)."""

from __future__ import annotations

import random

from clarion_client.backoff import Backoff, full_jitter


class Recorder(random.Random):
    """A seeded random source that records the bounds it was asked for."""

    def __init__(self) -> None:
        super().__init__(5)
        self.bounds: list[tuple[float, float]] = []

    def uniform(self, a: float, b: float) -> float:
        self.bounds.append((a, b))
        return super().uniform(a, b)


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
