"""The live path for one event: position, envelope, window, fan-out.

``Dispatcher.dispatch`` does the per-event work exactly once (advance the cursor, render
the envelope and its size into one outbox ``Item``, remember it in the partition's
window) and then lets the hub do the per-recipient work: offering that same item. The
SSE variant is rendered only when SSE clients exist.
Undeliverable records go through ``skip`` so the position still moves past them.
"""

from __future__ import annotations

from clarion_worker.core.cursor import ChannelPosition
from clarion_worker.core.envelope import render_body, sse_message, utf8_size, with_id
from clarion_worker.core.events import Event
from clarion_worker.core.hub import NO_SSE_ITEM, Connection, Hub
from clarion_worker.core.outbox import Item
from clarion_worker.core.window import Dispatched, WindowSet
from clarion_worker.core.wsframe import text_frame


class Dispatcher:
    def __init__(self, position: ChannelPosition, windows: WindowSet, hub: Hub) -> None:
        self.position = position
        self.windows = windows
        self.hub = hub
        #: Recipients of the last ``dispatch`` whose frame was written at once.
        self.written_now = 0

    def dispatch(self, event: Event, alone: bool = False) -> list[Connection]:
        """Deliver one live event; return the overflowed connections (close with 4008).

        ``alone``: the event is the only one of its event-loop turn, so no write pass
        would join it with another for any client; recipients with nothing queued get
        its frame written at once (``Hub.deliver``), and ``written_now`` says how many.
        """
        event_id = self.position.advance(
            event.topic, event.partition, event.offset, event.timestamp_ms
        )
        body = render_body(event)
        frame = with_id(event_id, body)
        kafka_ms = event.timestamp_ms
        item = Item(frame, utf8_size(frame), True, kafka_ms)
        self.windows.append(Dispatched(event, body))
        sse_item = NO_SSE_ITEM
        if self.hub.sse_count:
            sse_frame = sse_message(frame, event_id)
            sse_item = Item(sse_frame, utf8_size(sse_frame), True, kafka_ms)
        ws_frame = text_frame(frame.encode()) if alone else None
        overflowed, self.written_now = self.hub.deliver(event, item, sse_item, ws_frame)
        return overflowed

    def skip(self, topic: str, partition: int, offset: int) -> None:
        """An undeliverable record: move the position past it."""
        self.position.skip(topic, partition, offset)
