"""Workers against three brokers with replication: a leader SIGKILLed under load, and a
rolling restart of every broker, while numbered events flow through real workers to
real clients. Nothing may be lost or duplicated; the delivery pause is measured."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from clarion_devstack.harness import (
    ChannelTopics,
    Collector,
    Keys,
    Producer,
    WorkerProcess,
    assert_exact,
    expected_for,
    settle,
    start_worker_process,
)
from clarion_devstack.kafka_cluster import KafkaCluster
from clarion_worker.client import ClarionClient

pytestmark = pytest.mark.integration

ORGS = ["org-a", "org-b"]
USER = "u-1"
#: Events per second the producer aims at (one send every 20 ms, acks=all).
RATE = 50


@pytest.fixture
async def topics(kafka_cluster_3: KafkaCluster, unique_name: Callable[[str], str]) -> ChannelTopics:
    prefix = unique_name("ha")
    names = ChannelTopics(f"{prefix}.approvals", f"{prefix}.notify", f"{prefix}.bcast")
    config = {"min.insync.replicas": "2"}
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_cluster_3.bootstrap)
    await admin.start()
    try:
        await admin.create_topics(
            [
                NewTopic(names.approvals, 3, 3, topic_configs=config),
                NewTopic(names.notify, 2, 3, topic_configs=config),
                NewTopic(names.bcast, 1, 3, topic_configs=config),
            ]
        )
    finally:
        await admin.close()
    return names


async def partitions(bootstrap: str, topics: ChannelTopics) -> list[dict[str, Any]]:
    """Each partition of the channel with its leader, replicas and ISR."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        described = await admin.describe_topics([topics.approvals, topics.notify, topics.bcast])
    finally:
        await admin.close()
    return [{**p, "topic": t["topic"]} for t in described for p in t["partitions"]]


async def fully_replicated(bootstrap: str, topics: ChannelTopics, within: float = 90.0) -> None:
    """Wait until every partition has all three replicas in sync (no under-replication)."""
    async with asyncio.timeout(within):
        while True:
            found = await partitions(bootstrap, topics)
            if found and all(len(p["isr"]) == 3 for p in found):
                return
            await asyncio.sleep(0.5)


@pytest.fixture
def workers(
    kafka_cluster_3: KafkaCluster, topics: ChannelTopics, tmp_path: Path
) -> Iterator[tuple[Keys, list[WorkerProcess]]]:
    keys = Keys(tmp_path)
    started = [
        start_worker_process(
            name=name,
            kafka_bootstrap=kafka_cluster_3.bootstrap,
            topics=topics,
            keys=keys,
            directory=tmp_path,
        )
        for name in ("w1", "w2")
    ]
    yield keys, started
    for worker in started:
        worker.stop()


@pytest.fixture
async def producer(kafka_cluster_3: KafkaCluster) -> AsyncIterator[Producer]:
    kafka = AIOKafkaProducer(
        bootstrap_servers=kafka_cluster_3.bootstrap,
        acks="all",
        enable_idempotence=True,
        linger_ms=0,
        request_timeout_ms=30000,
    )
    await kafka.start()
    try:
        yield Producer(kafka)
    finally:
        await kafka.stop()


class Load:
    """Numbered events at a steady rate over the channel's three topics until stopped."""

    def __init__(self, producer: Producer, topics: ChannelTopics) -> None:
        self.producer = producer
        self.topics = topics
        self.acked_at: list[float] = []
        #: Wall-clock acknowledgement time of each event by seq (clients record wall time).
        self.acked_wall: dict[int, float] = {}
        self._stop = asyncio.Event()
        self.task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        i = 0
        while not self._stop.is_set():
            i += 1
            org = ORGS[i % 2]
            if i % 5 == 0:
                record = await self.producer.send(self.topics.notify, "NOTE", org, user=USER)
            elif i % 7 == 0:
                record = await self.producer.send(self.topics.bcast, "ALL", None)
            else:
                record = await self.producer.send(
                    self.topics.approvals, "APPROVAL", org, key=f"{org}-{i % 3}"
                )
            self.acked_at.append(time.monotonic())
            self.acked_wall[record["data"]["seq"]] = time.time()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), 1 / RATE)

    async def until(self, count: int, within: float = 60.0) -> None:
        """Wait until ``count`` more events than now were acknowledged."""
        target = len(self.producer.sent) + count
        async with asyncio.timeout(within):
            while len(self.producer.sent) < target:  # noqa: ASYNC110 - our own task's progress
                await asyncio.sleep(0.02)

    async def stop(self) -> None:
        self._stop.set()
        await self.task


