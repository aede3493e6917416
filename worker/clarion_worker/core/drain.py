"""The drain plan: spread reconnect advice and closes over a window, in batches.

Closing every connection at once makes every client return in the same second. Instead
the connections (in random order) are split into batches, one every ``window / batches``
seconds; each client in a batch gets ``reconnect`` advice with its own ``afterMs`` drawn
uniformly within one batch interval, so arrivals elsewhere are spread evenly too.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, TypeVar

_T = TypeVar("_T")


class RandomSource(Protocol):
    """The part of ``random.Random`` the plans use (injected, so tests are exact)."""

    def uniform(self, a: float, b: float) -> float: ...

    def shuffle(self, x: list[_T]) -> None: ...


@dataclass(frozen=True, slots=True)
class DrainNotice:
    connection_id: str
    after_ms: int


@dataclass(frozen=True, slots=True)
class DrainBatch:
    """At ``at_seconds`` after the drain starts: send each notice, then close (4100)."""

    at_seconds: float
    notices: tuple[DrainNotice, ...]


def plan_drain(
    connection_ids: Sequence[str],
    *,
    window_seconds: float,
    rng: RandomSource,
    batch_interval_seconds: float = 2.0,
) -> list[DrainBatch]:
    if not connection_ids:
        return []
    ids = list(connection_ids)
    rng.shuffle(ids)
    batches = max(1, min(len(ids), math.ceil(window_seconds / batch_interval_seconds)))
    interval = window_seconds / batches
    spread_ms = max(1.0, interval * 1000.0)
    plan: list[DrainBatch] = []
    size = math.ceil(len(ids) / batches)
    for index in range(batches):
        chunk = ids[index * size : (index + 1) * size]
        if not chunk:
            break
        latest_ms = int(spread_ms) - 1  # uniform() may return its upper bound
        notices = tuple(
            DrainNotice(item, min(int(rng.uniform(0.0, spread_ms)), latest_ms)) for item in chunk
        )
        plan.append(DrainBatch(index * interval, notices))
    return plan
