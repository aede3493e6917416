"""When the worker runs a full garbage collection: a pure decision.

Every connection leaves reference cycles behind when it closes (websockets' parser
generator holds its protocol, a session and its connection point at each other, a
read-back's Kafka client and its connection likewise). Only the cyclic collector frees
them. The worker raises the collector's thresholds so that thousands of long-lived
sessions are not walked again and again (docs/benchmarks.md), which also means a full
collection almost never runs on its own: under churn the closed connections piled up
and RSS grew for as long as the churn lasted (the churn soak in docs/benchmarks.md).

So the worker collects deliberately, where the garbage comes from: after connections
have closed. Never while nothing closed (a steady fleet pays nothing), at most once per
``min_interval_seconds``, and at the latest ``max_interval_seconds`` after the first
close since the last collection, sooner when ``burst_closes`` connections have gone.

The other half is what the collector walks while connections arrive. A new connection's
objects (~85 tracked by the collector: protocol, ASGI task and its coroutine frames,
session) live as long as it does, yet each young-generation collection walks them once
more before they are promoted: in a reconnect storm of 10,000 clients, about 0.8 s of
one core went to walking them (W4, docs/benchmarks.md). After every ``freeze_opens``
new sessions the worker's process moves everything the collector tracks into its permanent
generation (``gc.freeze``, constant time), which automatic collections skip; the
deliberate full collection above unfreezes first, so what closed connections leave
behind is still freed there. What becomes garbage among frozen objects otherwise waits
for that collection (the next close), as the long-lived generation's garbage already
does under the raised thresholds.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class CollectionPolicy:
    #: Never two collections closer than this (a full collection walks every session).
    min_interval_seconds: float = 5.0
    #: Collect this long after the last collection once anything closed.
    max_interval_seconds: float = 30.0
    #: This many closes since the last collection: collect as soon as allowed.
    burst_closes: int = 1000
    #: Freeze what the collector tracks after this many new sessions; 0: never. The
    #: worker's process sets it (``server.main``, beside the collector's thresholds).
    freeze_opens: int = 0

    def due(self, closes_since: int, seconds_since: float) -> bool:
        """Whether to collect now, given closes and seconds since the last collection."""
        if closes_since <= 0 or seconds_since < self.min_interval_seconds:
            return False
        return closes_since >= self.burst_closes or seconds_since >= self.max_interval_seconds

    def freeze_due(self, opens_since: int) -> bool:
        """Whether to freeze the collector's generations, given new sessions since the last
        freeze: often enough that a burst of connections never fills the young generation."""
        return 0 < self.freeze_opens <= opens_since
