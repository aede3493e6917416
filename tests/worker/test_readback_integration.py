"""Kafka read-backs (the slow resume path) against the real broker, inside this process.

The worker runtime runs here (its consumer, sessions and replayer on this event loop),
so a test can do exactly what the WebSocket handler does when a client goes away during
a read-back (cancel the resume task, close, unregister) and then look at what is left:
the read-back's consumer, the memory of what it fetched, and how long the loop stalled.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import inspect
import json
import os
import signal
import time
import tracemalloc
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from prometheus_client import CollectorRegistry

from clarion_devstack.harness import ChannelTopics, Keys
from clarion_devstack.pytest_plugin import LocalStack
from clarion_worker import replayer
from clarion_worker.config import Secrets
from clarion_worker.core.cursor import ChannelPosition, TopicLayout
from clarion_worker.core.events import Event
from clarion_worker.core.principal import Principal
from clarion_worker.core.protocol import CloseCode
from clarion_worker.core.resume import ReplayRange
from clarion_worker.core.settings import WorkerSettings, load_settings
from clarion_worker.replayer import FETCH_PARTITION_BYTES, ReplayBudget, read_ranges
from clarion_worker.runtime import WorkerRuntime
from clarion_worker.sessions import Session

pytestmark = pytest.mark.integration

CHECKOUT = Path(__file__).resolve().parents[2]

ORG = "org-readback"
#: Records on the organization topic before the worker starts (so only Kafka has them).
RECORDS = 3000
PAD = "x" * 1000
#: What one loop turn may queue (the old code had no such bound: the same figure applies).
PER_TURN = getattr(replayer, "REPLAY_EVENTS_PER_TURN", 128)


def _settings(
    kafka_bootstrap: str, topics: ChannelTopics, keys: Keys, limits: dict[str, int]
) -> WorkerSettings:
    doc: dict[str, Any] = {
        "apiVersion": "clarion.dev/worker-config/v1",
        "channel": "readback",
        "kafka": {"bootstrapServers": kafka_bootstrap},
        "topics": topics.config(),
        "auth": {
            "mode": "jwt",
            "hmacSecretFile": str(keys.hmac_file),
            "algorithms": ["HS256"],
            "audience": "readback",
            "issuer": "readback",
        },
        "limits": limits,
    }
    return load_settings(doc, {}, hostname="readback-test", edge_env_names=())


#: A client that reads nothing holds its replay after 50 events: the read-back is under
#: way (its consumer started and fetching) when the client leaves.
SMALL_QUEUE = {"queueMaxEvents": 50, "batchMaxEvents": 50}
#: Room for a whole replay: the queue never paces it, only the replay budget can.
BIG_QUEUE = {"queueMaxEvents": 100_000, "queueMaxBytes": 1 << 30}


async def _produce_records(kafka_bootstrap: str, topics: ChannelTopics) -> None:
    """``RECORDS`` padded events of organization ``ORG`` to the approvals topic."""
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, linger_ms=5)
    await producer.start()
    try:
        for seq in range(RECORDS):
            value = {"type": "T", "organizationId": ORG, "data": {"seq": seq, "pad": PAD}}
            await producer.send(topics.approvals, json.dumps(value).encode(), key=ORG.encode())
        await producer.flush()
    finally:
        await producer.stop()


@pytest.fixture
async def runtime(
    request: pytest.FixtureRequest, kafka_bootstrap: str, topics: ChannelTopics, keys: Keys
) -> AsyncIterator[WorkerRuntime]:
    await _produce_records(kafka_bootstrap, topics)
    limits = getattr(request, "param", SMALL_QUEUE)
    settings = _settings(kafka_bootstrap, topics, keys, limits)
    worker = WorkerRuntime(settings, Secrets(keys.hmac_secret, None), CollectorRegistry())
    await worker.start()
    try:
        yield worker
    finally:
        await worker.stop()


def _cursor_at_zero(runtime: WorkerRuntime) -> str:
    """A cursor from before every record: the worker's windows do not hold them."""
    state = runtime.state
    layouts = [
        TopicLayout(topic, state.incarnations[topic], (0,) * len(offsets))
        for topic, offsets in state.position.snapshot().items()
    ]
    return ChannelPosition(layouts).current_id()


async def _until(
    predicate: Callable[[], bool], within: float, what: str, step: float = 0.01
) -> None:
    deadline = time.monotonic() + within
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {within} s: {what}")
        await asyncio.sleep(step)


async def _all_stopped(consumers: list[AIOKafkaConsumer]) -> None:
    """Wait (bounded) until every consumer in the list has been stopped."""
    try:
        await _until(
            lambda: all(c._closed for c in consumers), 10, "every read-back consumer stopped"
        )
    finally:
        consumers.clear()  # no reference of ours keeps them alive


