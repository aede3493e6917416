"""Resume planning: replay from the recent windows, from Kafka, or answer ``reset``.

Never partial: the plan covers every event the client missed, or it is a ``Reset``.

The boundary rule the edge must follow (no gap, no duplicate):

1. In one synchronous step (no ``await`` between them, so no live dispatch interleaves):
   put the connection's outbox on hold (``Outbox.hold``; live frames now queue in its
   held queue), take ``live = position.snapshot()`` and call ``plan_resume``. Every event
   dispatched from then on has offset >= ``live[t][p]`` and lands in the held queue.
2. The plan's ranges end exactly at ``live`` (exclusive): ``[start[p], live[p])``. The
   replay ``ReplaySession`` also drops anything outside them, so an over-read is harmless.
3. When the replay has been fully offered, ``ReplaySession.finish`` releases the hold:
   held live frames follow the replay in order.
4. On ``Reset``: offer the ``reset`` frame with ``Outbox.offer_control``, then release.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Final, Literal, get_args

from clarion_worker.core.cursor import Cursor, CursorError, decode_cursor, name_tag, tag
from clarion_worker.core.settings import ResumeSettings
from clarion_worker.core.window import Dispatched, WindowSet

ResetReason = Literal[
    "bad_cursor",
    "incarnation_changed",
    "beyond_retention",
    "too_far_behind",
    "too_old",
    "ahead_of_log",
]
RESET_REASONS: Final[tuple[ResetReason, ...]] = get_args(ResetReason)


@dataclass(frozen=True, slots=True)
class TopicFacts:
    """What the edge knows about a topic: incarnation and per-partition log-start offsets."""

    incarnation: bytes
    log_start_offsets: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class ReplayRange:
    topic: str
    partition: int
    start: int
    end: int  # exclusive: the live position at planning time


Vector = Mapping[str, tuple[int, ...]]


@dataclass(frozen=True, slots=True)
class FromWindow:
    """Every missed event is in the windows, per range in per-partition order.

    With routing ``keys`` the items are only those indexed under them (still to be
    filtered by ``Hub.wants``); without, every entry of the range.
    """

    start: Vector
    live: Vector
    segments: tuple[tuple[ReplayRange, tuple[Dispatched, ...]], ...]

    @property
    def items(self) -> tuple[Dispatched, ...]:
        return tuple(item for _range, items in self.segments for item in items)


@dataclass(frozen=True, slots=True)
class FromKafka:
    """Missed events must be read from Kafka: each range once, in offset order."""

    start: Vector
    live: Vector
    ranges: tuple[ReplayRange, ...]


@dataclass(frozen=True, slots=True)
class Reset:
    reason: ResetReason


ResumePlan = FromWindow | FromKafka | Reset


def plan_resume(
    cursor: str | Cursor,
    *,
    live: Vector,
    topics: Mapping[str, TopicFacts],
    windows: WindowSet,
    bounds: ResumeSettings,
    now_ms: int,
    keys: Collection[str] | None = None,
) -> ResumePlan:
    """Decide how to bring a client from ``cursor`` to the ``live`` position.

    ``keys``: the client's routing keys (``hub.route_keys``); window items under other
    keys cannot concern it and are left out of the plan.
    """
    if isinstance(cursor, str):
        try:
            cursor = decode_cursor(cursor)
        except CursorError:
            return Reset("bad_cursor")
    by_tag = {item.name_tag: item for item in cursor.topics}
    start: dict[str, tuple[int, ...]] = {}
    for topic, live_offsets in live.items():
        facts = topics[topic]
        entry = by_tag.get(name_tag(topic))
        if entry is None:
            given: tuple[int, ...] = ()
        elif entry.incarnation_tag != tag(facts.incarnation):
            return Reset("incarnation_changed")
        elif len(entry.offsets) > len(live_offsets):
            return Reset("incarnation_changed")  # partitions never shrink: it was recreated
        else:
            given = entry.offsets
        # Partitions (or topics) the cursor does not know appeared after it: from offset 0.
        start[topic] = given + (0,) * (len(live_offsets) - len(given))

    missed = 0
    for topic, live_offsets in live.items():
        log_starts = topics[topic].log_start_offsets
        for partition, end in enumerate(live_offsets):
            begin = start[topic][partition]
            if begin > end:
                return Reset("ahead_of_log")
            log_start = log_starts[partition] if partition < len(log_starts) else 0
            if begin < end and begin < log_start:
                return Reset("beyond_retention")
            missed += end - begin
    if missed > bounds.max_replay_events:
        return Reset("too_far_behind")

    oldest_allowed_ms = now_ms - int(bounds.max_replay_age_seconds * 1000)
    segments = _from_windows(start, live, windows, keys)
    if segments is not None:
        oldest = min((_kafka_ts(items[0]) for _range, items in segments if items), default=None)
        if oldest is not None and oldest < oldest_allowed_ms:
            return Reset("too_old")
        return FromWindow(start, dict(live), segments)
    # Without reading Kafka, the cursor's own event time bounds the missed events' age.
    if cursor.timestamp_s and cursor.timestamp_s * 1000 < oldest_allowed_ms:
        return Reset("too_old")
    ranges = tuple(
        ReplayRange(topic, partition, start[topic][partition], end)
        for topic, live_offsets in live.items()
        for partition, end in enumerate(live_offsets)
        if start[topic][partition] < end
    )
    return FromKafka(start, dict(live), ranges)


def _from_windows(
    start: Vector, live: Vector, windows: WindowSet, keys: Collection[str] | None
) -> tuple[tuple[ReplayRange, tuple[Dispatched, ...]], ...] | None:
    segments: list[tuple[ReplayRange, tuple[Dispatched, ...]]] = []
    for topic, live_offsets in live.items():
        for partition, end in enumerate(live_offsets):
            begin = start[topic][partition]
            if begin >= end:
                continue
            window = windows.get(topic, partition)
            if window is None or not window.covers(begin):
                return None
            # Entries are oldest first, so a segment's first item is its oldest.
            items = tuple(window.since(begin, keys))
            segments.append((ReplayRange(topic, partition, begin, end), items))
    return tuple(segments)


def _kafka_ts(item: Dispatched) -> int:
    event = item.event
    if event.timestamp_ms is not None:
        return event.timestamp_ms
    return event.producer_ts_ms if event.producer_ts_ms is not None else 0
