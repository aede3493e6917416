"""End to end as UnionFlow would run it: the operator's rendering, three worker processes
behind HAProxy with cookie stickiness, events from confluent-kafka, mobile-style clients.

Every check is exact: each event carries a sequence number, and each client must get
every event meant for it once, in partition order, and nothing else.
"""

from __future__ import annotations

import asyncio
import random
import statistics
import time
from collections.abc import Awaitable, Callable, Sequence

import pytest

from clarion_devstack import stack
from clarion_devstack.e2e import clients
from clarion_devstack.e2e.clients import Viewer
from clarion_devstack.e2e.cluster import Deployment, replica_counts
from clarion_devstack.e2e.events import ORGS, PEOPLE, Person, Traffic, UnionFlowProducer
from clarion_devstack.pytest_plugin import LocalStack

pytestmark = pytest.mark.integration

#: The ``exact_and_isolated`` fixture (conftest.py).
ExactAndIsolated = Callable[[Sequence[Viewer], str, str], Awaitable[None]]


def _connect(dep: Deployment, people: tuple[Person, ...] = PEOPLE) -> list[Viewer]:
    return [clients.viewer(dep.ws_url, dep.token(p), p) for p in people]


def _traffic(seed: int) -> Traffic:
    return Traffic(ORGS, PEOPLE, random.Random(seed))


async def test_each_client_gets_exactly_its_events_through_the_lb(
    healthy: Deployment, producer: UnionFlowProducer, exact_and_isolated: ExactAndIsolated
) -> None:
    viewers = _connect(healthy)
    try:
        await clients.all_welcomed(viewers)
        # leastconn spreads the clients over every replica.
        assert len(replica_counts(viewers)) == 3, replica_counts(viewers)
        traffic = _traffic(1)
        for _ in range(400):
            traffic.next(producer)
        await exact_and_isolated(viewers, "e2e", "isolation")
    finally:
        await clients.stop_all(viewers)


async def test_a_reconnecting_client_with_its_cookie_lands_on_the_same_replica(
    healthy: Deployment,
) -> None:
    first = _connect(healthy)
    try:
        await clients.all_welcomed(first)
        cookie = healthy.rendered.cookie_name if healthy.rendered else ""
        for v in first:
            # HAProxy's cookie names the server, and the server is the replica.
            assert v.client.cookies.get(cookie) == v.replica
    finally:
        await clients.stop_all(first)
    again = [
        clients.viewer(
            healthy.ws_url, healthy.token(v.person), v.person, cookies=dict(v.client.cookies)
        )
        for v in first
    ]
    try:
        await clients.all_welcomed(again)
        assert [v.replica for v in again] == [v.replica for v in first]
    finally:
        await clients.stop_all(again)


async def test_sigkill_of_a_replica_under_load_loses_nothing(
    healthy: Deployment, producer: UnionFlowProducer
) -> None:
    people = PEOPLE * 2  # 18 clients, six per replica
    viewers = _connect(healthy, people)
    stop = asyncio.Event()
    try:
        await clients.all_welcomed(viewers)
        load = asyncio.create_task(clients.produce_steadily(producer, _traffic(2), stop, rate=150))
        await asyncio.gather(*(v.wait(lambda x: len(x.events) >= 5) for v in viewers))
        counts = replica_counts(viewers)
        victim_id = max(counts, key=lambda r: counts[r])
        victims = [v for v in viewers if v.replica == victim_id]
        victim = healthy.worker(victim_id)
        killed_at = time.monotonic()
        victim.kill()
        for v in victims:
            await v.wait(lambda x: x.replica not in (None, victim_id), within=30)
        reconnect = [
            next(w.at for w in v.welcomes if w.at > killed_at) - killed_at for v in victims
        ]
        # Resumed: the first event after the reconnect has arrived.
        for v in victims:
            await v.wait(lambda x: bool(x.arrivals) and x.arrivals[-1] > x.welcomes[-1].at, 30)
        resumed = [
            next(t for t in v.arrivals if t > v.welcomes[-1].at) - killed_at for v in victims
        ]
        # Keep the load on a little after everyone is back.
        await clients.all_past(producer, viewers)
        stop.set()
        await load
        totals, problems = await clients.settled_report(producer, viewers)
        clients.print_totals(
            "e2e",
            "SIGKILL failover",
            totals,
            f"; {len(victims)} clients of {victim_id} reconnected in "
            f"max {max(reconnect):.2f}s (median {statistics.median(reconnect):.2f}s), "
            f"all resumed within {max(resumed):.2f}s",
        )
        assert not problems, problems
        assert all(v.replica != victim_id for v in victims)
    finally:
        stop.set()
        await clients.stop_all(viewers)
        healthy.ensure_all_up()


async def test_rolling_restart_with_drain_loses_nothing(
    healthy: Deployment, producer: UnionFlowProducer
) -> None:
    viewers = _connect(healthy)
    stop = asyncio.Event()
    try:
        await clients.all_welcomed(viewers)
        load = asyncio.create_task(clients.produce_steadily(producer, _traffic(3), stop, rate=100))
        # A cursor exists once a client has an event: resume covers everything after it.
        await asyncio.gather(*(v.wait(lambda x: len(x.events) >= 3) for v in viewers))
        for replica in healthy.workers:
            replica.terminate()
            assert await asyncio.to_thread(replica.wait_exit, 30) == 0
            await asyncio.to_thread(healthy.restart, replica)
        await clients.all_past(producer, viewers)
        stop.set()
        await load
        totals, problems = await clients.settled_report(producer, viewers)
        advice = sum(v.client.stats.reconnect_advice for v in viewers)
        clients.print_totals("e2e", "rolling restart", totals, f"; drain advice received {advice}")
        assert not problems, problems
        # Every client was drained (reconnect advice), none was just cut.
        assert all(v.client.stats.reconnect_advice >= 1 for v in viewers)
    finally:
        stop.set()
        await clients.stop_all(viewers)


async def test_kafka_restart_workers_reconnect_and_continue(
    healthy: Deployment, producer: UnionFlowProducer, own_stack: LocalStack
) -> None:
    viewers = _connect(healthy)
    traffic = _traffic(4)
    try:
        await clients.all_welcomed(viewers)
        for _ in range(150):
            traffic.next(producer)
        await asyncio.to_thread(producer.flush, 30)
        await asyncio.to_thread(stack.stop_component, own_stack.env, "kafka")
        try:
            # Queued in librdkafka while the broker is down, delivered once it is back.
            for _ in range(150):
                traffic.next(producer)
        finally:
            await asyncio.to_thread(
                stack.start_component, own_stack.settings, own_stack.env, "kafka"
            )
        for _ in range(150):
            traffic.next(producer)
        totals, problems = await clients.settled_report(producer, viewers, within=90)
        clients.print_totals("e2e", "Kafka restart", totals)
        assert not problems, problems
        assert all(w.ready() for w in healthy.workers)
    finally:
        await clients.stop_all(viewers)
