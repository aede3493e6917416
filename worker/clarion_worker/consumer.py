"""The Kafka edge of the worker: read every partition of the channel, live.

No consumer group and no commits: each replica assigns itself every partition of the
channel's topics and starts at their end, so all replicas see the whole stream and a
client's cursor (per-partition offsets) means the same thing on each of them. Records
go through the core's decoder and dispatcher; this module only moves bytes, keeps the
metrics, notices new partitions, and pauses fetching when the event loop falls behind.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaConnectionError, KafkaError

from clarion_worker.core.cursor import ChannelPosition, TopicLayout
from clarion_worker.core.dispatch import Dispatcher
from clarion_worker.core.events import (
    BAD_RECORD_REASONS,
    BadRecord,
    Event,
    RawRecord,
    RecordDecoder,
)
from clarion_worker.core.hub import Connection, Hub
from clarion_worker.core.resume import TopicFacts
from clarion_worker.core.settings import WorkerSettings
from clarion_worker.core.timestamps import TIMESTAMP_PROBLEMS
from clarion_worker.core.window import WindowSet
from clarion_worker.kafka_client import client_options, refusal
from clarion_worker.kafka_metadata import TopicMetadata, describe_topics
from clarion_worker.logs import RateLimitedLog
from clarion_worker.metrics import WorkerMetrics

log = logging.getLogger("clarion.worker.consumer")

#: Event-loop lag above which fetching pauses, and below which it resumes.
PAUSE_LAG_SECONDS = 0.5
RESUME_LAG_SECONDS = 0.1
_MAX_RECORDS = 2000
#: Events queued per write pass at most: enough to share each socket write among many
#: events, few enough that a big fetch neither overflows outboxes nor stalls the loop.
PASS_EVENTS = 64
#: A partition Kafka has not answered a fetch for this long: ask for its end offset.
STALE_FETCH_SECONDS = 5.0
#: How long that question may take before the lag is left as it was (the broker is gone).
END_OFFSETS_TIMEOUT_SECONDS = 2.0


class TopicRecreatedError(RuntimeError):
    """A topic's id changed under us: every cursor and window of it is void."""


@dataclass
class ChannelState:
    """What the live path shares with sessions: position, windows, topic facts."""

    position: ChannelPosition
    windows: WindowSet
    dispatcher: Dispatcher
    incarnations: dict[str, bytes]
    log_starts: dict[str, tuple[int, ...]] = field(default_factory=dict)

    def topic_facts(self) -> dict[str, TopicFacts]:
        return {
            name: TopicFacts(incarnation, self.log_starts.get(name, ()))
            for name, incarnation in self.incarnations.items()
        }


