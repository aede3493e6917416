"""One fan-out pass on the wire: each distinct queued sequence is encoded once.

After a Kafka fetch is dispatched, many clients hold the very same queued sequence of
frames (every client of a broadcast, every client of one organization). ``PassEncoder``
builds the bytes for a sequence once and hands the same object to all of them; per
client what is left is hashing a tuple of strings (their hashes are cached) and one
socket write.

Batch clients get runs of events packed into ``batch`` frames, bounded by
``batch_max_events`` and ``batch_max_bytes``; other clients get one frame per event.
Either way every frame queued for a client goes out in a single write, so the kernel's
per-write cost (about 19 µs a write on loopback, most of a loaded worker's time: see
docs/benchmarks.md) is shared by all the events of the pass. An encoder lives for one
pass: its memo is keyed by the identity-stable strings the outbox holds, and dropped with
the pass.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from clarion_worker.core.envelope import BATCH_OVERHEAD_BYTES
from clarion_worker.core.wsframe import text_frame

_EVENT_PREFIX: Final = '{"type":"event"'
_BATCH_HEAD: Final = b'{"type":"batch","events":['
_BATCH_TAIL: Final = b"]}"
_KAFKA_TS_FIELD: Final = ',"kafkaTs":'


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
        "_batch_budget",
        "_batch_max_events",
        "_batch_memo",
        "_frames",
        "_memo",
        "_payloads",
    )

    def __init__(self, *, batch_max_events: int, batch_max_bytes: int) -> None:
        self._batch_max_events = batch_max_events
        self._batch_budget = batch_max_bytes - BATCH_OVERHEAD_BYTES
        self._memo: dict[tuple[str, ...], Encoded] = {}
        self._batch_memo: dict[tuple[str, ...], Encoded] = {}
        self._payloads: dict[str, bytes] = {}
        self._frames: dict[str, bytes] = {}

    def encode(self, items: tuple[str, ...], batch: bool) -> Encoded:
        """The wire bytes for ``items`` (queued frames, oldest first); memoized."""
        memo = self._batch_memo if batch else self._memo
        found = memo.get(items)
        if found is None:
            found = memo[items] = self._build(items, batch)
        return found

    def _build(self, items: tuple[str, ...], batch: bool) -> Encoded:
        parts: list[bytes] = []
        events = one_frames = batch_frames = 0
        oldest: int | None = None
        index, count = 0, len(items)
        while index < count:
            item = items[index]
            is_event = item.startswith(_EVENT_PREFIX)
            if is_event:
                events += 1
                if oldest is None:
                    oldest = kafka_ts_ms(item)
            if not (batch and is_event):
                parts.append(self._frame(item))
                one_frames += 1
                index += 1
                continue
            run = [self._payload(item)]
            used = len(run[0])
            index += 1
            while index < count and len(run) < self._batch_max_events:
                following = items[index]
                if not following.startswith(_EVENT_PREFIX):
                    break
                payload = self._payload(following)
                if used + len(payload) + 1 > self._batch_budget:  # +1: the comma
                    break
                run.append(payload)
                used += len(payload) + 1
                events += 1
                index += 1
            if len(run) == 1:
                parts.append(self._frame(item))
                one_frames += 1
            else:
                parts.append(text_frame(_BATCH_HEAD + b",".join(run) + _BATCH_TAIL))
                batch_frames += 1
        data = parts[0] if len(parts) == 1 else b"".join(parts)
        return Encoded(data, events, one_frames, batch_frames, oldest)

    def _payload(self, item: str) -> bytes:
        payload = self._payloads.get(item)
        if payload is None:
            payload = item.encode()
            self._payloads[item] = payload
        return payload

    def _frame(self, item: str) -> bytes:
        frame = self._frames.get(item)
        if frame is None:
            frame = text_frame(self._payload(item))
            self._frames[item] = frame
        return frame


def kafka_ts_ms(envelope: str) -> int | None:
    """The ``kafkaTs`` of one event envelope, without parsing the JSON.

    ``envelope.render_body`` writes it as the envelope's last field, after ``data`` and
    ``ts``: it is read there, at the end, so a ``"kafkaTs"`` key inside the payload
    (which is always followed by ``ts``) can never stand in for it.
    """
    end = len(envelope) - 1
    if end < 0 or envelope[end] != "}":
        return None
    start = end
    while start > 0 and envelope[start - 1].isdigit():
        start -= 1
    if start == end or not envelope.endswith(_KAFKA_TS_FIELD, 0, start):
        return None
    return int(envelope[start:end])
