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
from clarion_worker.core.hub import Connection, Hub
from clarion_worker.core.outbox import Item
from clarion_worker.core.window import Dispatched, WindowSet


class Dispatcher:
    def __init__(self, position: ChannelPosition, windows: WindowSet, hub: Hub) -> None:
        self.position = position
        self.windows = windows
        self.hub = hub

    def dispatch(self, event: Event) -> list[Connection]:
        """Deliver one live event; return the overflowed connections (close with 4008)."""
        event_id = self.position.advance(
            event.topic, event.partition, event.offset, event.timestamp_ms
        )
        body = render_body(event)
        frame = with_id(event_id, body)
        kafka_ms = event.timestamp_ms
        item = Item(frame, utf8_size(frame), True, kafka_ms)
        self.windows.append(Dispatched(event, body))
        if self.hub.sse_count:
            sse_frame = sse_message(frame, event_id)
            sse_item = Item(sse_frame, utf8_size(sse_frame), True, kafka_ms)
            return self.hub.publish(event, item, sse_item)
        return self.hub.publish(event, item)

    def skip(self, topic: str, partition: int, offset: int) -> None:
        """An undeliverable record: move the position past it."""
        self.position.skip(topic, partition, offset)
