"""One client session, WebSocket or SSE: its outbox, registration, resume and close.

A session is built by ``runtime.WorkerRuntime`` (the composition root) from a
``SessionContext``, what every session of the process shares, and joins live delivery
through the ``SessionRegistry``; it never sees the runtime. The transport handlers
(``app``) drive it through its methods; the writers (the write pass, or a writer task)
report what they wrote with ``wrote``.

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
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from clarion_worker.core.cursor import Cursor, CursorError, decode_cursor, name_tag
from clarion_worker.core.envelope import sse_message
from clarion_worker.core.hub import Connection, Hub, route_keys
from clarion_worker.core.outbox import Outbox
from clarion_worker.core.principal import Principal
from clarion_worker.core.protocol import CloseCode, error_frame, reset_frame, welcome_frame
from clarion_worker.core.replay import ReplaySession
from clarion_worker.core.resume import FromKafka, FromWindow, Reset, plan_resume
from clarion_worker.core.writepass import WRITABLE
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


def _decoded(last_id: str) -> Cursor | None:
    """The cursor, or None when it does not decode (plan_resume then answers
    reset(bad_cursor))."""
    try:
        return decode_cursor(last_id)
    except CursorError:
        return None


class SessionRegistry:
    """The sessions receiving live events: the hub's connections, counted by transport.

    ``register`` and ``unregister`` are idempotent; a session unregisters as soon as it
    stops receiving live events (its close decided, an in-band resume restarting it),
    not only when its handler ends.
    """

    def __init__(self, hub: Hub, metrics: WorkerMetrics) -> None:
        self._hub = hub
        self._sessions: dict[str, Session] = {}
        self._connections = {
            transport: metrics.connections.labels(transport) for transport in ("websocket", "sse")
        }
        self._connects = {
            transport: metrics.connects.labels(transport) for transport in ("websocket", "sse")
        }
        #: Sessions unregistered so far (closed connections leave cycles: runtime's GC).
        self.removed = 0

    def __len__(self) -> int:
        return len(self._sessions)

    def __iter__(self) -> Iterator[Session]:
        """A snapshot: closing a session while iterating is fine."""
        return iter(list(self._sessions.values()))

    def ids(self) -> list[str]:
        return list(self._sessions)

    def get(self, session_id: str) -> Session | None:
        return self._sessions.get(session_id)

    def register(self, session: Session) -> None:
        if session.id in self._sessions:
            return
        self._sessions[session.id] = session
        self._hub.add(session.connection)
        self._connections[session.transport].inc()
        self._connects[session.transport].inc()

    def unregister(self, session: Session) -> None:
        if self._sessions.pop(session.id, None) is not None:
            self._hub.remove(session.connection)
            self._connections[session.transport].dec()
            self.removed += 1


@dataclass(frozen=True, slots=True, eq=False)
class SessionContext:
    """What every session of the process shares, built once by the runtime."""

    settings: WorkerSettings
    metrics: WorkerMetrics
    registry: SessionRegistry
    #: The live path: its position, windows and topic facts, and ``advanced``.
    consumer: ChannelConsumer
    decoder: RecordDecoder
    #: Replay work per event-loop turn, shared by every resume of the process.
    replay_budget: ReplayBudget

    @property
    def state(self) -> ChannelState:
        state = self.consumer.state
        assert state is not None, "the consumer has not started"
        return state


class Session:
    """The server side of one client connection."""

    # Slots: the live fan-out reads a handful of these for each of thousands of sessions
    # per event, mostly out of cache; inline slots are fewer memory lines than a dict's
    # values (latency table, docs/benchmarks.md).
    __slots__ = (
        "_context",
        "_drained",
        "_flusher",
        "_wakeup",
        "batch",
        "close_code",
        "close_reason",
        "connection",
        "events_written",
        "frames_written",
        "id",
        "marked",
        "outbox",
        "peer_code",
        "pending_close",
        "replay_done",
        "replaying",
        "resume_task",
        "sink",
        "transport",
    )

    def __init__(
        self, context: SessionContext, principal: Principal, transport: Transport, batch: bool
    ) -> None:
        limits = context.settings.limits
        self._context = context
        self.transport = transport
        self.batch = batch
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
        #: Events and frames written so far (an in-band resume is refused after the first);
        #: frames the fan-out wrote through ``Connection.armed`` are not counted.
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
        """Let the write pass drain this session straight into its socket (the runtime
        does, for a transport with direct writes)."""
        self.sink = sink
        self._flusher = flusher
        sink.on_writable = self._notify
        sink.on_blocked = self._disarm
        # Not through ``_notify``: the outbox calls this once per burst of every client,
        # on the live fan-out's hot path; it disarms, then marks the session for the pass.
        self.outbox.on_ready = self._queued
        self.connection.direct = self

    def write_now(self, frame: bytes) -> bool:
        """The live fan-out's offer of an event alone in its turn (``hub.DirectWriter``):
        written at once when the write pass would have written just that, this turn —
        nothing queued, held, replaying or closing, and a socket that takes data."""
        outbox = self.outbox
        sink = self.sink
        if (
            outbox.count
            or outbox.holding
            or self.replaying
            or self.close_code is not None
            or self.pending_close is not None
            or sink is None
            or sink.state() != WRITABLE
        ):
            return False
        sink.write(frame)
        self.frames_written += 1
        self.events_written = True
        if not sink.held:
            # The next frames alone in their turn go straight to the socket until
            # ``_disarm`` (hub.Connection.armed): every condition above changes only
            # through ``_queued``, the sink's ``on_blocked``, or a step that unregisters
            # the session first (a close, a drain), and a resume is refused from here on.
            self.connection.armed = sink.write
        return True

    def _queued(self) -> None:
        """The outbox went from empty to not (``Outbox.on_ready``): frames alone in their
        turn now queue behind what it holds, and the write pass takes it."""
        self.connection.armed = None
        if self._flusher is not None:
            self._flusher.mark(self)

    def _disarm(self) -> None:
        self.connection.armed = None

    def flush_now(self) -> None:
        """Write what is queued now, the close included (direct writes: the handler is
        about to return, and uvicorn then closes a transport with no close under way)."""
        if self._flusher is not None:
            self._flusher.flush_session(self)

    # ---- what the writers report ---------------------------------------------------------

    def wrote(self, frames: int, events: int, queued: int) -> bool:
        """A writer sent ``frames`` frames carrying ``events`` events, with ``queued``
        items left in the outbox when it took them; True if they count as replayed (their
        latency has its own series: as old as the client's cursor)."""
        self.frames_written += frames
        if events:
            self.events_written = True
        replayed = self.replaying
        if replayed and self.replay_done and not queued:
            self.replaying = False  # this write handed over to live
        if self._drained is not None:
            self._drained.set()  # a paced replay may queue more
        return replayed

    def all_written(self) -> CloseCode | None:
        """A writer task found the outbox empty: the code to close with now, if any."""
        if self._drained is not None:
            self._drained.set()
        return self.close_code or self.pending_close

    async def wait_for_work(self, seconds: float | None = None) -> bool:
        """A writer task waits until there is something to send or to close; False if
        ``seconds`` passed first (SSE: time for a heartbeat)."""
        wakeup = self.wakeup
        wakeup.clear()
        if seconds is None:
            await wakeup.wait()
            return True
        try:
            await asyncio.wait_for(wakeup.wait(), seconds)
        except TimeoutError:
            return False
        return True

    def _notify(self) -> None:
        """Something to write or to close: schedule the writer (pass or task)."""
        if self._flusher is not None:
            self._flusher.mark(self)
        else:
            self.wakeup.set()

    # ---- lifecycle -----------------------------------------------------------------

    def open(self, last_id: str | None) -> None:
        """Join live delivery now, or welcome and resume from ``last_id``.

        A resume whose every step can run now (this replica has reached the cursor, the
        missed events are in the windows and this turn's replay budget covers them) runs
        right here: its replay then leaves in the same socket write as the welcome, with
        no task of its own (W4, docs/benchmarks.md). Otherwise what is left runs in a task
        of its own (``resume_task``, cancelled by ``end``).
        """
        if last_id is None:
            self.join_live()
            return
        self.welcome()
        cursor = _decoded(last_id)
        if cursor is not None and self._behind(cursor):
            self.resume_task = asyncio.create_task(self.start(last_id))
            return
        plan = self._plan(cursor if cursor is not None else last_id)
        if plan is not None and not self._replay_at_once(plan):
            self.resume_task = asyncio.create_task(self._replay(plan))

    def welcome(self) -> None:
        """Queue the welcome of a session that resumes (its client holds its own cursor)."""
        self.offer_control(self._welcome_frame(None))

    def join_live(self) -> None:
        """Welcome and register in one synchronous step, with the position of "now".

        Every event dispatched after this step reaches the session live, and the
        welcome's ``position`` names exactly that point: a client disconnected before
        its first event resumes from it without missing anything.
        """
        position = self._context.state.position.current_id()
        frame = self._welcome_frame(position)
        if self.connection.sse:
            frame = sse_message(frame, position)
        self.outbox.offer_control(frame)
        self._context.registry.register(self)

    def _welcome_frame(self, position: str | None) -> str:
        settings = self._context.settings
        return welcome_frame(
            connection_id=self.id,
            replica_id=settings.replica_id,
            heartbeat_seconds=settings.heartbeat.interval_seconds,
            batch=self.connection.batch,
            position=position,
        )

    def offer_control(self, frame: str) -> None:
        if self.connection.sse:
            frame = sse_message(frame)
        self.outbox.offer_control(frame)

    def subscribe(self, event_types: frozenset[str] | None) -> None:
        """Narrow live delivery (and any replay still to come) to these event types."""
        self.connection.event_types = event_types

    def resume(self, last_id: str) -> None:
        """An in-band ``resume`` frame: restart from ``last_id`` as ``open`` would, unless
        events already went out from the live position (replaying from an older cursor
        now would repeat them; the handshake's ``lastId`` has no such race)."""
        if self.events_written or self.resume_task is not None:
            self.offer_control(
                error_frame(
                    CloseCode.BAD_FRAME,
                    "resume must come before any event: reconnect with ?lastId=",
                )
            )
            return
        self._context.registry.unregister(self)
        self.outbox.clear()
        if self.frames_written == 0:
            self.welcome()  # the cleared outbox held the first one
        self.resume_task = asyncio.create_task(self.start(last_id))

    def peer_left(self, code: int) -> None:
        """The transport reported the client's close (or the connection's loss)."""
        self.peer_code = code
        if self.pending_close is None:  # a drain's close keeps its own code
            self.request_close(CloseCode.NORMAL, "client left")

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
        cursor = _decoded(last_id)
        if cursor is not None:
            await self._wait_for_cursor(cursor)
        if self.close_code is not None:
            return
        plan = self._plan(cursor if cursor is not None else last_id)
        if plan is not None:
            await self._replay(plan)

    def _plan(self, cursor: Cursor | str) -> FromWindow | FromKafka | None:
        """The resume boundary, in one synchronous step: hold, register, plan. A reset is
        answered here (None)."""
        context = self._context
        state = context.state
        # ---- the boundary: synchronous from here to plan_resume -----------------------
        self._disarm()  # never armed here (a resume follows no event), but never trusted
        self.outbox.hold()
        context.registry.register(self)
        plan = plan_resume(
            cursor,
            live=state.position.snapshot(),
            topics=state.topic_facts(),
            windows=state.windows,
            bounds=context.settings.resume,
            now_ms=int(time.time() * 1000),
            keys=route_keys(self.connection.principal),
        )
        # ---- end of the boundary --------------------------------------------------------
        if isinstance(plan, Reset):
            context.metrics.resumes.labels("reset").inc()
            self.offer_control(reset_frame(plan.reason))
            self.outbox.release()
            return None
        return plan

    def _replay_session(self, plan: FromWindow | FromKafka) -> ReplaySession:
        self.replaying = True
        return ReplaySession(
            self.connection,
            start=plan.start,
            live=plan.live,
            incarnations=self._context.state.incarnations,
        )

    def _replay_at_once(self, plan: FromWindow | FromKafka) -> bool:
        """Replay a window plan now if this turn's budget covers all of it; False (nothing
        done) if it must wait for the budget or read Kafka."""
        if not isinstance(plan, FromWindow):
            return False
        if not self._context.replay_budget.take_now(sum(len(i) for _r, i in plan.segments)):
            return False
        self._context.metrics.resumes.labels("window").inc()
        try:
            replay = self._replay_session(plan)
            for scope, items in plan.segments:
                replay.feed_items(items)
                replay.end_range(scope.topic, scope.partition, scope.end)
            if not replay.pump():  # the outbox is full: the rest waits for the writer
                self.resume_task = asyncio.create_task(self._pump_then_finish(replay))
                return True
            self._replayed(replay)
        except Exception as error:  # as _replay: never leave live frames held
            self._replay_failed(error)
        return True

    async def _pump_then_finish(self, replay: ReplaySession) -> None:
        try:
            await self._pump(replay)
            self._replayed(replay)
        except asyncio.CancelledError:
            return
        except Exception as error:  # as _replay
            self._replay_failed(error)

    async def _replay(self, plan: FromWindow | FromKafka) -> None:
        """Replay a planned resume, then hand over to live. Run as ``resume_task`` by
        ``open``, and awaited by ``start``: like ``start``, it returns when cancelled."""
        context = self._context
        resumes = context.metrics.resumes
        replay = self._replay_session(plan)
        try:
            if isinstance(plan, FromWindow):
                resumes.labels("window").inc()
                budget = context.replay_budget
                for scope, items in plan.segments:
                    done = 0
                    while done < len(items):  # in slices: see replayer.ReplayBudget
                        size = await budget.take(len(items) - done)
                        replay.feed_items(items[done : done + size])
                        done += size
                        await self._pump(replay)
                    replay.end_range(scope.topic, scope.partition, scope.end)
                await self._pump(replay)
            else:
                resumes.labels("kafka").inc()
                await self._replay_from_kafka(replay, plan)
            self._replayed(replay)
        except asyncio.CancelledError:
            return  # the client left (see ``start``)
        except Exception as error:  # a failed replay must not leave live frames held
            self._replay_failed(error)

    def _replayed(self, replay: ReplaySession) -> None:
        replay.finish()
        self.replay_done = True
        if not self.outbox.count:
            self.replaying = False

    def _replay_failed(self, error: Exception) -> None:
        log.warning("resume failed", extra={"session": self.id, "error": repr(error)})
        self._context.metrics.resumes.labels("failed").inc()
        self.request_close(CloseCode.INTERNAL_ERROR, "resume failed; reconnect and resume")

    def _behind(self, cursor: Cursor) -> bool:
        """Whether the cursor names an offset this replica has not reached yet."""
        wanted = {entry.name_tag: entry.offsets for entry in cursor.topics}
        for topic, offsets in self._context.state.position.snapshot().items():
            given = wanted.get(name_tag(topic), ())
            if any(c > o for c, o in zip(given, offsets, strict=False)):
                return True
        return False

    async def _wait_for_cursor(self, cursor: Cursor) -> None:
        """A cursor from a replica that is slightly ahead: wait until this one gets there
        (still behind after ``CATCH_UP_SECONDS``: plan_resume answers reset(ahead_of_log))."""
        deadline = time.monotonic() + CATCH_UP_SECONDS
        while self._behind(cursor):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            try:
                await asyncio.wait_for(self._context.consumer.advanced.wait(), remaining)
            except TimeoutError:
                return

    async def _pump(self, replay: ReplaySession) -> None:
        while not replay.pump():
            if self.close_code is not None:
                raise asyncio.CancelledError
            self.drained.clear()
            await self.drained.wait()

    async def _replay_from_kafka(self, replay: ReplaySession, plan: FromKafka) -> None:
        context = self._context
        principal = self.connection.principal
        batches = read_ranges(
            context.settings.kafka,
            context.decoder,
            plan.ranges,
            context.replay_budget,
            context.metrics.readbacks_open,
            context.decoder.concern_filter(principal.organizations, principal.user),
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
        self._context.registry.unregister(self)
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
        self._context.registry.unregister(self)
        self._notify()

    def end(self) -> None:
        """The WebSocket handler is ending: no more replay, and a close code (1000 unless
        one was already decided) for what is left to write."""
        if self.resume_task is not None:
            self.resume_task.cancel()
        if self.close_code is None and self.pending_close is None:
            self.request_close(CloseCode.NORMAL)

    def finish(self) -> None:
        """The handler's last step: out of live delivery for good."""
        self._context.registry.unregister(self)

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