class ChannelConsumer:
    def __init__(
        self,
        settings: WorkerSettings,
        hub: Hub,
        metrics: WorkerMetrics,
        on_overflow: Callable[[Connection], None],
        on_written_now: Callable[[int, int | None], None] = lambda recipients, kafka_ms: None,
    ) -> None:
        self._settings = settings
        self._hub = hub
        self._metrics = metrics
        self._on_overflow = on_overflow
        #: Recipients who got a live event's frame written in its fan-out, and its Kafka
        #: timestamp (the write pass's metrics: ``Flusher.written_now``).
        self._on_written_now = on_written_now
        self._topics = [topic.name for topic in settings.topics]
        self._decoder = RecordDecoder.for_settings(settings)
        self._bad_log = RateLimitedLog(log)
        self._consumer: AIOKafkaConsumer | None = None
        self.state: ChannelState | None = None
        self.ready = asyncio.Event()
        #: Set after every fetched batch: resumes waiting for this replica to catch up.
        self.advanced = asyncio.Event()
        self._partitions: dict[str, int] = {}
        self._paused = False
        self._consumed = {t: metrics.events_consumed.labels(t) for t in self._topics}
        for item in settings.topics:  # 0, not absent, until the first one
            for problem in TIMESTAMP_PROBLEMS:
                metrics.timestamps_ignored.labels(item.name, problem)
            if item.audience == "user" and item.without_user == "organization":
                metrics.userless_events.labels(item.name)
        for topic in self._topics:  # 0, not absent, until the first bad record
            for reason in BAD_RECORD_REASONS:
                metrics.bad_records.labels(topic, reason)
        self._assigned_ms = 0.0

    @property
    def client(self) -> AIOKafkaConsumer:
        assert self._consumer is not None, "start() first"
        return self._consumer

    async def start(self) -> None:
        """Connect, assign every partition at its end; retry while Kafka or a topic is missing."""
        delay = 0.5
        while True:
            try:
                await self._start_once()
                return
            except (KafkaError, OSError, _TopicMissingError) as error:
                reason = str(error)
                if isinstance(error, KafkaConnectionError):
                    refused = await refusal(self._settings.kafka)
                    if refused is not None:
                        reason = f"Kafka refused the worker: {type(refused).__name__}: {refused}"
                log.warning("Kafka not ready; retrying", extra={"error": reason, "in_s": delay})
                if self._consumer is not None:
                    await self._consumer.stop()
                    self._consumer = None
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)

    async def _start_once(self) -> None:
        consumer = AIOKafkaConsumer(
            **client_options(self._settings.kafka),
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            fetch_max_wait_ms=100,
        )
        self._consumer = consumer
        await consumer.start()
        meta = await self._metadata()
        assignment = [TopicPartition(t, p) for t in self._topics for p in range(meta[t].partitions)]
        consumer.assign(assignment)
        ends = await consumer.end_offsets(assignment)
        starts = await consumer.beginning_offsets(assignment)
        offsets = {
            t: tuple(ends[TopicPartition(t, p)] for p in range(meta[t].partitions))
            for t in self._topics
        }
        for tp in assignment:
            consumer.seek(tp, ends[tp])
        incarnations = {t: meta[t].topic_id for t in self._topics}
        position = ChannelPosition(
            TopicLayout(t, incarnations[t], offsets[t]) for t in self._topics
        )
        windows = WindowSet(self._settings.resume.window_events, dict(offsets))
        self.state = ChannelState(
            position=position,
            windows=windows,
            dispatcher=Dispatcher(position, windows, self._hub),
            incarnations=incarnations,
            log_starts={
                t: tuple(starts[TopicPartition(t, p)] for p in range(meta[t].partitions))
                for t in self._topics
            },
        )
        self._partitions = {t: meta[t].partitions for t in self._topics}
        self._assigned_ms = time.time() * 1000
        log.info("assigned", extra={"partitions": self._partitions, "start": offsets})
        self.ready.set()

    async def _metadata(self) -> dict[str, TopicMetadata]:
        meta = await describe_topics(self.client._client, self._topics)
        missing = [t for t in self._topics if t not in meta or meta[t].error_code != 0]
        if missing:
            raise _TopicMissingError(f"topics not found: {', '.join(missing)}")
        return meta

    async def run(self) -> None:
        """Fetch and dispatch until cancelled."""
        consumer = self.client
        refreshed = time.monotonic()
        while True:
            batches = await consumer.getmany(timeout_ms=200, max_records=_MAX_RECORDS)
            in_pass = 0
            # One record in the whole fetch: its event is alone in its turn, and nothing
            # else would share a write with it (``Dispatcher.dispatch``).
            alone = sum(len(records) for records in batches.values()) == 1
            for tp, records in batches.items():
                for start in range(0, len(records), PASS_EVENTS):
                    chunk = records[start : start + PASS_EVENTS]
                    if in_pass and in_pass + len(chunk) > PASS_EVENTS:
                        # Let the write pass run (it is scheduled with call_soon) and
                        # clients be read before the next slice is queued.
                        await asyncio.sleep(0)
                        in_pass = 0
                    self._dispatch_partition(tp.topic, chunk, alone)
                    in_pass += len(chunk)
            if batches:
                self.advanced.set()
                self.advanced.clear()
            if time.monotonic() - refreshed > self._settings.kafka.metadata_refresh_seconds:
                refreshed = time.monotonic()
                await self._refresh_partitions()

    def _dispatch_partition(self, topic: str, records: list[object], alone: bool = False) -> None:
        """Decode and dispatch one partition's records; ``alone``: the fetch holds just
        this one record (``Dispatcher.dispatch`` may write its frame at once)."""
        state = self.state
        assert state is not None
        dispatcher = state.dispatcher
        consumed = self._consumed[topic]
        observe = self._metrics.broadcast_duration.observe
        for record in records:
            raw = RawRecord(
                record.topic,  # type: ignore[attr-defined]
                record.partition,  # type: ignore[attr-defined]
                record.offset,  # type: ignore[attr-defined]
                record.timestamp,  # type: ignore[attr-defined]
                record.key,  # type: ignore[attr-defined]
                record.value,  # type: ignore[attr-defined]
                tuple(record.headers),  # type: ignore[attr-defined]
            )
            try:
                event = self._decoder.decode(raw)
            except BadRecord as bad:
                self._metrics.bad_records.labels(topic, bad.reason).inc()
                self._bad_log.warning(
                    f"bad:{topic}:{bad.reason}",
                    "skipped a bad record",
                    topic=topic,
                    partition=raw.partition,
                    offset=raw.offset,
                    reason=bad.reason,
                )
                dispatcher.skip(topic, raw.partition, raw.offset)
                continue
            if event.timestamp_problem is not None or event.userless:
                self._note(event)
            started = time.perf_counter()
            overflowed = dispatcher.dispatch(event, alone)
            observe(time.perf_counter() - started)
            consumed.inc()
            if alone and dispatcher.written_now:
                self._on_written_now(dispatcher.written_now, event.timestamp_ms)
            for connection in overflowed:
                self._on_overflow(connection)

    def _note(self, event: Event) -> None:
        """Count (and log, rate-limited) what the decoder decided instead of the producer."""
        if event.userless:
            self._metrics.userless_events.labels(event.topic).inc()
        problem = event.timestamp_problem
        if problem is not None:
            self._metrics.timestamps_ignored.labels(event.topic, problem).inc()
            self._bad_log.warning(
                f"ts:{event.topic}:{problem}",
                "producer timestamp ignored; the Kafka timestamp stands in",
                topic=event.topic,
                partition=event.partition,
                offset=event.offset,
                reason=problem,
            )

    async def _refresh_partitions(self) -> None:
        state = self.state
        assert state is not None
        try:
            meta = await self._metadata()
        except (KafkaError, OSError, _TopicMissingError) as error:
            log.warning("metadata refresh failed", extra={"error": str(error)})
            return
        grown = False
        for topic in self._topics:
            if meta[topic].topic_id != state.incarnations[topic]:
                raise TopicRecreatedError(f"topic {topic} was deleted and recreated")
            old, new = self._partitions[topic], meta[topic].partitions
            if new > old:
                # Every record of a new partition is newer than any cursor: start at 0.
                state.position.grow(topic, new, 0)
                for partition in range(old, new):
                    state.windows.add_partition(topic, partition, 0)
                state.log_starts[topic] = state.log_starts.get(topic, ()) + (0,) * (new - old)
                self._partitions[topic] = new
                grown = True
                log.info("partitions added", extra={"topic": topic, "from": old, "to": new})
        if grown:
            consumer = self.client
            assignment = [
                TopicPartition(t, p) for t, n in self._partitions.items() for p in range(n)
            ]
            consumer.assign(assignment)
            for tp in assignment:
                consumer.seek(tp, state.position.next_offset(tp.topic, tp.partition))

    async def update_lag(self) -> None:
        """Consumer lag and fetch age per partition.

        The lag comes from the high watermark of the partition's last fetch answer. When
        Kafka has not answered a fetch for ``STALE_FETCH_SECONDS`` (fetching paused, a
        leader gone, the broker frozen), that watermark is as old as the answer: the end
        offset is asked for instead, and if that is not answered either, the lag keeps its
        last value (never 0 for want of news) while ``consumer_fetch_age_seconds`` grows.
        """
        state = self.state
        consumer = self._consumer
        if state is None or consumer is None:
            return
        now_ms = time.time() * 1000
        stale: list[TopicPartition] = []
        for topic, count in self._partitions.items():
            for partition in range(count):
                tp = TopicPartition(topic, partition)
                polled = consumer.last_poll_timestamp(tp)
                age = max(0.0, (now_ms - (polled or self._assigned_ms)) / 1000)
                self._metrics.fetch_age.labels(topic, str(partition)).set(age)
                high = consumer.highwater(tp)
                if high is None or age > STALE_FETCH_SECONDS:
                    stale.append(tp)
                else:
                    self._set_lag(tp, high)
        if not stale:
            return
        try:
            ends = await asyncio.wait_for(
                consumer.end_offsets(stale), timeout=END_OFFSETS_TIMEOUT_SECONDS
            )
        except (TimeoutError, KafkaError, OSError) as error:
            log.warning(
                "no fetch answer and no end offsets: lag unknown",
                extra={"partitions": len(stale), "error": repr(error)},
            )
            return
        for tp, end in ends.items():
            self._set_lag(tp, end)

    def _set_lag(self, tp: TopicPartition, end: int) -> None:
        state = self.state
        assert state is not None
        lag = max(0, end - state.position.next_offset(tp.topic, tp.partition))
        self._metrics.consumer_lag.labels(tp.topic, str(tp.partition)).set(lag)

    def apply_loop_lag(self, lag_seconds: float) -> None:
        """Pause fetching while the event loop is behind; resume once it has caught up.

        Outboxes are bounded per connection, but a loop that cannot keep up would
        still let aiokafka's fetch buffers and per-event work pile up: pausing the
        partitions stops reading from Kafka instead of buffering without bound.
        """
        if self._consumer is None:
            return
        assignment = list(self._consumer.assignment())
        if not self._paused and lag_seconds > PAUSE_LAG_SECONDS:
            self._consumer.pause(*assignment)
            self._paused = True
            self._metrics.paused_partitions.set(len(assignment))
            log.warning("event loop behind: pausing Kafka fetches", extra={"lag_s": lag_seconds})
        elif self._paused and lag_seconds < RESUME_LAG_SECONDS:
            self._consumer.resume(*assignment)
            self._paused = False
            self._metrics.paused_partitions.set(0)
            log.info("event loop caught up: resuming Kafka fetches")

    async def stop(self) -> None:
        if self._consumer is not None:
            await self._consumer.stop()
            self._consumer = None


class _TopicMissingError(Exception):
    pass