def _readback_consumers(runtime: WorkerRuntime) -> list[AIOKafkaConsumer]:
    live = runtime.consumer.client
    return [
        obj for obj in gc.get_objects() if isinstance(obj, AIOKafkaConsumer) and obj is not live
    ]


async def _abandon_during_readback(
    runtime: WorkerRuntime, cursor: str, seen: list[AIOKafkaConsumer] | None = None
) -> asyncio.Task[None]:
    """A client resumes from ``cursor``, reads nothing, and leaves mid read-back, as the
    WebSocket handler sees it: the resume task is cancelled, the session closed. The
    read-back consumers open at that moment are appended to ``seen``."""
    session = runtime.open_session(Principal(frozenset({ORG}), "u1"), "websocket", batch=False)
    session.welcome()
    task = asyncio.create_task(session.start(cursor))
    session.resume_task = task
    limit = runtime.settings.limits.queue_max_events
    await _until(lambda: session.outbox.count >= limit, 20, "the replay filled the client's outbox")
    assert runtime.metrics.resumes.labels("kafka")._value.get() >= 1
    if seen is not None:
        seen += [c for c in _readback_consumers(runtime) if not c._closed]
    # What app._serve_direct / _serve_websocket do when the client goes away.
    task.cancel()
    session.request_close(CloseCode.NORMAL, "client left")
    session.finish()
    return task


@pytest.fixture
def no_gc() -> Iterator[None]:
    """No automatic collection: what is released must be released by the code itself."""
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


@pytest.mark.timeout(90)
async def test_a_client_leaving_during_a_read_back_stops_its_consumer_at_once(
    runtime: WorkerRuntime, no_gc: None
) -> None:
    consumers: list[AIOKafkaConsumer] = []
    task = await _abandon_during_readback(runtime, _cursor_at_zero(runtime), consumers)
    assert len(consumers) == 1, "the read-back consumer was not found"
    await asyncio.wait({task}, timeout=10)
    assert task.done()
    del task
    await _all_stopped(consumers)


@pytest.mark.timeout(90)
async def test_a_client_leaving_while_the_read_back_connects_stops_its_consumer(
    runtime: WorkerRuntime, no_gc: None
) -> None:
    session = runtime.open_session(Principal(frozenset({ORG}), "u1"), "websocket", batch=False)
    session.welcome()
    kafka = runtime.metrics.resumes.labels("kafka")
    task = asyncio.create_task(session.start(_cursor_at_zero(runtime)))
    session.resume_task = task
    # Checked every loop turn: the read-back's consumer is created and connecting.
    await _until(lambda: kafka._value.get() >= 1, 20, "the resume went to Kafka", step=0)
    consumers = _readback_consumers(runtime)
    assert consumers, "the read-back consumer was not found"
    assert not any(c._fetcher for c in consumers), "start() finished already"
    task.cancel()  # the client left: the cancellation lands inside consumer.start()
    session.request_close(CloseCode.NORMAL, "client left")
    session.finish()
    await asyncio.wait({task}, timeout=10)
    del task, session
    # Before the fix: start() was outside the try, so its consumer was never stopped.
    await _all_stopped(consumers)


async def _warmed_cursor(runtime: WorkerRuntime) -> str:
    """A cursor at offset zero, after a first abandoned read-back from it has warmed what
    is allocated once (imports, caches)."""
    cursor = _cursor_at_zero(runtime)
    await asyncio.wait({await _abandon_during_readback(runtime, cursor)}, timeout=10)
    gc.collect()
    return cursor


async def _abandon_many(runtime: WorkerRuntime, cursor: str, count: int) -> int:
    """``count`` read-backs whose clients leave during them, until every one has ended
    and its consumer stopped; the traced memory while all of them were under way."""
    tasks = [await _abandon_during_readback(runtime, cursor) for _ in range(count)]
    during = tracemalloc.get_traced_memory()[0]
    await asyncio.wait(set(tasks), timeout=20)
    assert all(task.done() for task in tasks)
    del tasks
    await _all_stopped(_readback_consumers(runtime))
    return during


@pytest.mark.timeout(180)
async def test_abandoned_read_backs_release_their_consumers_and_memory(
    runtime: WorkerRuntime,
) -> None:
    count = 6
    cursor = await _warmed_cursor(runtime)
    tracemalloc.start()
    try:
        gc.collect()
        baseline = tracemalloc.get_traced_memory()[0]
        during = await _abandon_many(runtime, cursor, count)
        gc.collect()
        await asyncio.sleep(0)  # let the closed clients' callbacks run
        gc.collect()
        after = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    grown = after - baseline
    # Each read-back fetched about a MiB (FETCH_RECORDS records and aiokafka's buffers).
    assert during - baseline > 1 << 20, (baseline, during)
    assert grown < 512 << 10, f"{grown / 1024:.0f} KiB still held after {count} read-backs"
    assert not [c for c in _readback_consumers(runtime) if not c._closed]


