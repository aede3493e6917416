"""Recent windows: the last N dispatched events of each partition, for cheap resume.

Each entry keeps the event (for per-client filtering) and its envelope body (for
re-splicing a replay id). ``covered_from`` is the lowest offset from which the window
holds *every* dispatched event: Kafka offsets have gaps (transaction markers, compaction,
undeliverable records), so "oldest entry's offset" would under-claim after a gap and
"cursor >= oldest offset" would over-claim after an eviction. Eviction moves
``covered_from`` to the evicted offset + 1; undeliverable records need no entry.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass

from clarion_worker.core.events import Event


@dataclass(frozen=True, slots=True)
class Dispatched:
    """An event as dispatched live: its body is shared by every replay of it."""

    event: Event
    body: str


class PartitionWindow:
    """A bounded ring of one partition's most recent dispatched events."""

    __slots__ = ("_entries", "_limit", "covered_from")

    def __init__(self, limit: int, start_offset: int) -> None:
        self._entries: deque[Dispatched] = deque()
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
        self._entries.append(item)

    def covers(self, offset: int) -> bool:
        """Whether every dispatched event at or after ``offset`` is still here."""
        return offset >= self.covered_from

    def since(self, offset: int) -> list[Dispatched]:
        """Entries with offset >= ``offset``, oldest first (call only when ``covers``)."""
        # Resume is rare and usually recent: walk back from the newest entry.
        newest_first: list[Dispatched] = []
        for item in reversed(self._entries):
            if item.event.offset < offset:
                break
            newest_first.append(item)
        newest_first.reverse()
        return newest_first

    def __len__(self) -> int:
        return len(self._entries)


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
