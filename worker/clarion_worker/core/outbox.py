"""A connection's bounded outbound queue: pure, never blocks, tracks count and bytes.

The queue holds ``Item``s: a frame's text, its UTF-8 size and what it is (an event or
a control frame), set by whoever queues it and never guessed from the text. Live fan-out
calls ``offer`` for every recipient with the one ``Item`` the dispatcher made for the
event, so it does a few attribute updates and one list append, no allocation. Over
either bound ``offer`` returns False and the edge closes the connection with
``SLOW_CONSUMER``.

It is drained in one of three ways: ``take_all`` by the fan-out pass that writes a
client's whole queue to its socket at once (WebSocket, direct writes), ``take_run`` by a
per-connection writer (WebSocket through plain ASGI sends), ``take_chunk_run`` by the SSE
stream. Which events share a ``batch`` frame is decided once, by ``batch_run``, for both
WebSocket paths. ``on_ready`` is called only on the empty -> non-empty transition, so the edge
schedules a client once per burst, not once per event.

Resume support ("replay, then live"): while ``holding``, live offers go to a separate,
equally bounded held queue; replay frames go in with ``offer_replay`` (False = no room
yet: wait for the writer, this is pacing, not overflow); ``release`` appends the held
frames behind the replay.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from clarion_worker.core.envelope import BATCH_OVERHEAD_BYTES, batch_frame, utf8_size


class Item:
    """One queued frame: its text, its UTF-8 size, whether it is an event envelope (only
    events are batched and counted as deliveries) and, for events, the Kafka timestamp
    its latency sample is taken from.

    The dispatcher makes one per live event and every recipient queues that same object
    (identity-hashed: the write pass keys its memo by tuples of them); replay makes one
    per replayed frame, ``Outbox.offer_control`` one per control frame.
    """

    __slots__ = ("event", "kafka_ms", "size", "text")

    def __init__(
        self, text: str, size: int, event: bool = False, kafka_ms: int | None = None
    ) -> None:
        self.text = text
        self.size = size
        self.event = event
        self.kafka_ms = kafka_ms

    def __repr__(self) -> str:
        kind = "event" if self.event else "control"
        return f"Item({kind}, {self.text!r})"


def event_item(text: str, kafka_ms: int | None = None) -> Item:
    """An event envelope (or its SSE message) as an outbox item."""
    return Item(text, utf8_size(text), True, kafka_ms)


def control_item(text: str) -> Item:
    """A control frame (welcome, pong, reset, reconnect, error) as an outbox item."""
    return Item(text, utf8_size(text))


def batch_run(items: Sequence[Item], start: int, stop: int, max_events: int, max_bytes: int) -> int:
    """How many of ``items[start:stop]`` a batch client gets in the frame that starts at
    ``start``: 1 for a control frame or an event that goes alone, else the run of
    consecutive events one ``batch`` frame carries, at most ``max_events`` of them and
    ``max_bytes`` in all (an event larger than that still goes, alone).

    The one batching rule of both WebSocket paths: the writer task's ``take_run`` and
    the write pass's ``coalesce.PassEncoder``.
    """
    first = items[start]
    if not first.event:
        return 1
    budget = max_bytes - BATCH_OVERHEAD_BYTES
    used = first.size
    end = start + 1
    limit = min(stop, start + max_events)
    while end < limit:
        item = items[end]
        if not item.event:
            break
        used += item.size + 1  # the comma between envelopes
        if used > budget:
            break
        end += 1
    return end - start


class Outbox:
    __slots__ = (
        "_head",
        "_held",
        "_held_bytes",
        "_items",
        "batch_max_bytes",
        "batch_max_events",
        "count",
        "holding",
        "max_bytes",
        "max_events",
        "nbytes",
        "on_ready",
    )

    def __init__(
        self,
        *,
        max_events: int,
        max_bytes: int,
        batch_max_events: int = 1,
        batch_max_bytes: int = 0,
        on_ready: Callable[[], None] | None = None,
    ) -> None:
        # Lists with a head index, not deques: an empty list costs 56 bytes, an empty
        # deque ~760, and most connections are idle most of the time (W3).
        self._items: list[Item] = []
        self._head = 0
        self._held: list[Item] = []
        self._held_bytes = 0
        self.count = 0
        self.nbytes = 0
        self.max_events = max_events
        self.max_bytes = max_bytes
        self.batch_max_events = batch_max_events
        self.batch_max_bytes = batch_max_bytes
        self.holding = False
        self.on_ready = on_ready

    def offer(self, item: Item) -> bool:
        """Queue a live event; False means overflow (close 4008)."""
        if self.holding:
            return self._hold(item)
        count = self.count
        if count >= self.max_events or self.nbytes + item.size > self.max_bytes:
            return False
        # ``_push`` inlined: this runs once per recipient of every live event.
        self._items.append(item)
        self.count = count + 1
        self.nbytes += item.size
        if not count and self.on_ready is not None:
            self.on_ready()
        return True

    def _hold(self, item: Item) -> bool:
        if len(self._held) >= self.max_events or self._held_bytes + item.size > self.max_bytes:
            return False
        self._held.append(item)
        self._held_bytes += item.size
        return True

    def has_room(self, size: int) -> bool:
        return self.count < self.max_events and self.nbytes + size <= self.max_bytes

    def offer_replay(self, item: Item) -> bool:
        """Queue a replayed event if it fits now; False means "wait for the writer"."""
        if not self.has_room(item.size) and self.count > 0:
            return False
        self._push(item)
        return True

    def offer_control(self, text: str) -> None:
        """Queue a control frame (welcome, pong, reset, reconnect) regardless of bounds."""
        self._push(control_item(text))

    def _push(self, item: Item) -> None:
        self._items.append(item)
        self.count += 1
        self.nbytes += item.size
        if self.count == 1 and self.on_ready is not None:
            self.on_ready()

    def hold(self) -> None:
        """From now on, live frames wait in the held queue (a resume is being planned)."""
        self.holding = True

    def release(self) -> None:
        """Replay is complete: held live frames follow it, and live frames flow again."""
        self.holding = False
        held, self._held = self._held, []
        for item in held:
            self._push(item)
        self._held_bytes = 0

    @property
    def held_count(self) -> int:
        return len(self._held)

    def __len__(self) -> int:
        return self.count

    def take_frame(self, batch: bool) -> str | None:
        """The text of the next WebSocket frame, or None when empty (see ``take_run``)."""
        taken = self.take_run(batch)
        if taken is None:
            return None
        return taken[0].text if len(taken) == 1 else batch_frame([item.text for item in taken])

    def take_run(self, batch: bool) -> list[Item] | None:
        """The items of the next WebSocket frame: one control frame, one event, or (batch
        clients) the run of events one ``batch`` frame joins (``batch_run``)."""
        if not self.count:
            return None
        if not batch or self.count == 1:
            return [self._pop()]
        head = self._head
        size = batch_run(
            self._items, head, head + self.count, self.batch_max_events, self.batch_max_bytes
        )
        return [self._pop() for _ in range(size)]

    def take_all(self) -> tuple[Item, ...]:
        """Everything queued, oldest first (the fan-out pass writes it in one go)."""
        items = tuple(self._items[self._head :] if self._head else self._items)
        # ``_reset`` inlined: the write pass calls this once per client.
        self._items = []
        self._head = 0
        self.count = 0
        self.nbytes = 0
        return items

    def take_chunk(self, max_bytes: int) -> str | None:
        """Several queued frames joined into one write (SSE), at least one, up to max_bytes."""
        taken = self.take_chunk_run(max_bytes)
        if taken is None:
            return None
        return taken[0].text if len(taken) == 1 else "".join(item.text for item in taken)

    def take_chunk_run(self, max_bytes: int) -> list[Item] | None:
        """What ``take_chunk`` joins, as the queued items (the edge counts the events)."""
        if not self.count:
            return None
        items = self._items
        used = items[self._head].size
        taken = [self._pop()]
        while self.count and used + items[self._head].size <= max_bytes:
            used += items[self._head].size
            taken.append(self._pop())
        return taken

    def _pop(self) -> Item:
        head = self._head
        item = self._items[head]
        self.nbytes -= item.size
        self.count -= 1
        if self.count == 0:
            self._reset()
        elif head >= 1024 and head * 2 >= len(self._items):
            # Never emptied for long (a client just keeping up): drop the consumed prefix.
            del self._items[: head + 1]
            self._head = 0
        else:
            self._head = head + 1
        return item

    def _reset(self) -> None:
        # A new empty list: the old backing array, however large a burst grew it, goes.
        self._items = []
        self._head = 0
        self.count = 0
        self.nbytes = 0

    def clear(self) -> None:
        """Drop everything (the connection is closing)."""
        self._reset()
        self._held = []
        self._held_bytes = 0
