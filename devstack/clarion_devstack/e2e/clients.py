"""Mobile-style clients through the load balancer, with arrival times for measurements.

Each ``Viewer`` runs the product's reference client (``ClarionClient``: backoff with
full jitter, resume via ``lastId``, cookie stickiness, heartbeat) and records every
welcome (which replica, when) and every event (when), so tests can check exact delivery
and measure how long a failover took.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Self

from clarion_client.client import ClarionClient
from clarion_devstack.e2e.events import (
    BROADCAST,
    Person,
    Traffic,
    UnionFlowProducer,
    account,
    expected_for,
)
from clarion_devstack.harness import Collector


@dataclass(frozen=True)
class Welcome:
    at: float
    replica: str


class Viewer(Collector):
    """A harness ``Collector`` for one person that also records every welcome (which
    replica, when) and each event's arrival (monotonic), for failover measurements."""

    def __init__(self, person: Person, client: ClarionClient) -> None:
        self.person = person
        self.arrivals: list[float] = []
        self.welcomes: list[Welcome] = []
        super().__init__(client)

    @property
    def replica(self) -> str | None:
        return self.welcomes[-1].replica if self.welcomes else None

    def _welcomed(self, welcome: dict[str, Any]) -> None:
        super()._welcomed(welcome)
        self.welcomes.append(Welcome(time.monotonic(), str(welcome.get("replicaId"))))

        async def notify() -> None:
            async with self._changed:
                self._changed.notify_all()

        # Called from the client's receive loop: wake waiters without blocking it.
        asyncio.get_running_loop().create_task(notify())

    def _received(self, event: dict[str, Any]) -> None:
        super()._received(event)
        self.arrivals.append(time.monotonic())

    async def wait(self, predicate: Callable[[Self], bool], within: float = 30.0) -> None:
        try:
            await super().wait(predicate, within)
        except TimeoutError:
            raise AssertionError(
                f"{self.person.user}: condition not met in {within}s "
                f"({len(self.events)} events, welcomes {self.welcomes})"
            ) from None


def viewer(
    url: str,
    token: str,
    person: Person,
    *,
    cookies: dict[str, str] | None = None,
    last_id: str | None = None,
    backoff_base: float = 0.25,
    backoff_cap: float = 4.0,
) -> Viewer:
    client = ClarionClient(
        url, token, last_id=last_id, backoff_base=backoff_base, backoff_cap=backoff_cap
    )
    if cookies:
        client.cookies.update(cookies)
    return Viewer(person, client)


async def all_welcomed(viewers: Sequence[Viewer], within: float = 30.0) -> None:
    for v in viewers:
        await v.wait(lambda x: bool(x.welcomes), within)


async def produce_steadily(
    producer: UnionFlowProducer, traffic: Traffic, stop: asyncio.Event, rate: float = 200.0
) -> int:
    """Produce at about ``rate`` events/s until ``stop`` is set; return how many."""
    count = 0
    started = time.monotonic()
    while not stop.is_set():
        due = int((time.monotonic() - started) * rate) + 1
        while count < due:
            traffic.next(producer)
            count += 1
        # Pacing a load generator, not waiting for a condition: wake at the next tick
        # or as soon as we are told to stop.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 1 / rate * 10)
    return count


async def settle(
    producer: UnionFlowProducer, viewers: Sequence[Viewer], within: float = 45
) -> None:
    """Wait until every viewer has every event meant for it, then a broadcast sentinel.

    The sentinel is produced after everything else and reaches every viewer; a viewer
    holding all its expected events and the sentinel has nothing left in flight.
    """
    await asyncio.to_thread(producer.flush, 60)
    sentinel = producer.emit(BROADCAST, "SENTINEL", None)
    await asyncio.to_thread(producer.flush, 60)
    sent = producer.delivered()
    for v in viewers:
        wanted = set(expected_for(sent, v.person.organizations, v.person.user))

        def done(x: Viewer, wanted: set[int] = wanted) -> bool:
            got = set(x.seqs())
            return sentinel in got and wanted <= got

        try:
            await v.wait(done, within)
        except AssertionError as error:
            acc = account(v.seqs(), sorted(wanted), sent)
            raise AssertionError(
                f"{error}; lost {acc.lost[:20]} ({len(acc.lost)}), duplicated "
                f"{acc.duplicated[:10]}, resets {v.resets}, stats {v.client.stats}"
            ) from None


def report(
    producer: UnionFlowProducer, viewers: Sequence[Viewer]
) -> tuple[dict[str, int], list[str]]:
    """Totals over all viewers (produced, expected, delivered, lost, duplicated) and problems."""
    sent = producer.delivered()
    totals = {
        "produced": len(sent),
        "expected": 0,
        "delivered": 0,
        "lost": 0,
        "duplicated": 0,
        "unexpected": 0,
        "out_of_order": 0,
    }
    problems = []
    for v in viewers:
        acc = account(v.seqs(), expected_for(sent, v.person.organizations, v.person.user), sent)
        totals["expected"] += acc.expected
        totals["delivered"] += acc.delivered
        totals["lost"] += len(acc.lost)
        totals["duplicated"] += len(acc.duplicated)
        totals["unexpected"] += len(acc.unexpected)
        totals["out_of_order"] += len(acc.out_of_order)
        if not acc.exact:
            problems.append(
                f"{v.person.user}: lost {acc.lost[:10]} dup {acc.duplicated[:10]} "
                f"unexpected {acc.unexpected[:10]} disorder {acc.out_of_order[:3]}"
            )
    return totals, problems


async def settled_report(
    producer: UnionFlowProducer, viewers: Sequence[Viewer], within: float = 45
) -> tuple[dict[str, int], list[str]]:
    """``settle``, then ``report``: the exact accounting once nothing is in flight."""
    await settle(producer, viewers, within)
    return report(producer, viewers)


async def all_past(
    producer: UnionFlowProducer, viewers: Sequence[Viewer], within: float = 30.0
) -> None:
    """Until every viewer has an event produced after this call: all are served again."""
    mark = producer.produced
    await asyncio.gather(
        *(v.wait(lambda x: max(x.seqs(), default=0) > mark, within) for v in viewers)
    )


async def stop_all(viewers: Sequence[Viewer]) -> None:
    for v in viewers:
        await v.stop()


def print_totals(tag: str, title: str, totals: dict[str, int], extra: str = "") -> None:
    """One line of counts for a scenario, in the test's output."""
    print(
        f"\n[{tag}] {title}: produced {totals['produced']}, expected "
        f"{totals['expected']}, delivered {totals['delivered']}, lost {totals['lost']}, "
        f"duplicated {totals['duplicated']}, unexpected {totals['unexpected']}{extra}"
    )