def worker_delay(collector: Collector, load: Load) -> float:
    """The longest time from the broker's acknowledgement to the client's receipt: what
    the workers add (the producer's own wait for Kafka is not in it)."""
    return max(
        (
            at - load.acked_wall[event["data"]["seq"]]
            for event, at in zip(collector.events, collector.received_at, strict=True)
            if event["data"]["seq"] in load.acked_wall
        ),
        default=0.0,
    )


def longest_gap(times: list[float], since: float) -> float:
    """The longest time between two consecutive instants after ``since``."""
    after = [t for t in times if t >= since]
    return max((b - a for a, b in itertools.pairwise(after)), default=0.0)


async def connect_clients(keys: Keys, workers: list[WorkerProcess]) -> list[Collector]:
    collectors = []
    for worker in workers:
        token = keys.token(ORGS, USER)
        collector = Collector(ClarionClient(worker.ws, token, backoff_base=0.05, backoff_cap=0.5))
        await asyncio.wait_for(collector.connected.wait(), 20)
        collectors.append(collector)
    return collectors


async def test_leader_sigkilled_under_load_loses_nothing(
    kafka_cluster_3: KafkaCluster,
    topics: ChannelTopics,
    workers: tuple[Keys, list[WorkerProcess]],
    producer: Producer,
    record_property: Callable[[str, object], None],
) -> None:
    keys, started = workers
    cluster = kafka_cluster_3
    collectors = await connect_clients(keys, started)
    load = Load(producer, topics)
    try:
        await load.until(2 * RATE)
        leaders = [p["leader"] for p in await partitions(cluster.bootstrap, topics)]
        victim = max(set(leaders), key=leaders.count)
        killed_at_wall, killed_at = time.time(), time.monotonic()
        cluster.kill(victim)
        # Deliveries resume from the new leaders: a few seconds' worth more events.
        await load.until(3 * RATE)
        remaining = await partitions(cluster.bootstrap, topics)
        assert all(p["leader"] != victim for p in remaining)
        assert any(len(p["isr"]) == 2 for p in remaining), "no partition lost a replica"
        cluster.start(victim)
        await fully_replicated(cluster.bootstrap, topics)
        await load.until(RATE)
    finally:
        await load.stop()
    try:
        await settle(producer, started, collectors, topics.bcast)
        for collector in collectors:
            expected = expected_for(producer.sent, set(ORGS), USER, topics)
            assert_exact(collector.seqs(), expected, producer.sent)
        pauses = [longest_gap(c.received_at, killed_at_wall - 1) for c in collectors]
        ack_pause = longest_gap(load.acked_at, killed_at - 1)
        record_property("delivery_pause_seconds", max(pauses))
        record_property("producer_pause_seconds", ack_pause)
        delays = [worker_delay(c, load) for c in collectors]
        record_property("worker_delay_seconds", max(delays))
        record_property("events", len(producer.sent))
        print(
            f"\nleader loss: broker {victim} led {leaders.count(victim)}/{len(leaders)} "
            f"partitions; {len(producer.sent)} events, 0 lost, 0 duplicated; longest "
            f"delivery pause per client {[round(p, 2) for p in pauses]} s; longest "
            f"producer ack pause {ack_pause:.2f} s; longest ack-to-client delay "
            f"{[round(d, 2) for d in delays]} s"
        )
    finally:
        for collector in collectors:
            await collector.stop()


async def test_rolling_restart_of_every_broker_loses_nothing(
    kafka_cluster_3: KafkaCluster,
    topics: ChannelTopics,
    workers: tuple[Keys, list[WorkerProcess]],
    producer: Producer,
) -> None:
    keys, started = workers
    cluster = kafka_cluster_3
    await fully_replicated(cluster.bootstrap, topics)
    collectors = await connect_clients(keys, started)
    began = time.time()
    load = Load(producer, topics)
    try:
        await load.until(RATE)
        for node_id in sorted(cluster.nodes):
            cluster.stop(node_id)
            await load.until(RATE // 2)
            cluster.start(node_id)
            await fully_replicated(cluster.bootstrap, topics)
            await load.until(RATE // 2)
    finally:
        await load.stop()
    try:
        await settle(producer, started, collectors, topics.bcast)
        for collector in collectors:
            expected = expected_for(producer.sent, set(ORGS), USER, topics)
            assert_exact(collector.seqs(), expected, producer.sent)
        pauses = [longest_gap(c.received_at, began) for c in collectors]
        delays = [worker_delay(c, load) for c in collectors]
        print(
            f"\nrolling restart: {len(producer.sent)} events, 0 lost, 0 duplicated; "
            f"longest delivery pause per client {[round(p, 2) for p in pauses]} s; "
            f"longest producer ack pause {longest_gap(load.acked_at, 0):.2f} s; longest "
            f"ack-to-client delay {[round(d, 2) for d in delays]} s"
        )
    finally:
        for collector in collectors:
            await collector.stop()
