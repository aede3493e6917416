"""Workers against three brokers with replication: a leader SIGKILLed under load, and a
rolling restart of every broker, while numbered events flow through real workers to
real clients. Nothing may be lost or duplicated; the delivery pause is measured."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import pytest

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
from clarion_devstack.kafka_load import (
    ORGS,
    RATE,
    USER,
    Load,
    connect_clients,
    create_channel_topics,
    fully_replicated,
    longest_gap,
    partitions,
    worker_delay,
)

pytestmark = pytest.mark.integration


@pytest.fixture
async def topics(kafka_cluster_3: KafkaCluster, unique_name: Callable[[str], str]) -> ChannelTopics:
    return await create_channel_topics(kafka_cluster_3.bootstrap, unique_name("ha"))


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
async def producer(kafka_producer: Callable[..., Awaitable[Producer]]) -> Producer:
    return await kafka_producer(enable_idempotence=True)


@pytest.fixture
async def collectors(workers: tuple[Keys, list[WorkerProcess]]) -> AsyncIterator[list[Collector]]:
    """One client per worker (both organizations and the user); disconnected afterwards."""
    keys, started = workers
    connected = await connect_clients(keys, started)
    yield connected
    for collector in connected:
        await collector.stop()


async def _each_client_got_exactly_its_events(
    producer: Producer,
    workers: list[WorkerProcess],
    collectors: list[Collector],
    topics: ChannelTopics,
) -> None:
    """Once the workers have consumed everything sent: nothing lost, duplicated or reordered."""
    await settle(producer, workers, collectors, topics.bcast)
    expected = expected_for(producer.sent, set(ORGS), USER, topics)
    for collector in collectors:
        assert_exact(collector.seqs(), expected, producer.sent)


async def test_leader_sigkilled_under_load_loses_nothing(
    kafka_cluster_3: KafkaCluster,
    topics: ChannelTopics,
    workers: tuple[Keys, list[WorkerProcess]],
    collectors: list[Collector],
    producer: Producer,
    record_property: Callable[[str, object], None],
) -> None:
    cluster = kafka_cluster_3
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
    await _each_client_got_exactly_its_events(producer, workers[1], collectors, topics)
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


async def test_rolling_restart_of_every_broker_loses_nothing(
    kafka_cluster_3: KafkaCluster,
    topics: ChannelTopics,
    workers: tuple[Keys, list[WorkerProcess]],
    collectors: list[Collector],
    producer: Producer,
) -> None:
    cluster = kafka_cluster_3
    await fully_replicated(cluster.bootstrap, topics)
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
    await _each_client_got_exactly_its_events(producer, workers[1], collectors, topics)
    pauses = [longest_gap(c.received_at, began) for c in collectors]
    delays = [worker_delay(c, load) for c in collectors]
    print(
        f"\nrolling restart: {len(producer.sent)} events, 0 lost, 0 duplicated; "
        f"longest delivery pause per client {[round(p, 2) for p in pauses]} s; "
        f"longest producer ack pause {longest_gap(load.acked_at, 0):.2f} s; longest "
        f"ack-to-client delay {[round(d, 2) for d in delays]} s"
    )
