"""What a Java producer writes, through a real worker and real Kafka (issue 18 items 1-2,
issue 12 item 8): a user-topic event without a user reaches its organization and is
counted; timestamps in Java's forms become the producer's instant as ``ts``; an
unreadable one is replaced by the Kafka timestamp and counted."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable

import pytest

from clarion_devstack.harness import (
    ORIGIN,
    ChannelTopics,
    Collect,
    Collector,
    Keys,
    Producer,
    StartWorker,
    WorkerProcess,
    metric_reaches,
    settle,
)

pytestmark = pytest.mark.integration

Connect = Callable[[list[str], str], Awaitable[Collector]]
#: 2026-11-30T06:10:38.952Z: what every timestamp below stands for.
INSTANT = 1_796_019_038_952
#: The same instant as Java code writes it, the worker's zone being Europe/Paris (UTC+1).
JAVA_FORMS: dict[str, bytes] = {
    "LocalDateTime via Quarkus Jackson": b'"2026-11-30T07:10:38.952487088"',
    "LocalDateTime.toString()": b'"2026-11-30T07:10:38.952487"',
    "LocalDateTime, Jackson array": b"[2026,11,30,7,10,38,952487088]",
    "ZonedDateTime.toString()": b'"2026-11-30T07:10:38.952487088+01:00[Europe/Paris]"',
    "Instant.toString()": b'"2026-11-30T06:10:38.952487088Z"',
    "Instant, default ObjectMapper": b"1796019038.952487088",
    "Instant.toEpochMilli()": b"1796019038952",
}


def _record(seq: int, org: str, timestamp: bytes, event_type: str = "APPROVAL_PENDING") -> bytes:
    head = json.dumps({"type": event_type, "organizationId": org, "data": {"seq": seq}})
    return head[:-1].encode() + b',"timestamp":' + timestamp + b"}"


@pytest.fixture
def worker(start_worker: StartWorker) -> WorkerProcess:
    """A worker that reads producers' zone-less times as Paris time (the seed's services)."""
    return start_worker(routing={"timestampZone": "Europe/Paris"})


@pytest.fixture
def connect(worker: WorkerProcess, keys: Keys, collect: Collect) -> Connect:
    """A browser client of ``worker`` for a user of some organizations, once connected."""

    async def connected(organizations: list[str], user: str) -> Collector:
        client = collect(worker.ws, keys.token(organizations, user), extra_headers=ORIGIN)
        async with asyncio.timeout(20):
            await client.connected.wait()
        return client

    return connected


async def test_user_event_without_user_reaches_its_organization(
    worker: WorkerProcess, connect: Connect, topics: ChannelTopics, producer: Producer
) -> None:
    alice = await connect(["org-a"], "alice")
    carol = await connect(["org-a", "org-b"], "carol")
    bob = await connect(["org-b"], "bob")
    # The seed's publishBroadcastNotification: the user topic, an organization, no userId.
    broadcast = _record(9001, "org-a", b'"2026-11-30T07:10:38.952487088"', "BROADCAST_NOTIFICATION")
    await producer.raw(topics.notify, broadcast, key=b"org-a")
    await settle(producer, [worker], [alice, carol, bob], topics.bcast)

    for client in (alice, carol):
        (event,) = [e for e in client.events if e["data"]["seq"] == 9001]
        assert event["eventType"] == "BROADCAST_NOTIFICATION"
        assert event["organizationId"] == "org-a"
        assert "userId" not in event
        assert event["ts"] == INSTANT
    assert all(e["data"]["seq"] != 9001 for e in bob.events)
    assert worker.metric("clarion_worker_userless_events_total", topic=topics.notify) == 1
    assert (
        worker.metric(
            "clarion_worker_bad_records_total", topic=topics.notify, reason="missing_user"
        )
        == 0
    )


async def test_java_timestamps_become_the_producers_instant(
    worker: WorkerProcess, connect: Connect, topics: ChannelTopics, producer: Producer
) -> None:
    alice = await connect(["org-a"], "alice")
    forms = dict(enumerate(JAVA_FORMS.items(), start=1000))
    for seq, (_name, timestamp) in forms.items():
        await producer.raw(topics.approvals, _record(seq, "org-a", timestamp), key=b"org-a")
    # java.util.Date#toString(): not accepted; the Kafka timestamp stands in, counted.
    await producer.raw(
        topics.approvals, _record(2000, "org-a", b'"Mon Nov 30 07:10:38 CET 2026"'), key=b"org-a"
    )
    await settle(producer, [worker], [alice], topics.bcast)

    by_seq = {e["data"]["seq"]: e for e in alice.events}
    wrong = {
        name: by_seq[seq]["ts"] for seq, (name, _) in forms.items() if by_seq[seq]["ts"] != INSTANT
    }
    assert not wrong, wrong
    assert by_seq[2000]["ts"] == by_seq[2000]["kafkaTs"]
    await metric_reaches(
        worker,
        "clarion_worker_timestamps_ignored_total",
        1,
        topic=topics.approvals,
        reason="unparsable",
    )
    assert "producer timestamp ignored" in worker.log.read_text()
