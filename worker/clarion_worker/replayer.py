"""The slow resume path: read a client's missed ranges back from Kafka.

A short-lived consumer (no group) is assigned the partitions of the plan's ranges,
seeks each to its start and reads until each reaches its end (the live position when
the resume was planned). Records are decoded by the same decoder as the live path and
handed over in per-partition order, a slice at a time, so a large replay never sits
in memory whole: the session feeds, pumps and waits for the client before reading on.

Two rules keep read-backs from hurting anyone else:

* The consumer is stopped whatever happens: its ``start()`` is inside the ``try``, and
  the caller closes the generator (``contextlib.aclosing``) when its client leaves, so
  the ``finally`` runs then, not whenever the garbage collector reaches the generator.
* Every slice (decode here, filter and encode by the session right after the yield, no
  ``await`` in between) is granted by the process-wide ``ReplayBudget`` first: at most
  ``REPLAY_EVENTS_PER_TURN`` replayed events per event-loop turn, whatever the number of
  read-backs, so live delivery and the write pass run between slices.
* At most ``READBACKS_OPEN_MAX`` read-back consumers are open at once; later read-backs
  wait their turn (first come, first served) before they connect. More open consumers
  would not replay faster, since the budget above is shared, but each holds its own
  connections, metadata and prefetched records: in the churn soak (docs/benchmarks.md)
  the worker's RSS rose and fell with the number of read-backs open, up to 58 at once
  and about 2 MiB each, so a reconnect wave with old cursors set the worker's memory.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncGenerator, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from aiokafka import AIOKafkaConsumer, TopicPartition

from clarion_worker.core.events import BadRecord, Event, RawRecord, RecordDecoder
from clarion_worker.core.replay import TurnBudget
from clarion_worker.core.resume import ReplayRange
from clarion_worker.core.settings import KafkaSettings
from clarion_worker.kafka_client import client_options

#: Give up on a replay that makes no progress for this long (the broker is gone).
STALL_SECONDS = 30.0
#: Replayed events decoded, filtered and encoded per event-loop turn, all replays together.
REPLAY_EVENTS_PER_TURN = 128
#: Records taken from the read-back consumer per call (parsed in one step by aiokafka).
FETCH_RECORDS = 256
#: What one read-back prefetches at most, per partition and in all (aiokafka's defaults,
#: 1 MiB and 50 MiB, let each open read-back hold megabytes; Kafka still returns a first
#: record larger than the limit, so no record is too big to be read back).
FETCH_PARTITION_BYTES = 256 * 1024
FETCH_MAX_BYTES = 1024 * 1024
#: Read-back consumers open at once, per worker process; the others queue.
READBACKS_OPEN_MAX = 8


@dataclass(frozen=True, slots=True)
class Skipped:
    """An undeliverable record inside a range: the replay position moves past it."""

    topic: str
    partition: int
    offset: int


class OpenCount(Protocol):
    """Where open read-back consumers are counted (a Prometheus gauge)."""

    def inc(self) -> None: ...

    def dec(self) -> None: ...


class ReplayStalledError(RuntimeError):
    """Kafka returned nothing for too long while records were still owed."""


class ReplayBudget:
    """The event-loop edge of ``TurnBudget``: turns are numbered by a ``call_soon`` tick.

    A replay that finds the turn's budget spent parks on a future (no polling: a storm
    of thousands of resumes costs nothing while it waits). The tick, scheduled by the
    first grant or the first waiter of a turn, runs in the loop's next iteration after
    everything already ready (the write pass, readers, the consumer): it starts a new
    turn and hands its budget to the waiters in arrival order, who run in the iteration
    after. Replays that arrive while others wait queue behind them.
    """

    def __init__(
        self, per_turn: int = REPLAY_EVENTS_PER_TURN, open_max: int = READBACKS_OPEN_MAX
    ) -> None:
        #: Held by each read-back while its consumer exists (``read_ranges``).
        self.consumers = asyncio.Semaphore(open_max)
        self._budget = TurnBudget(per_turn)
        self._turn = 0
        self._ticking = False
        self._waiters: deque[tuple[asyncio.Future[int], int]] = deque()

    @property
    def waiting(self) -> int:
        return len(self._waiters)

    def _schedule(self) -> None:
        if not self._ticking:
            self._ticking = True
            asyncio.get_running_loop().call_soon(self._tick)

    def _tick(self) -> None:
        self._ticking = False
        self._turn += 1
        waiters = self._waiters
        while waiters:
            future, want = waiters[0]
            if future.done():  # its replay was cancelled meanwhile
                waiters.popleft()
                continue
            grant = self._budget.take(want, self._turn)
            if not grant:
                break
            waiters.popleft()
            future.set_result(grant)
        if waiters:
            self._schedule()

    def take_now(self, want: int) -> bool:
        """All of ``want`` events from this turn's budget, or nothing (False): a replay
        done in one step (``Session.open``). Never ahead of replays already waiting."""
        if self._waiters or not self._budget.take_all(want, self._turn):
            return False
        if want:
            self._schedule()
        return True

    async def take(self, want: int) -> int:
        """At least one and at most ``want`` events of a turn's budget (waits turns)."""
        if not self._waiters:
            grant = self._budget.take(want, self._turn)
            self._schedule()
            if grant:
                return grant
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._waiters.append((future, max(1, want)))
        self._schedule()
        return await future