async def _max_queued_per_turn(session: Session, task: asyncio.Task[None]) -> tuple[int, float]:
    """Stand in for a fast client: empty the outbox every loop turn until the resume is
    done. Returns the most frames queued within one turn, and the longest turn (s)."""
    most, longest, total = 0, 0.0, 0
    last = time.monotonic()
    while not task.done() or session.outbox.count:
        await asyncio.sleep(0)
        now = time.monotonic()
        longest, last = max(longest, now - last), now
        taken = len(session.outbox.take_all())
        most, total = max(most, taken), total + taken
        session.drained.set()
    task.result()
    assert total >= RECORDS, total
    return most, longest


@pytest.mark.timeout(120)
@pytest.mark.parametrize("runtime", [BIG_QUEUE], indirect=True)
async def test_a_big_read_back_queues_at_most_one_budget_per_loop_turn(
    runtime: WorkerRuntime,
) -> None:
    session = runtime.open_session(Principal(frozenset({ORG}), "u1"), "websocket", batch=False)
    session.welcome()
    task = asyncio.create_task(session.start(_cursor_at_zero(runtime)))
    most, longest = await _max_queued_per_turn(session, task)
    assert runtime.metrics.resumes.labels("kafka")._value.get() == 1
    # Before: a whole fetch (about a MiB of records, ~1000 here) was decoded, filtered
    # and encoded in one step, every other task of the worker waiting for it.
    assert most <= PER_TURN + 1, f"{most} frames in one turn ({longest:.3f} s)"


@pytest.mark.timeout(120)
@pytest.mark.parametrize("runtime", [BIG_QUEUE], indirect=True)
async def test_a_big_window_replay_queues_at_most_one_budget_per_loop_turn(
    runtime: WorkerRuntime, kafka_bootstrap: str, topics: ChannelTopics
) -> None:
    cursor = runtime.state.position.current_id()  # the window holds all that follows
    await _produce_records(kafka_bootstrap, topics)
    consumed = runtime.metrics.events_consumed.labels(topics.approvals)
    await _until(lambda: consumed._value.get() >= RECORDS, 30, "the worker read them all")
    session = runtime.open_session(Principal(frozenset({ORG}), "u1"), "websocket", batch=False)
    session.welcome()
    task = asyncio.create_task(session.start(cursor))
    most, longest = await _max_queued_per_turn(session, task)
    assert runtime.metrics.resumes.labels("window")._value.get() == 1
    assert most <= PER_TURN + 1, f"{most} frames in one turn ({longest:.3f} s)"


def _partition_values(registry: CollectorRegistry, name: str, topic: str) -> list[float | None]:
    return [
        registry.get_sample_value(name, {"topic": topic, "partition": str(p)}) for p in range(3)
    ]


async def _update_lag(runtime: WorkerRuntime) -> float:
    """One lag update, as the chores do; how long it took."""
    started = time.monotonic()
    result: Any = runtime.consumer.update_lag()
    if inspect.isawaitable(result):  # it was synchronous before Kafka could stop answering
        await result
    return time.monotonic() - started


@pytest.mark.timeout(120)
async def test_while_kafka_is_frozen_fetch_age_grows_and_lag_keeps_its_value(
    own_stack: LocalStack,
    runtime: WorkerRuntime,
    kafka_bootstrap: str,
    topics: ChannelTopics,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from clarion_worker import consumer as consumer_module

    monkeypatch.setattr(consumer_module, "STALE_FETCH_SECONDS", 0.5, raising=False)
    monkeypatch.setattr(consumer_module, "END_OFFSETS_TIMEOUT_SECONDS", 0.5, raising=False)
    registry = runtime.registry
    live = runtime.consumer.client
    await _until(
        lambda: all(live.highwater(tp) is not None for tp in live.assignment()),
        20,
        "a first fetch answer for every partition",
    )
    live.pause(*live.assignment())  # a backlog builds: 40 records not consumed
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap)
    await producer.start()
    try:
        for seq in range(40):
            value = {"type": "T", "organizationId": ORG, "data": {"seq": seq}}
            await producer.send(topics.approvals, json.dumps(value).encode(), key=ORG.encode())
        await producer.flush()
    finally:
        await producer.stop()
    lag_name, age_name = "clarion_worker_consumer_lag", "clarion_worker_consumer_fetch_age_seconds"

    def lag() -> float:
        return sum(v or 0 for v in _partition_values(registry, lag_name, topics.approvals))

    deadline = time.monotonic() + 20
    while lag() < 40 and time.monotonic() < deadline:
        await _update_lag(runtime)
        await asyncio.sleep(0.1)
    assert lag() == 40
    pid = own_stack.env["components"]["kafka"]["pid"]
    os.kill(pid, signal.SIGSTOP)
    try:
        frozen_at = time.monotonic()
        while time.monotonic() - frozen_at < 2.0:
            took = await _update_lag(runtime)
            assert took < 2.0, f"a lag update waited {took:.1f} s for a frozen broker"
            await asyncio.sleep(0.2)
        ages = _partition_values(registry, age_name, topics.approvals)
        # Before: no fetch age at all, and a lag as old as the last answer, unmarked.
        assert all(age is not None and age > 1.5 for age in ages), ages
        assert lag() == 40  # the last known value: not 0, not dropped
    finally:
        os.kill(pid, signal.SIGCONT)
    live.resume(*live.assignment())
    deadline = time.monotonic() + 30
    while lag() > 0 and time.monotonic() < deadline:
        await _update_lag(runtime)
        await asyncio.sleep(0.2)
    assert lag() == 0
    ages = _partition_values(registry, age_name, topics.approvals)
    assert all(age is not None and age < 5 for age in ages), ages


