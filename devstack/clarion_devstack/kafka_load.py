"""Load and observation helpers for a replicated Kafka under faults: numbered events at a
steady rate (``acks=all``), partition leaders and ISRs, and the pauses clients see.

Shared by ``tests/kafka`` and ``bench/broker_loss.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient

from clarion_client.client import ClarionClient
from clarion_devstack import harness
from clarion_devstack.harness import ChannelTopics, Collector, Keys, Producer, WorkerProcess

ORGS = ["org-a", "org-b"]
USER = "u-1"
#: Events per second the producer aims at (one send every 20 ms, acks=all).
RATE = 50


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


async def create_channel_topics(bootstrap: str, prefix: str) -> ChannelTopics:
    """The harness's three topics, replicated three times with min.insync.replicas=2."""
    config = {"min.insync.replicas": "2"}
    return await harness.create_topics(
        bootstrap, ChannelTopics.named(prefix), replicas=3, config=config
    )


async def connect_clients(keys: Keys, workers: list[WorkerProcess]) -> list[Collector]:
    """One client per worker, for both organizations and the user; connected on return."""
    collectors = []
    for worker in workers:
        token = keys.token(ORGS, USER)
        collector = Collector(ClarionClient(worker.ws, token, backoff_base=0.05, backoff_cap=0.5))
        await asyncio.wait_for(collector.connected.wait(), 20)
        collectors.append(collector)
    return collectors
