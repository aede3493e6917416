"""A connection's bounded outbound queue: pure, never blocks, tracks count and bytes.

Live fan-out calls ``offer`` for every recipient, so it does a few attribute updates and
two deque appends (the frame and its precomputed size), no allocation. Over either bound
``offer`` returns False and the edge closes the connection with ``SLOW_CONSUMER``.

It is drained in one of three ways: ``take_all`` by the fan-out pass that writes a
client's whole queue to its socket at once (WebSocket, direct writes), ``take_frame`` by a
per-connection writer (WebSocket through plain ASGI sends), ``take_chunk`` by the SSE
stream. ``on_ready`` is called only on the empty -> non-empty transition, so the edge
schedules a client once per burst, not once per event.

Resume support ("replay, then live"): while ``holding``, live offers go to a separate,
equally bounded held queue; replay frames go in with ``offer_replay`` (False = no room
yet: wait for the writer, this is pacing, not overflow); ``release`` appends the held
frames behind the replay.
"""

from __future__ import annotations

from collections.abc import Callable

from clarion_worker.core.envelope import BATCH_OVERHEAD_BYTES, batch_frame


class Outbox:
    __slots__ = (
        "_head",
        "_held",
        "_held_bytes",
        "_held_sizes",
        "_items",
        "_sizes",
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
        self._items: list[str] = []
        self._sizes: list[int] = []
        self._head = 0
        self._held: list[str] = []
        self._held_sizes: list[int] = []
        self._held_bytes = 0
        self.count = 0
        self.nbytes = 0
        self.max_events = max_events
        self.max_bytes = max_bytes
        self.batch_max_events = batch_max_events
        self.batch_max_bytes = batch_max_bytes
        self.holding = False
        self.on_ready = on_ready

    def offer(self, item: str, size: int) -> bool:
        """Queue a live frame of ``size`` UTF-8 bytes; False means overflow (close 4008)."""
        if self.holding:
            return self._hold(item, size)
        if self.count >= self.max_events or self.nbytes + size > self.max_bytes:
            return False
        self._push(item, size)
        return True

    def _hold(self, item: str, size: int) -> bool:
        if len(self._held) >= self.max_events or self._held_bytes + size > self.max_bytes:
            return False
        self._held.append(item)
        self._held_sizes.append(size)
        self._held_bytes += size
        return True

    def has_room(self, size: int) -> bool:
        return self.count < self.max_events and self.nbytes + size <= self.max_bytes

    def offer_replay(self, item: str, size: int) -> bool:
        """Queue a replayed frame if it fits now; False means "wait for the writer"."""
        if not self.has_room(size) and self.count > 0:
            return False
        self._push(item, size)
        return True

    def offer_control(self, item: str, size: int) -> None:
        """Queue a control frame (welcome, pong, reset, reconnect) regardless of bounds."""
        self._push(item, size)

    def _push(self, item: str, size: int) -> None:
        self._items.append(item)
        self._sizes.append(size)
        self.count += 1
        self.nbytes += size
        if self.count == 1 and self.on_ready is not None:
            self.on_ready()

    def hold(self) -> None:
        """From now on, live frames wait in the held queue (a resume is being planned)."""
        self.holding = True

    def release(self) -> None:
        """Replay is complete: held live frames follow it, and live frames flow again."""
        self.holding = False
        held, sizes = self._held, self._held_sizes
        self._held, self._held_sizes = [], []
        for item, size in zip(held, sizes, strict=True):
            self._push(item, size)
        self._held_bytes = 0

    @property
    def held_count(self) -> int:
        return len(self._held)

    def __len__(self) -> int:
        return self.count

    def take_frame(self, batch: bool) -> str | None:
        """The next WebSocket frame, or None when empty.

        Batch clients get up to ``batch_max_events`` envelopes (and ``batch_max_bytes``) in
        one ``batch`` frame; a lone item, or any control frame, is sent as it is.
        """
        taken = self.take_run(batch)
        if taken is None:
            return None
        return taken[0] if len(taken) == 1 else batch_frame(taken)

    def take_run(self, batch: bool) -> list[str] | None:
        """What ``take_frame`` sends, as the queued items: one control frame, one envelope,
        or (batch clients) the run of envelopes its ``batch`` frame joins."""
        if not self.count:
            return None
        items = self._items
        if not batch or self.count == 1 or not is_event(items[self._head]):
            return [self._pop()]
        sizes = self._sizes
        budget = self.batch_max_bytes - BATCH_OVERHEAD_BYTES
        taken: list[str] = []
        used = 0
        while self.count and len(taken) < self.batch_max_events and is_event(items[self._head]):
            size = sizes[self._head] + (1 if taken else 0)  # the comma between envelopes
            if taken and used + size > budget:
                break
            taken.append(self._pop())
            used += size
        return taken

    def take_all(self) -> tuple[str, ...]:
        """Everything queued, oldest first (the fan-out pass writes it in one go)."""
        items = tuple(self._items[self._head :] if self._head else self._items)
        self._reset()
        return items

    def take_chunk(self, max_bytes: int) -> str | None:
        """Several queued frames joined into one write (SSE), at least one, up to max_bytes."""
        taken = self.take_chunk_run(max_bytes)
        if taken is None:
            return None
        return taken[0] if len(taken) == 1 else "".join(taken)

    def take_chunk_run(self, max_bytes: int) -> list[str] | None:
        """What ``take_chunk`` joins, as the queued items (the edge counts the events)."""
        if not self.count:
            return None
        sizes = self._sizes
        used = sizes[self._head]
        taken = [self._pop()]
        while self.count and used + sizes[self._head] <= max_bytes:
            used += sizes[self._head]
            taken.append(self._pop())
        return taken

    def _pop(self) -> str:
        head = self._head
        item = self._items[head]
        self.nbytes -= self._sizes[head]
        self.count -= 1
        if self.count == 0:
            self._reset()
        elif head >= 1024 and head * 2 >= len(self._items):
            # Never emptied for long (a client just keeping up): drop the consumed prefix.
            del self._items[: head + 1]
            del self._sizes[: head + 1]
            self._head = 0
        else:
            self._head = head + 1
        return item

    def _reset(self) -> None:
        # New empty lists: the old backing arrays, however large a burst grew them, go.
        self._items = []
        self._sizes = []
        self._head = 0
        self.count = 0
        self.nbytes = 0

    def clear(self) -> None:
        """Drop everything (the connection is closing)."""
        self._reset()
        self._held = []
        self._held_sizes = []
        self._held_bytes = 0


def is_event(frame: str) -> bool:
    """Whether a queued frame is an event envelope (``envelope.with_id`` starts them all
    so; a payload comes later in the text and cannot change it). Only they are batched."""
    return frame.startswith('{"type":"event"')
