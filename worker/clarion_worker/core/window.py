"""Recent windows: the last N dispatched events of each partition, for cheap resume.

Each entry keeps the event (for per-client filtering) and its envelope body (for
re-splicing a replay id). Entries are also indexed by routing key (``hub.route_key``), so a
resume reads only the entries that can concern its client: in a reconnect storm every
client would otherwise walk every event of the channel since its cursor.

``covered_from`` is the lowest offset from which the window holds *every* dispatched
event: Kafka offsets have gaps (transaction markers, compaction, undeliverable records),
so "oldest entry's offset" would under-claim after a gap and "cursor >= oldest offset"
would over-claim after an eviction. Eviction moves ``covered_from`` to the evicted offset
+ 1; undeliverable records need no entry.
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Collection, Iterable
from dataclasses import dataclass

from clarion_worker.core.events import Event
from clarion_worker.core.hub import route_key


@dataclass(frozen=True, slots=True)
class Dispatched:
    """An event as dispatched live: its body is shared by every replay of it."""

    event: Event
    body: str


class PartitionWindow:
    """A bounded ring of one partition's most recent dispatched events."""

    __slots__ = ("_by_key", "_entries", "_limit", "covered_from")

    def __init__(self, limit: int, start_offset: int) -> None:
        self._entries: deque[Dispatched] = deque()
        self._by_key: dict[str, deque[Dispatched]] = {}
        self._limit = limit
        # Nothing before the consumer's start position was ever dispatched here.
        self.covered_from = start_offset

    def append(self, item: Dispatched) -> None:
        if self._limit == 0:
            self.covered_from = item.event.offset + 1
            return
        if len(self._entries) == self._limit:
            evicted = self._entries.popleft()
            self.covered_from = evicted.event.offset + 1
            key = route_key(evicted.event)
            same_key = self._by_key[key]
            same_key.popleft()  # the oldest entry is the oldest of its key too
            if not same_key:
                del self._by_key[key]
        self._entries.append(item)
        indexed = self._by_key.get(route_key(item.event))
        if indexed is None:
            indexed = self._by_key[route_key(item.event)] = deque()
        indexed.append(item)

    def covers(self, offset: int) -> bool:
        """Whether every dispatched event at or after ``offset`` is still here."""
        return offset >= self.covered_from

    def since(self, offset: int, keys: Collection[str] | None = None) -> list[Dispatched]:
        """Entries with offset >= ``offset``, oldest first (call only when ``covers``).

        With ``keys``, only entries indexed under one of them (``hub.route_keys``).
        """
        if keys is None:
            return _tail(self._entries, offset)
        runs = [_tail(self._by_key[key], offset) for key in keys if key in self._by_key]
        runs = [run for run in runs if run]
        if len(runs) <= 1:
            return runs[0] if runs else []
        return list(heapq.merge(*runs, key=_offset))

    def __len__(self) -> int:
        return len(self._entries)


def _tail(entries: deque[Dispatched], offset: int) -> list[Dispatched]:
    # Resume is usually recent: walk back from the newest entry.
    newest_first: list[Dispatched] = []
    for item in reversed(entries):
        if item.event.offset < offset:
            break
        newest_first.append(item)
    newest_first.reverse()
    return newest_first


def _offset(item: Dispatched) -> int:
    return item.event.offset


class WindowSet:
    """One ``PartitionWindow`` per (topic, partition) of the channel."""

    def __init__(self, limit: int, start_offsets: dict[str, Iterable[int]]) -> None:
        self._limit = limit
        self._windows: dict[tuple[str, int], PartitionWindow] = {}
        for topic, offsets in start_offsets.items():
            for partition, offset in enumerate(offsets):
                self._windows[(topic, partition)] = PartitionWindow(limit, offset)

    def append(self, item: Dispatched) -> None:
        event = item.event
        self._windows[(event.topic, event.partition)].append(item)

    def get(self, topic: str, partition: int) -> PartitionWindow | None:
        return self._windows.get((topic, partition))

    def add_partition(self, topic: str, partition: int, start_offset: int) -> None:
        self._windows.setdefault((topic, partition), PartitionWindow(self._limit, start_offset))
