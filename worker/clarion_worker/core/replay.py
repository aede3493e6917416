"""Replay for one resuming connection, then hand over to live delivery.

Replayed events carry ids from a private ``ChannelPosition`` that starts at the client's
cursor and advances as replay proceeds, so an id never claims more than the client has
received (a live id would also claim other partitions' progress the client has not seen
yet). Events outside ``[start[p], live[p])`` are ignored, so the edge may over-read.

The edge drives it: ``feed`` events (window items or events decoded from Kafka, in each
partition's order), ``pump`` whenever the writer made room, and once every range is fed,
``finish`` when ``pump`` reports that nothing is pending. See ``resume`` for the
boundary rule.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Mapping

from clarion_worker.core.cursor import ChannelPosition, TopicLayout
from clarion_worker.core.envelope import render_body, sse_message, utf8_size, with_id
from clarion_worker.core.events import Event
from clarion_worker.core.hub import Connection, Hub
from clarion_worker.core.outbox import Item
from clarion_worker.core.resume import Vector
from clarion_worker.core.window import Dispatched


class ReplaySession:
    def __init__(
        self,
        connection: Connection,
        *,
        start: Vector,
        live: Vector,
        incarnations: Mapping[str, bytes],
        timestamp_s: int = 0,
    ) -> None:
        self.connection = connection
        self._live = live
        self._position = ChannelPosition(
            (TopicLayout(name, incarnations[name], offsets) for name, offsets in start.items()),
            timestamp_s=timestamp_s,
        )
        self._pending: deque[Item] = deque()
        self.sent = 0

    def feed_items(self, items: Iterable[Dispatched]) -> None:
        for item in items:
            self._feed(item.event, item.body)

    def feed_events(self, events: Iterable[Event]) -> None:
        for event in events:
            self._feed(event, None)

    def _feed(self, event: Event, body: str | None) -> None:
        topic, partition, offset = event.topic, event.partition, event.offset
        live = self._live.get(topic)
        if live is None or partition >= len(live) or offset >= live[partition]:
            return  # at or past the live boundary: the held live queue has it
        if offset < self._position.next_offset(topic, partition):
            return  # before the cursor, or fed twice
        if not Hub.wants(self.connection, event):
            self._position.skip(topic, partition, offset)
            return
        event_id = self._position.advance(topic, partition, offset, event.timestamp_ms)
        frame = with_id(event_id, body if body is not None else render_body(event))
        if self.connection.sse:
            frame = sse_message(frame, event_id)
        self._pending.append(Item(frame, utf8_size(frame), True, event.timestamp_ms))

    def end_range(self, topic: str, partition: int, end: int) -> None:
        """Everything of the range before ``end`` was fed: ids from now on claim it.

        Window plans feed only the items that can concern the client, so the position
        would otherwise stop at its last delivered event in each partition; the events
        in between were not for it, and later ids may claim them.
        """
        if end - 1 >= self._position.next_offset(topic, partition):
            self._position.skip(topic, partition, end - 1)

    def skip(self, topic: str, partition: int, offset: int) -> None:
        """An undeliverable record inside a range: the replay position moves past it."""
        if offset >= self._position.next_offset(topic, partition):
            self._position.skip(topic, partition, offset)

    def pump(self) -> bool:
        """Move pending frames into the outbox while it has room; True when none are left."""
        outbox = self.connection.outbox
        pending = self._pending
        while pending:
            if not outbox.offer_replay(pending[0]):
                return False
            pending.popleft()
            self.sent += 1
        return True

    @property
    def pending(self) -> int:
        return len(self._pending)

    def finish(self) -> None:
        """All ranges fed and pumped: release the held live frames behind the replay."""
        if self._pending:
            raise RuntimeError("finish() before every replayed frame was pumped")
        self.connection.outbox.release()


class TurnBudget:
    """Replay work allowed per event-loop turn, shared by every replay of the process.

    A replay decodes, filters and encodes its events in slices; each slice asks for a
    share of the current turn's budget first. Once the turn's budget is spent, replays
    wait for a later turn, so the live path (one fetch slice and one write pass per turn)
    keeps running between slices however many replays are under way. The edge numbers
    the turns; the count starts afresh when the number changes.
    """

    __slots__ = ("_turn", "_used", "per_turn")

    def __init__(self, per_turn: int) -> None:
        if per_turn < 1:
            raise ValueError("per_turn must be at least 1")
        self.per_turn = per_turn
        self._turn = -1
        self._used = 0

    def take(self, want: int, turn: int) -> int:
        """Grant up to ``want`` events in ``turn``; 0 means "wait for a later turn"."""
        if turn != self._turn:
            self._turn = turn
            self._used = 0
        grant = max(0, min(want, self.per_turn - self._used))
        self._used += grant
        return grant

    def take_all(self, want: int, turn: int) -> bool:
        """Grant all of ``want`` in ``turn``, or nothing (False)."""
        if turn != self._turn:
            self._turn = turn
            self._used = 0
        if want > self.per_turn - self._used:
            return False
        self._used += want
        return True
