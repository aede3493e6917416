"""The write pass: every client with queued frames gets them in one socket write.

Fan-out only appends to outboxes. A session whose outbox goes from empty to non-empty
is marked here, and the first mark of an event-loop turn schedules one pass with
``call_soon``: it runs after the consumer's synchronous dispatch of a fetch, so every
event of the fetch (and any control frame of the turn) goes out together. Per client
the pass takes the whole outbox, asks the pass's ``PassEncoder`` for its bytes (built
once per distinct sequence) and writes them: no task, no wake-up, no await per client.

Flow control stays per client: a transport above its high-water mark is skipped and its
outbox keeps filling until the transport drains (``on_writable`` marks it again) or the
outbox overflows (close 4008, slow consumer). A session that must close now has its
error frame and close frame written regardless; one draining (``pending_close``)
closes once its outbox is empty.

An event alone in its event-loop turn has nothing to share a write with: the fan-out
writes its frame itself to every recipient with nothing queued (``Hub.deliver``,
``Session.write_now``), skipping the outbox and this pass, and reports it to
``written_now`` for the same metrics.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Protocol

from websockets.exceptions import InvalidState

from clarion_worker.core.coalesce import Encoded, PassEncoder
from clarion_worker.core.outbox import Outbox
from clarion_worker.core.protocol import CloseCode
from clarion_worker.core.settings import LimitsSettings
from clarion_worker.core.writepass import WRITABLE, plan_write
from clarion_worker.logs import RateLimitedLog
from clarion_worker.metrics import WorkerMetrics

log = logging.getLogger("clarion.worker.flusher")
#: How long a closed connection waits for the client's close reply before aborting.
CLOSE_HANDSHAKE_SECONDS = 2.0
#: What writing to one client's socket may raise: the transport is gone or closing
#: (OSError, asyncio's RuntimeError on a closed transport), or websockets refuses a
#: close frame in the connection's state.
_SOCKET_ERRORS = (OSError, RuntimeError, InvalidState)


class Sink(Protocol):
    """The socket the pass writes to (``direct.DirectSink``)."""

    #: Hand bytes to the socket (``direct.DirectSink`` binds its transport's own
    #: ``write``: no Python frame per client on the pass's hot path).
    write: Callable[[bytes], None]

    def state(self) -> int: ...

    def close(self, code: int, reason: str, *, handshake_seconds: float) -> None: ...


class Writable(Protocol):
    """What the write pass needs of a client session (``sessions.Session``): its socket,
    queue and close state to read, its mark to set, and two calls back. The only field
    it writes is ``marked``."""

    #: Already in the current pass's list.
    marked: bool

    @property
    def sink(self) -> Sink | None: ...

    @property
    def outbox(self) -> Outbox: ...

    @property
    def batch(self) -> bool: ...

    @property
    def close_code(self) -> CloseCode | None: ...

    @property
    def pending_close(self) -> CloseCode | None: ...

    @property
    def close_reason(self) -> str: ...

    def wrote(self, frames: int, events: int, queued: int) -> bool:
        """Bookkeeping after a write; True if its frames count as replayed."""
        ...

    def request_close(self, code: CloseCode, reason: str = "") -> None: ...


class Flusher:
    def __init__(self, limits: LimitsSettings, metrics: WorkerMetrics) -> None:
        self._batch_max_events = limits.batch_max_events
        self._batch_max_bytes = limits.batch_max_bytes
        self._dirty: list[Writable] = []
        self._scheduled = False
        self._deliveries = metrics.deliveries.labels("websocket")
        self._one = metrics.frames_sent.labels("websocket", "one")
        self._batch = metrics.frames_sent.labels("websocket", "batch")
        self._latency = metrics.delivery_latency.labels("websocket")
        self._replay_latency = metrics.replay_latency.labels("websocket")
        self._duration = metrics.write_pass_duration
        self._failed_log = RateLimitedLog(log)

    def mark(self, session: Writable) -> None:
        """The session has something to write: include it in this turn's pass."""
        if session.marked:
            return
        session.marked = True
        self._dirty.append(session)
        if not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self.flush)

    def flush(self) -> None:
        """One pass over every marked session."""
        self._scheduled = False
        dirty, self._dirty = self._dirty, []
        if not dirty:
            return
        started = time.perf_counter()
        encoder = self._encoder()
        events = one = batch = 0
        sampled: set[int] = set()
        now = time.time()
        encode = encoder.encode
        for index, session in enumerate(dirty):
            session.marked = False
            sink = session.sink
            if sink is None:
                continue
            try:
                if (
                    session.close_code is None
                    and session.pending_close is None
                    and sink.state() == WRITABLE
                ):
                    # The common case, kept to a few attribute reads and one C-level
                    # write: ``plan_write`` with no close under way and a socket that
                    # takes data says "write whatever is queued" (tested against it).
                    outbox = session.outbox
                    if not outbox.count:
                        continue
                    encoded = encode(outbox.take_all(), session.batch)
                    sink.write(encoded.data)
                    written: Encoded | None = encoded
                else:
                    written = self._write(session, encoder)
            except _SOCKET_ERRORS as error:  # one broken socket must not starve the others
                self._failed_log.warning(
                    "write", "write pass failed for a client", error=repr(error)
                )
                session.request_close(CloseCode.INTERNAL_ERROR, "write failed")
                continue
            except BaseException:
                # A defect, not a socket (a renamed uvicorn attribute, a bad frame): it
                # reaches the loop's handler with its traceback instead of closing every
                # client with 1011; the clients after this one keep their turn.
                for rest in dirty[index + 1 :]:
                    rest.marked = False
                    self.mark(rest)
                raise
            if written is None:
                continue
            frames = written.one_frames + written.batch_frames
            replayed = session.wrote(frames, written.events, 0)
            events += written.events
            one += written.one_frames
            batch += written.batch_frames
            if written.oldest_kafka_ms is not None and id(written) not in sampled:
                # One latency sample per distinct sequence: its recipients got it together.
                # Replayed events are as old as the client's cursor: a series of their own.
                sampled.add(id(written))
                latency = self._replay_latency if replayed else self._latency
                latency.observe(max(0.0, now - written.oldest_kafka_ms / 1000))
        if events:
            self._deliveries.inc(events)
        if one:
            self._one.inc(one)
        if batch:
            self._batch.inc(batch)
        self._duration.observe(time.perf_counter() - started)

    def written_now(self, recipients: int, kafka_ms: int | None) -> None:
        """The fan-out wrote one live event's frame to ``recipients`` clients itself (an
        event alone in its turn: ``Hub.deliver``): the same metrics as a pass's."""
        self._deliveries.inc(recipients)
        self._one.inc(recipients)
        if kafka_ms is not None:
            self._latency.observe(max(0.0, time.time() - kafka_ms / 1000))

    def flush_session(self, session: Writable) -> None:
        """Write one session's queue now (its handler is about to return)."""
        session.marked = False
        written = self._write(session, self._encoder())
        if written is not None:
            session.wrote(written.one_frames + written.batch_frames, written.events, 0)

    def _encoder(self) -> PassEncoder:
        return PassEncoder(
            batch_max_events=self._batch_max_events, batch_max_bytes=self._batch_max_bytes
        )

    def _write(self, session: Writable, encoder: PassEncoder) -> Encoded | None:
        """Carry out ``writepass.plan_write`` for one session."""
        sink = session.sink
        if sink is None:
            return None
        outbox = session.outbox
        write, close = plan_write(
            sink.state(), outbox.count, session.close_code, session.pending_close
        )
        written = None
        if write:
            written = encoder.encode(outbox.take_all(), session.batch)
            sink.write(written.data)
        if close is not None:
            sink.close(int(close), session.close_reason, handshake_seconds=CLOSE_HANDSHAKE_SECONDS)
        return written
