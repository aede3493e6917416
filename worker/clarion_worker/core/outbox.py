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

from collections import deque
from collections.abc import Callable

from clarion_worker.core.envelope import BATCH_OVERHEAD_BYTES, batch_frame


class Outbox:
    __slots__ = (
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
        self._items: deque[str] = deque()
        self._sizes: deque[int] = deque()
        self._held: deque[str] = deque()
        self._held_sizes: deque[int] = deque()
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
        self._items.append(item)
        self._sizes.append(size)
        self.count += 1
        self.nbytes += size
        if self.count == 1 and self.on_ready is not None:
            self.on_ready()
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
        while self._held:
            self._push(self._held.popleft(), self._held_sizes.popleft())
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
        items = self._items
        if not items:
            return None
        if not batch or len(items) == 1 or not _is_event(items[0]):
            return self._pop()
        sizes = self._sizes
        budget = self.batch_max_bytes - BATCH_OVERHEAD_BYTES
        taken: list[str] = []
        used = 0
        while items and len(taken) < self.batch_max_events and _is_event(items[0]):
            size = sizes[0] + (1 if taken else 0)  # the comma between envelopes
            if taken and used + size > budget:
                break
            taken.append(self._pop())
            used += size
        return taken[0] if len(taken) == 1 else batch_frame(taken)

    def take_all(self) -> tuple[str, ...]:
        """Everything queued, oldest first (the fan-out pass writes it in one go)."""
        items = tuple(self._items)
        self._items.clear()
        self._sizes.clear()
        self.count = 0
        self.nbytes = 0
        return items

    def take_chunk(self, max_bytes: int) -> str | None:
        """Several queued frames joined into one write (SSE), at least one, up to max_bytes."""
        if not self._items:
            return None
        used = self._sizes[0]
        taken = [self._pop()]
        while self._items and used + self._sizes[0] <= max_bytes:
            used += self._sizes[0]
            taken.append(self._pop())
        return taken[0] if len(taken) == 1 else "".join(taken)

    def _pop(self) -> str:
        item = self._items.popleft()
        self.nbytes -= self._sizes.popleft()
        self.count -= 1
        return item

    def clear(self) -> None:
        """Drop everything (the connection is closing)."""
        self._items.clear()
        self._sizes.clear()
        self._held.clear()
        self._held_sizes.clear()
        self._held_bytes = 0
        self.count = 0
        self.nbytes = 0


def _is_event(frame: str) -> bool:
    # Envelopes all start with this prefix (envelope.with_id); only they go into batches.
    return frame.startswith('{"type":"event"')
