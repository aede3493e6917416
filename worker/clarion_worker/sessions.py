"""One client session, WebSocket or SSE: its outbox, registration, resume and close.

The resume boundary (see ``core.resume``): in one synchronous step — no ``await`` in
between — the connection joins the hub with its outbox holding live frames, the live
position is snapshotted, and the resume is planned. Every live event dispatched after
that step waits in the held queue; the replay covers exactly [cursor, snapshot); the
held frames are released behind the replay. No gap, no duplicate.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import time
from typing import TYPE_CHECKING, Literal, Protocol

from clarion_worker.core.cursor import CursorError, decode_cursor, name_tag
from clarion_worker.core.envelope import sse_message
from clarion_worker.core.hub import Connection, route_keys
from clarion_worker.core.outbox import Outbox
from clarion_worker.core.principal import Principal
from clarion_worker.core.protocol import CloseCode, error_frame, reset_frame, welcome_frame
from clarion_worker.core.replay import ReplaySession
from clarion_worker.core.resume import FromKafka, FromWindow, Reset, plan_resume
from clarion_worker.replayer import ReplayBudget, Skipped, read_ranges

if TYPE_CHECKING:
    from clarion_worker.consumer import ChannelConsumer, ChannelState
    from clarion_worker.core.events import RecordDecoder
    from clarion_worker.core.settings import WorkerSettings
    from clarion_worker.direct import DirectSink
    from clarion_worker.flusher import Flusher
    from clarion_worker.metrics import WorkerMetrics

log = logging.getLogger("clarion.worker.session")

Transport = Literal["websocket", "sse"]
#: How long a resume waits for this replica to reach a cursor minted by a faster one.
CATCH_UP_SECONDS = 5.0
_ids = itertools.count(1)
_PREFIX = os.urandom(3).hex()


class SessionHost(Protocol):
    """What a session needs of the process serving it (``runtime.WorkerRuntime``, the
    composition root, which creates the sessions and is not imported here)."""

    settings: WorkerSettings
    metrics: WorkerMetrics
    consumer: ChannelConsumer
    decoder: RecordDecoder
    replay_budget: ReplayBudget

    @property
    def state(self) -> ChannelState: ...

    def register(self, session: Session) -> None: ...

    def unregister(self, session: Session) -> None: ...


class Session:
    """The server side of one client connection."""

    def __init__(
        self, runtime: SessionHost, principal: Principal, transport: Transport, batch: bool
    ) -> None:
        limits = runtime.settings.limits
        self.runtime = runtime
        self.transport = transport
        # Events are made on first use: each costs ~0.8 KiB, and a session written by the
        # write pass that never resumes needs neither (memory per idle connection, W3).
        self._wakeup: asyncio.Event | None = None
        self._drained: asyncio.Event | None = None
        self.outbox = Outbox(
            max_events=limits.queue_max_events,
            max_bytes=limits.queue_max_bytes,
            batch_max_events=limits.batch_max_events if batch else 1,
            batch_max_bytes=limits.batch_max_bytes,
            on_ready=self._notify,
        )
        self.id = f"{_PREFIX}-{next(_ids)}"
        self.connection = Connection(
            self.id, principal, self.outbox, sse=transport == "sse", batch=batch
        )
        self.close_code: CloseCode | None = None
        self.close_reason = ""
        #: Close once the outbox is empty (drain: the reconnect advice goes out first).
        self.pending_close: CloseCode | None = None
        #: Events and frames written so far (an in-band resume is refused after the first).
        self.frames_written = 0
        self.events_written = False
        #: The task running ``start`` (registration and any replay).
        self.resume_task: asyncio.Task[None] | None = None
        #: Direct writes: the socket the write pass writes to (None: a writer task does).
        self.sink: DirectSink | None = None
        self._flusher: Flusher | None = None
        #: Already in the current write pass's list.
        self.marked = False
        #: The code of the close the transport reported (the client's, 1006 when lost).
        self.peer_code: int | None = None
        #: From the plan of a replay to the write that hands over to live: what is written
        #: meanwhile is replayed (its latency goes to the replay series, not the live one).
        self.replaying = False
        self.replay_done = False

    @property
    def wakeup(self) -> asyncio.Event:
        """Set when a writer task (not the write pass) has something to send."""
        if self._wakeup is None:
            self._wakeup = asyncio.Event()
        return self._wakeup

    @property
    def drained(self) -> asyncio.Event:
        """Set whenever the writer sent something: a paced replay waits for it."""
        if self._drained is None:
            self._drained = asyncio.Event()
        return self._drained

    def attach(self, sink: DirectSink, flusher: Flusher) -> None:
        """Let the write pass drain this session straight into its socket."""
        self.sink = sink
        self._flusher = flusher
        sink.on_writable = self._notify

    def _notify(self) -> None:
        """Something to write or to close: schedule the writer (pass or task)."""
        if self._flusher is not None:
            self._flusher.mark(self)
        else:
            self.wakeup.set()

    # ---- lifecycle -----------------------------------------------------------------

    def welcome(self) -> None:
        """Queue the welcome of a session that resumes (its client holds its own cursor)."""
        self.offer_control(self._welcome_frame(None))

    def join_live(self) -> None:
        """Welcome and register in one synchronous step, with the position of "now".

        Every event dispatched after this step reaches the session live, and the
        welcome's ``position`` names exactly that point: a client disconnected before
        its first event resumes from it without missing anything.
        """
        position = self.runtime.state.position.current_id()
        frame = self._welcome_frame(position)
        if self.connection.sse:
            frame = sse_message(frame, position)
        self.outbox.offer_control(frame)
        self.runtime.register(self)

    def _welcome_frame(self, position: str | None) -> str:
        return welcome_frame(
            connection_id=self.id,
            replica_id=self.runtime.settings.replica_id,
            heartbeat_seconds=self.runtime.settings.heartbeat.interval_seconds,
            batch=self.connection.batch,
            position=position,
        )

    def offer_control(self, frame: str) -> None:
        if self.connection.sse:
            frame = sse_message(frame)
        self.outbox.offer_control(frame)

    async def start(self, last_id: str) -> None:
        """Replay from ``last_id``, then join live delivery (see the module docstring).

        The handler cancels this task when its client leaves. The task then returns
        instead of ending cancelled: a cancelled task keeps its CancelledError, whose
        traceback holds this session's frames (the replay, its frames, the session, and
        through ``resume_task`` the task itself) in a reference cycle that only a full
        collection frees, and the worker makes those rare (``gc.set_threshold``).
        """
        try:
            await self._resume(last_id)
        except asyncio.CancelledError:
            return

    async def _resume(self, last_id: str) -> None:
        await self._wait_for_cursor(last_id)
        if self.close_code is not None:
            return
        state = self.runtime.state
        # ---- the boundary: synchronous from here to plan_resume -----------------------
        self.outbox.hold()
        self.runtime.register(self)
        live = state.position.snapshot()
        plan = plan_resume(
            last_id,
            live=live,
            topics=state.topic_facts(),
            windows=state.windows,
            bounds=self.runtime.settings.resume,
            now_ms=int(time.time() * 1000),
            keys=route_keys(self.connection.principal),
        )
        # ---- end of the boundary --------------------------------------------------------
        if isinstance(plan, Reset):
            self.runtime.metrics.resumes.labels("reset").inc()
            self.offer_control(reset_frame(plan.reason))
            self.outbox.release()
            return
        replay = ReplaySession(
            self.connection,
            start=plan.start,
            live=plan.live,
            incarnations=state.incarnations,
        )
        self.replaying = True
        try:
            if isinstance(plan, FromWindow):
                self.runtime.metrics.resumes.labels("window").inc()
                budget = self.runtime.replay_budget
                for scope, items in plan.segments:
                    done = 0
                    while done < len(items):  # in slices: see replayer.ReplayBudget
                        size = await budget.take(len(items) - done)
                        replay.feed_items(items[done : done + size])
                        done += size
                        await self._pump(replay)
                    replay.end_range(scope.topic, scope.partition, scope.end)
                await self._pump(replay)
            elif isinstance(plan, FromKafka):
                self.runtime.metrics.resumes.labels("kafka").inc()
                await self._replay_from_kafka(replay, plan)
            replay.finish()
            self.replay_done = True
            if not self.outbox.count:
                self.replaying = False
        except Exception as error:  # a failed replay must not leave live frames held
            log.warning("resume failed", extra={"session": self.id, "error": repr(error)})
            self.runtime.metrics.resumes.labels("failed").inc()
            self.request_close(CloseCode.INTERNAL_ERROR, "resume failed; reconnect and resume")

    async def _wait_for_cursor(self, last_id: str) -> None:
        """A cursor from a replica that is slightly ahead: wait until this one gets there."""
        try:
            cursor = decode_cursor(last_id)
        except CursorError:
            return  # plan_resume answers with reset(bad_cursor)
        deadline = time.monotonic() + CATCH_UP_SECONDS
        state = self.runtime.state
        wanted = {entry.name_tag: entry.offsets for entry in cursor.topics}
        while True:
            behind = False
            for topic, offsets in state.position.snapshot().items():
                given = wanted.get(name_tag(topic), ())
                if any(c > o for c, o in zip(given, offsets, strict=False)):
                    behind = True
                    break
            remaining = deadline - time.monotonic()
            if not behind or remaining <= 0:
                return  # still behind: plan_resume answers reset(ahead_of_log)
            try:
                await asyncio.wait_for(self.runtime.consumer.advanced.wait(), remaining)
            except TimeoutError:
                return

    async def _pump(self, replay: ReplaySession) -> None:
        while not replay.pump():
            if self.close_code is not None:
                raise asyncio.CancelledError
            self.drained.clear()
            await self.drained.wait()

    async def _replay_from_kafka(self, replay: ReplaySession, plan: FromKafka) -> None:
        runtime = self.runtime
        batches = read_ranges(
            runtime.settings.kafka,
            runtime.decoder,
            plan.ranges,
            runtime.replay_budget,
            runtime.metrics.readbacks_open,
        )
        # Closed on every way out (the client left: this task is cancelled), so the
        # read-back's consumer stops now, not when the garbage collector finds it.
        async with contextlib.aclosing(batches):
            async for batch in batches:
                for item in batch:
                    if isinstance(item, Skipped):
                        replay.skip(item.topic, item.partition, item.offset)
                    else:
                        replay.feed_events((item,))
                await self._pump(replay)

    def request_close(self, code: CloseCode, reason: str = "") -> None:
        """Stop delivery now; the transport closes once it notices (wakeup)."""
        if self.close_code is not None:
            return
        self.close_code = code
        self.close_reason = reason or code.name.lower()
        self.runtime.unregister(self)
        self.outbox.clear()
        if code not in (CloseCode.NORMAL, CloseCode.GOING_AWAY):
            # Over SSE too: a stream that just ends cannot tell an expired token (refresh
            # it) from an outage (back off); the error message says which.
            self.offer_control(error_frame(code, self.close_reason))
        self._notify()
        if self._drained is not None:
            self._drained.set()

    def close_after_flush(self, code: CloseCode, reason: str) -> None:
        """Stop live delivery, let the writer send what is queued, then close (drain)."""
        if self.close_code is not None or self.pending_close is not None:
            return
        self.pending_close = code
        self.close_reason = reason
        self.runtime.unregister(self)
        self._notify()

    def finish(self) -> None:
        self.runtime.unregister(self)

    def ended_with(self) -> int:
        """The close code this session ended with, for ``disconnects_total{code}``.

        A close the server decided (4008, 4004, a drain's 4100, 4009, ...) is what ended
        it; otherwise whatever the transport reported: the client's own code, 1009 when
        the protocol layer refused a frame, 1006 when the connection just dropped.
        """
        code = self.close_code
        if code is not None and code is not CloseCode.NORMAL:
            return int(code)
        if self.pending_close is not None:
            return int(self.pending_close)
        if self.peer_code is not None:
            return self.peer_code
        return int(CloseCode.NORMAL)
