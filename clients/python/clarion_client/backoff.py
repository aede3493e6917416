"""Client reconnect policy: exponential backoff with full jitter, capped.

``delay = uniform(0, min(cap, base * 2**attempt))`` (AWS "full jitter"), so a fleet of
clients dropped at the same moment returns spread over the whole interval instead of in
lock-step. A connection that stayed up for ``stable_seconds`` resets the attempt count.
Pure: times are passed in (monotonic seconds); the random source is injected.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol


class RandomSource(Protocol):
    """The part of ``random.Random`` the backoff uses (injected, so tests are exact)."""

    def uniform(self, a: float, b: float) -> float: ...


MAX_EXPONENT = 62  # beyond this 2**attempt only wastes big-int work: the cap wins anyway


def full_jitter(attempt: int, rng: RandomSource, *, base: float = 1.0, cap: float = 60.0) -> float:
    ceiling = min(cap, base * 2 ** min(max(attempt, 0), MAX_EXPONENT))
    return rng.uniform(0.0, ceiling)


@dataclass(slots=True)
class Backoff:
    rng: RandomSource
    base: float = 1.0
    cap: float = 60.0
    stable_seconds: float = 30.0
    attempt: int = 0
    _connected_at: float | None = field(default=None, repr=False)

    def next_delay(self) -> float:
        """The delay before the next reconnect attempt."""
        delay = full_jitter(self.attempt, self.rng, base=self.base, cap=self.cap)
        self.attempt += 1
        return delay

    def connected(self, now: float) -> None:
        self._connected_at = now

    def disconnected(self, now: float) -> None:
        if self._connected_at is not None and now - self._connected_at >= self.stable_seconds:
            self.attempt = 0
        self._connected_at = None
