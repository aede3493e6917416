"""Concurrent admin calls coalesced into one Kafka request each (``kafka_batch.py``).

The unit tests drive the coalescer with a recording ``send``; the integration tests send
the coalesced requests to the local stack's real broker through the Kafka port."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Mapping
from typing import Any

import pytest
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaConnectionError, RequestTimedOutError

from clarion_operator.core.errors import (
    INVALID_TOPIC_EXCEPTION,
    NONE,
    TOPIC_ALREADY_EXISTS,
    UNKNOWN_TOPIC_OR_PARTITION,
)
from clarion_operator.core.topics import CreateTopic
from clarion_operator.kafka_admin import AiokafkaAdmin
from clarion_operator.kafka_batch import AdminBatch, Coalescer
from clarion_operator.ports import KafkaCodeError


class Recorder:
    """A ``send`` that answers each name with its own upper case, after ``gate`` opens."""

    def __init__(self, fail: Exception | None = None) -> None:
        self.requests: list[list[str]] = []
        self.gate = asyncio.Event()
        self.gate.set()
        #: Set once a request was sent.
        self.sent = asyncio.Event()
        self.fail = fail

    async def __call__(self, items: list[tuple[str, None]]) -> Mapping[str, str]:
        self.requests.append([name for name, _ in items])
        self.sent.set()
        await self.gate.wait()
        if self.fail is not None:
            failure, self.fail = self.fail, None
            raise failure
        return {name: name.upper() for name, _ in items if name != "unanswered"}


def coalescer(send: Recorder, limit: int = 100) -> Coalescer[None, str | None]:
    return Coalescer(send, missing=None, limit=limit)


def items(*names: str) -> list[tuple[str, None]]:
    return [(name, None) for name in names]


async def test_calls_arriving_together_are_one_request_and_each_gets_its_part() -> None:
    send = Recorder()
    batch = coalescer(send)
    answers = await asyncio.gather(
        batch(items("a")), batch(items("b", "c")), batch(items("a", "unanswered"))
    )
    assert send.requests == [["a", "b", "c", "unanswered"]]
    assert answers == [{"a": "A"}, {"b": "B", "c": "C"}, {"a": "A", "unanswered": None}]
    assert (batch.requests, batch.calls) == (1, 3)


async def test_calls_arriving_during_a_request_go_together_in_the_next_one() -> None:
    send = Recorder()
    send.gate.clear()
    batch = coalescer(send)
    first = asyncio.create_task(batch(items("a")))
    await send.sent.wait()
    later = [asyncio.create_task(batch(items(name))) for name in "bcd"]
    await asyncio.sleep(0)  # the three tasks run up to their wait
    assert batch.calls == 4
    assert send.requests == [["a"]]  # one request in flight at a time
    send.gate.set()
    assert await first == {"a": "A"}
    assert [await t for t in later] == [{"b": "B"}, {"c": "C"}, {"d": "D"}]
    assert send.requests == [["a"], ["b", "c", "d"]]


async def test_a_request_failing_as_a_whole_fails_its_calls_and_the_next_goes_on() -> None:
    send = Recorder(fail=RequestTimedOutError())
    send.gate.clear()
    batch = coalescer(send)
    doomed = [asyncio.create_task(batch(items(name))) for name in "ab"]
    await send.sent.wait()
    after = asyncio.create_task(batch(items("c")))
    await asyncio.sleep(0)
    send.gate.set()
    for task in doomed:
        with pytest.raises(RequestTimedOutError):
            await task
    assert await after == {"c": "C"}


async def test_a_cancelled_caller_leaves_the_request_to_the_others() -> None:
    send = Recorder()
    send.gate.clear()
    batch = coalescer(send)
    gone = asyncio.create_task(batch(items("a")))
    kept = asyncio.create_task(batch(items("b")))
    await send.sent.wait()
    gone.cancel()
    send.gate.set()
    assert await kept == {"b": "B"}
    assert gone.cancelled()


async def test_closing_answers_every_waiting_call_with_a_connection_error() -> None:
    send = Recorder()
    send.gate.clear()
    batch = coalescer(send, limit=1)
    waiting = [asyncio.create_task(batch(items(name))) for name in "ab"]
    await send.sent.wait()
    await batch.close()
    for task in waiting:
        with pytest.raises(KafkaConnectionError):
            await task


# ---- against the real broker -------------------------------------------------------------


class Counting:
    """An admin client that counts the requests of each kind it is asked to send."""

    def __init__(self, client: AIOKafkaAdminClient) -> None:
        self.client = client
        self.sent: dict[str, int] = {"create": 0, "delete": 0, "metadata": 0, "configs": 0}

    async def create_topics(self, new_topics: list[Any]) -> Any:
        self.sent["create"] += 1
        return await self.client.create_topics(new_topics)

    async def delete_topics(self, topics: list[str]) -> Any:
        self.sent["delete"] += 1
        return await self.client.delete_topics(topics)

    async def describe_topics(self, topics: list[str]) -> list[dict[str, Any]]:
        self.sent["metadata"] += 1
        return await self.client.describe_topics(topics)

    async def describe_configs(self, config_resources: list[Any]) -> list[Any]:
        self.sent["configs"] += 1
        return await self.client.describe_configs(config_resources)


@pytest.fixture
async def real_admin(kafka_bootstrap: str) -> AsyncIterator[AIOKafkaAdminClient]:
    client = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap, request_timeout_ms=10_000)
    await client.start()
    try:
        yield client
    finally:
        await client.close()


async def _until_in_metadata(admin: AIOKafkaAdminClient, names: list[str]) -> None:
    """Until the broker's metadata lists every topic of ``names`` (30 s at most)."""
    for _ in range(300):
        if set(names) <= set(await admin.list_topics()):
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"not in the broker's metadata after 30 s: {names}")