@pytest.mark.timeout(60)
async def test_a_record_larger_than_the_read_back_fetch_limit_is_still_read_back(
    runtime: WorkerRuntime, kafka_bootstrap: str, topics: ChannelTopics
) -> None:
    big = {"type": "T", "organizationId": ORG, "data": {"pad": "y" * (3 * FETCH_PARTITION_BYTES)}}
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, max_request_size=1 << 20)
    await producer.start()
    try:
        meta = await producer.send_and_wait(
            topics.approvals, json.dumps(big).encode(), key=ORG.encode()
        )
    finally:
        await producer.stop()
    ranges = [ReplayRange(topics.approvals, meta.partition, meta.offset, meta.offset + 1)]
    got: list[Any] = []
    batches = read_ranges(runtime.settings.kafka, runtime.decoder, ranges, ReplayBudget())
    async with contextlib.aclosing(batches):
        async for batch in batches:
            got += batch
    assert [(type(item), item.offset) for item in got] == [(Event, meta.offset)]


@pytest.mark.timeout(180)
async def test_abandoned_resumes_are_freed_without_waiting_for_a_garbage_collection(
    runtime: WorkerRuntime, no_gc: None
) -> None:
    """The worker raises the collector's thresholds (full collections are rare): what a
    client that left held must go by reference counting, not wait for a collection."""
    count = 6
    cursor = await _warmed_cursor(runtime)
    tracemalloc.start()
    try:
        baseline = tracemalloc.get_traced_memory()[0]
        await _abandon_many(runtime, cursor, count)
        for _ in range(3):
            await asyncio.sleep(0)
        grown = tracemalloc.get_traced_memory()[0] - baseline
    finally:
        tracemalloc.stop()
    # Before: each left its session, replay and frames in a reference cycle (task ->
    # CancelledError -> traceback -> frame -> session -> task) until a full collection.
    assert grown < 512 << 10, f"{grown / 1024:.0f} KiB held (no collection) after {count}"


class _PeakCount:
    """An ``OpenCount`` that remembers the most read-back consumers open at once."""

    def __init__(self) -> None:
        self.now = 0
        self.peak = 0

    def inc(self) -> None:
        self.now += 1
        self.peak = max(self.peak, self.now)

    def dec(self) -> None:
        self.now -= 1


@pytest.mark.timeout(120)
async def test_read_backs_beyond_the_open_limit_wait_their_turn_and_all_complete(
    runtime: WorkerRuntime, topics: ChannelTopics
) -> None:
    """A reconnect wave with old cursors: more read-backs than may be open at once. Never
    more consumers than the limit exist together (each holds connections and prefetched
    records: the soak's RSS followed their number), and every read-back still completes."""
    limit = getattr(replayer, "READBACKS_OPEN_MAX", 8)
    wave = limit + 4
    opened = _PeakCount()
    budget = runtime.replay_budget
    ends = runtime.state.position.snapshot()[topics.approvals]
    ranges = [
        ReplayRange(topics.approvals, partition, 0, end)
        for partition, end in enumerate(ends)
        if end
    ]

    async def read_back() -> int:
        count = 0
        batches = read_ranges(runtime.settings.kafka, runtime.decoder, ranges, budget, opened)
        async with contextlib.aclosing(batches):
            async for batch in batches:
                count += len(batch)
        return count

    counts = await asyncio.gather(*(read_back() for _ in range(wave)))
    assert counts == [RECORDS] * wave
    assert opened.now == 0
    assert opened.peak <= limit, f"{opened.peak} read-back consumers open at once"
