"""The slow resume path: read a client's missed ranges back from Kafka.

A short-lived consumer (no group) is assigned the partitions of the plan's ranges,
seeks each to its start and reads until each reaches its end (the live position when
the resume was planned). Records are decoded by the same decoder as the live path and
handed over in per-partition order, a batch at a time, so a large replay never sits
in memory whole: the session feeds, pumps and waits for the client before reading on.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from clarion_worker.core.events import BadRecord, Event, RawRecord, RecordDecoder
from clarion_worker.core.resume import ReplayRange
from clarion_worker.core.settings import KafkaSettings
from clarion_worker.kafka_client import client_options

#: Give up on a replay that makes no progress for this long (the broker is gone).
STALL_SECONDS = 30.0


@dataclass(frozen=True, slots=True)
class Skipped:
    """An undeliverable record inside a range: the replay position moves past it."""

    topic: str
    partition: int
    offset: int


class ReplayStalledError(RuntimeError):
    """Kafka returned nothing for too long while records were still owed."""


async def read_ranges(
    kafka: KafkaSettings, decoder: RecordDecoder, ranges: Sequence[ReplayRange]
) -> AsyncIterator[list[Event | Skipped]]:
    """Yield decoded records of ``ranges`` in per-partition offset order, batch by batch."""
    ends = {TopicPartition(r.topic, r.partition): r.end for r in ranges}
    consumer = AIOKafkaConsumer(
        **client_options(kafka),
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="none",
    )
    await consumer.start()
    try:
        consumer.assign(list(ends))
        for replay_range in ranges:
            consumer.seek(
                TopicPartition(replay_range.topic, replay_range.partition), replay_range.start
            )
        pending = set(ends)
        while pending:
            batches = await consumer.getmany(*pending, timeout_ms=int(STALL_SECONDS * 1000))
            if not batches:
                raise ReplayStalledError(
                    f"no records for {STALL_SECONDS:.0f}s from {sorted(map(str, pending))}"
                )
            out: list[Event | Skipped] = []
            for tp, records in batches.items():
                end = ends[tp]
                for record in records:
                    if record.offset >= end:
                        break
                    out.append(_decode(decoder, record))
                # Offsets can have gaps (transaction markers, compaction): the consumer's
                # position, not the last record, says whether the range is done.
                if (records and records[-1].offset >= end - 1) or (
                    await consumer.position(tp) >= end
                ):
                    pending.discard(tp)
                    consumer.pause(tp)
            if out:
                yield out
    finally:
        await consumer.stop()


def _decode(decoder: RecordDecoder, record: Any) -> Event | Skipped:
    raw = RawRecord(
        record.topic,
        record.partition,
        record.offset,
        record.timestamp,
        record.key,
        record.value,
        tuple(record.headers),
    )
    try:
        return decoder.decode(raw)
    except BadRecord:
        return Skipped(raw.topic, raw.partition, raw.offset)