@pytest.mark.integration
async def test_concurrent_creates_and_describes_get_their_own_answers_in_few_requests(
    real_admin: AIOKafkaAdminClient,
) -> None:
    run = uuid.uuid4().hex[:8]
    fresh = [f"batch-{run}-{i:02d}" for i in range(20)]
    existing, invalid = f"batch-{run}-existing", f"batch-{run}-bad name!"
    # One topic exists already (created alone, outside the coalescing).
    assert await AiokafkaAdmin(real_admin).create(CreateTopic(existing, 1, 1, ())) == NONE
    counting = Counting(real_admin)
    batch = AdminBatch(counting)
    try:
        admin = AiokafkaAdmin(counting, batch)  # type: ignore[arg-type]
        names = [*fresh, existing, invalid]
        codes = await asyncio.gather(
            *(admin.create(CreateTopic(n, 2, 1, (("retention.ms", "3600000"),))) for n in names)
        )
        assert dict(zip(names, codes, strict=True)) == {
            **dict.fromkeys(fresh, NONE),
            existing: TOPIC_ALREADY_EXISTS,
            invalid: INVALID_TOPIC_EXCEPTION,
        }
        # The broker answers metadata from its own cache, which may trail the controller
        # a moment after CreateTopics returns (seen on a loaded machine): wait for it.
        await _until_in_metadata(real_admin, [*fresh, existing])
        described = await asyncio.gather(
            *(admin.describe([n]) for n in names), return_exceptions=True
        )
        # Kafka answers the invalid name's metadata with InvalidTopic: its caller's error.
        refused = described.pop()
        assert isinstance(refused, KafkaCodeError)
        assert refused.code == INVALID_TOPIC_EXCEPTION
        observed = {n: d[n] for d in described if isinstance(d, dict) for n in d}
        for name in fresh:
            topic = observed[name]
            assert topic is not None, name
            assert (topic.partitions, topic.replication_factor) == (2, 1)
            assert topic.dynamic_configs == {"retention.ms": "3600000"}
        existing_topic = observed[existing]
        assert existing_topic is not None
        assert existing_topic.partitions == 1
        assert existing_topic.dynamic_configs == {}
        # 22 creates, 22 metadata and 21 config describes: a handful of requests.
        assert counting.sent["create"] < len(names) // 2, counting.sent
        assert counting.sent["metadata"] < len(names) // 2, counting.sent
        assert counting.sent["configs"] < len(names) // 2, counting.sent
        gone = f"batch-{run}-never-created"
        doomed = [*fresh, existing, gone]
        deleted = await asyncio.gather(*(admin.delete([n]) for n in doomed))
        assert {n: c for d in deleted for n, c in d.items()} == {
            **dict.fromkeys([*fresh, existing], NONE),
            gone: UNKNOWN_TOPIC_OR_PARTITION,
        }
        assert counting.sent["delete"] < len(doomed) // 2, counting.sent
    finally:
        await batch.close()
        left = set(await real_admin.list_topics()) & {*fresh, existing}
        if left:
            await real_admin.delete_topics(sorted(left))