async def read_ranges(
    kafka: KafkaSettings,
    decoder: RecordDecoder,
    ranges: Sequence[ReplayRange],
    budget: ReplayBudget,
    open_count: OpenCount | None = None,
    concerns: Callable[[RawRecord], bool] | None = None,
) -> AsyncGenerator[list[Event | Skipped], None]:
    """Yield decoded records of ``ranges`` in per-partition offset order, slice by slice.

    A record ``concerns`` says is not the client's comes back as ``Skipped`` without
    being decoded (``RecordDecoder.concern_filter``), like a record that cannot be.

    Close the generator when done with it (``contextlib.aclosing``): that stops the
    consumer at once, also when the caller leaves half-way. The consumer is created only
    once one of ``budget.consumers`` is free; a caller leaving while it waits for one
    takes nothing.
    """
    ends = {TopicPartition(r.topic, r.partition): r.end for r in ranges}
    await budget.consumers.acquire()  # cancelled here (client gone): nothing held
    try:
        consumer = AIOKafkaConsumer(
            **client_options(kafka),
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="none",
            max_partition_fetch_bytes=FETCH_PARTITION_BYTES,
            fetch_max_bytes=FETCH_MAX_BYTES,
        )
        if open_count is not None:
            open_count.inc()
        try:
            await consumer.start()
            consumer.assign(list(ends))
            for replay_range in ranges:
                consumer.seek(
                    TopicPartition(replay_range.topic, replay_range.partition), replay_range.start
                )
            pending = set(ends)
            while pending:
                batches = await consumer.getmany(
                    *pending, timeout_ms=int(STALL_SECONDS * 1000), max_records=FETCH_RECORDS
                )
                if not batches:
                    raise ReplayStalledError(
                        f"no records for {STALL_SECONDS:.0f}s from {sorted(map(str, pending))}"
                    )
                for tp, records in batches.items():
                    end = ends[tp]
                    wanted = [record for record in records if record.offset < end]
                    done = 0
                    while done < len(wanted):
                        size = await budget.take(len(wanted) - done)
                        yield [
                            _decode(decoder, record, concerns)
                            for record in wanted[done : done + size]
                        ]
                        done += size
                    # Offsets can have gaps (transaction markers, compaction): the consumer's
                    # position, not the last record, says whether the range is done.
                    if (records and records[-1].offset >= end - 1) or (
                        await consumer.position(tp) >= end
                    ):
                        pending.discard(tp)
                        consumer.pause(tp)
        finally:
            try:
                await consumer.stop()
            finally:
                if open_count is not None:
                    open_count.dec()
    finally:
        budget.consumers.release()


def _decode(
    decoder: RecordDecoder, record: Any, concerns: Callable[[RawRecord], bool] | None
) -> Event | Skipped:
    raw = RawRecord(
        record.topic,
        record.partition,
        record.offset,
        record.timestamp,
        record.key,
        record.value,
        tuple(record.headers),
    )
    if concerns is not None and not concerns(raw):
        return Skipped(raw.topic, raw.partition, raw.offset)
    try:
        return decoder.decode(raw)
    except BadRecord:
        return Skipped(raw.topic, raw.partition, raw.offset)
