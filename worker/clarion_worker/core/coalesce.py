"""One fan-out pass on the wire: each distinct queued sequence is encoded once.

After a Kafka fetch is dispatched, many clients hold the very same queued sequence of
frames (every client of a broadcast, every client of one organization). ``PassEncoder``
builds the bytes for a sequence once and hands the same object to all of them; per
client what is left is hashing a tuple of items (by identity) and one socket write.

Batch clients get runs of events packed into ``batch`` frames, bounded by
``batch_max_events`` and ``batch_max_bytes`` (``outbox.batch_run``, the writer task's
rule too); other clients get one frame per event.
Either way every frame queued for a client goes out in a single write, so the kernel's
per-write cost (about 19 µs a write on loopback, most of a loaded worker's time: see
docs/benchmarks.md) is shared by all the events of the pass. An encoder lives for one
pass: its memo is keyed by the items the outbox holds (one object per event, shared by
its recipients), and dropped with the pass. What an item is (event or control frame) and
its Kafka timestamp are the item's own fields, never read from its text.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from clarion_worker.core.envelope import BATCH_HEAD, BATCH_TAIL
from clarion_worker.core.outbox import Item, batch_run
from clarion_worker.core.wsframe import text_frame

_BATCH_HEAD: Final = BATCH_HEAD.encode()
_BATCH_TAIL: Final = BATCH_TAIL.encode()


@dataclass(frozen=True, slots=True)
class Encoded:
    """The bytes of one client's pass and what they carry (for metrics)."""

    data: bytes
    events: int
    one_frames: int
    batch_frames: int
    #: Kafka timestamp of the oldest event in it, for the delivery-latency histogram.
    oldest_kafka_ms: int | None


class PassEncoder:
    __slots__ = (
        "_batch_max_bytes",
        "_batch_max_events",
        "_batch_memo",
        "_frames",
        "_memo",
        "_payloads",
    )

    def __init__(self, *, batch_max_events: int, batch_max_bytes: int) -> None:
        self._batch_max_events = batch_max_events
        self._batch_max_bytes = batch_max_bytes
        self._memo: dict[tuple[Item, ...], Encoded] = {}
        self._batch_memo: dict[tuple[Item, ...], Encoded] = {}
        self._payloads: dict[Item, bytes] = {}
        self._frames: dict[Item, bytes] = {}

    def encode(self, items: tuple[Item, ...], batch: bool) -> Encoded:
        """The wire bytes for ``items`` (queued frames, oldest first); memoized."""
        memo = self._batch_memo if batch else self._memo
        found = memo.get(items)
        if found is None:
            found = memo[items] = self._build(items, batch)
        return found

    def _build(self, items: tuple[Item, ...], batch: bool) -> Encoded:
        parts: list[bytes] = []
        events = one_frames = batch_frames = 0
        oldest: int | None = None
        index, count = 0, len(items)
        while index < count:
            item = items[index]
            size = (
                batch_run(items, index, count, self._batch_max_events, self._batch_max_bytes)
                if batch
                else 1
            )
            if item.event:
                events += size
                if oldest is None:
                    oldest = item.kafka_ms
            if size == 1:
                parts.append(self._frame(item))
                one_frames += 1
            else:
                payload = self._payload
                run = b",".join([payload(items[at]) for at in range(index, index + size)])
                parts.append(text_frame(_BATCH_HEAD + run + _BATCH_TAIL))
                batch_frames += 1
            index += size
        data = parts[0] if len(parts) == 1 else b"".join(parts)
        return Encoded(data, events, one_frames, batch_frames, oldest)

    def _payload(self, item: Item) -> bytes:
        payload = self._payloads.get(item)
        if payload is None:
            payload = item.text.encode()
            self._payloads[item] = payload
        return payload

    def _frame(self, item: Item) -> bytes:
        frame = self._frames.get(item)
        if frame is None:
            frame = text_frame(self._payload(item))
            self._frames[item] = frame
        return frame
