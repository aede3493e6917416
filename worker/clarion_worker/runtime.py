"""Everything one worker process runs besides the HTTP endpoints: the consumer, the
session registry, background chores (lag, loop health, token expiry, JWKS) and drain.

``WorkerRuntime`` is the composition root: the one place that builds the pieces (hub,
consumer, write pass, session registry and context, token verifier, handshake guard)
and wires them together. The HTTP edge (``app``, ``server``) asks it for what it needs
(``open_session``, ``http_protocol``, ``ready``, ``drain``) and never reaches into them.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import random
import time
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry

from clarion_worker import allocator
from clarion_worker.config import Secrets
from clarion_worker.consumer import ChannelConsumer, ChannelState
from clarion_worker.core.auth import TokenVerifier
from clarion_worker.core.collection import CollectionPolicy
from clarion_worker.core.drain import plan_drain
from clarion_worker.core.events import RecordDecoder
from clarion_worker.core.hub import Connection, Hub
from clarion_worker.core.principal import Principal
from clarion_worker.core.protocol import CloseCode, reconnect_frame
from clarion_worker.core.settings import WorkerSettings
from clarion_worker.direct import DirectSink
from clarion_worker.flusher import Flusher
from clarion_worker.handshake import HandshakeGuard
from clarion_worker.jwks import JwksRefresher
from clarion_worker.metrics import WorkerMetrics
from clarion_worker.replayer import ReplayBudget
from clarion_worker.sessions import Session, SessionContext, SessionRegistry, Transport

if TYPE_CHECKING:
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

log = logging.getLogger("clarion.worker")

_LOOP_PROBE_SECONDS = 0.1
_LAG_SECONDS = 5.0


class WorkerRuntime:
    def __init__(
        self,
        settings: WorkerSettings,
        secrets: Secrets,
        registry: CollectorRegistry,
        *,
        version: str = "0.1.0",
    ) -> None:
        self.settings = settings
        self.registry = registry
        self.metrics = WorkerMetrics.create(registry)
        self.metrics.info.info(
            {"channel": settings.channel, "replica": settings.replica_id, "version": version}
        )
        self.hub = Hub()
        self.flusher = Flusher(settings.limits, self.metrics)
        self.consumer = ChannelConsumer(
            settings, self.hub, self.metrics, self._overflowed, self.flusher.written_now
        )
        self.decoder = RecordDecoder.for_settings(settings)
        #: Replay work per event-loop turn, shared by every resume of this process.
        self.replay_budget = ReplayBudget()
        self.sessions = SessionRegistry(self.hub, self.metrics)
        self._session_context = SessionContext(
            settings=settings,
            metrics=self.metrics,
            registry=self.sessions,
            consumer=self.consumer,
            decoder=self.decoder,
            replay_budget=self.replay_budget,
        )
        self.verifier = TokenVerifier(
            settings.auth,
            hmac_secret=secrets.hmac_secret,
            jwks=secrets.jwks,
            max_token_chars=max(settings.limits.max_header_bytes, settings.limits.max_url_bytes),
        )
        self.jwks = (
            JwksRefresher(settings.auth.jwks_url, self.verifier) if settings.auth.jwks_url else None
        )
        self.draining = False
        #: WebSocket and SSE handlers still running (the drain waits for them).
        self.open_handlers = 0
        self.idle = asyncio.Event()
        self.idle.set()
        self.drained = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._consume_task: asyncio.Task[None] | None = None
        #: Closed connections leave cycles only a full collection frees (core/collection.py).
        self.collection = CollectionPolicy()
        self._removed_at_collection = 0
        self._last_collection = time.monotonic()
        self._opened_since_freeze = 0

    # ---- state ---------------------------------------------------------------------

    @property
    def state(self) -> ChannelState:
        state = self.consumer.state
        assert state is not None, "the consumer has not started"
        return state

    @property
    def ready(self) -> bool:
        return self.consumer.ready.is_set() and not self.draining

    def at_capacity(self) -> bool:
        return len(self.sessions) >= self.settings.limits.max_connections

    def open_session(
        self,
        principal: Principal,
        transport: Transport,
        batch: bool,
        sink: DirectSink | None = None,
    ) -> Session:
        """A new client session; with ``sink`` (direct writes) the write pass writes it."""
        session = Session(self._session_context, principal, transport, batch)
        if sink is not None:
            session.attach(sink, self.flusher)
        self._opened_since_freeze += 1
        if self.collection.freeze_due(self._opened_since_freeze):
            # Long-lived objects out of the young generation's walks (core/collection.py).
            gc.freeze()
            self._opened_since_freeze = 0
            self.metrics.gc_freezes.inc()
        return session

    def http_protocol(self) -> type[HttpToolsProtocol]:
        """uvicorn's HTTP protocol class with request heads bounded (``handshake``)."""
        limits = self.settings.limits
        metrics = self.metrics
        guard = HandshakeGuard(
            max_pending=limits.max_pending_handshakes,
            timeout_seconds=self.settings.server.handshake_timeout_seconds,
            max_url_bytes=limits.max_url_bytes,
            max_header_bytes=limits.max_header_bytes,
            on_pending=metrics.pending_handshakes.set,
            on_refused=lambda reason: metrics.handshake_refusals.labels(reason).inc(),
        )
        return guard.protocol_class()

    def _overflowed(self, connection: Connection) -> None:
        session = self.sessions.get(connection.id)
        if session is not None:
            self.metrics.drops.labels("slow_consumer").inc(len(connection.outbox) or 1)
            session.request_close(CloseCode.SLOW_CONSUMER, "outbound queue overflowed")

    def handler_opened(self) -> None:
        self.open_handlers += 1
        self.idle.clear()

    def handler_closed(self) -> None:
        self.open_handlers -= 1
        if self.open_handlers == 0:
            self.idle.set()

    # ---- lifecycle -----------------------------------------------------------------

    async def launch(self) -> None:
        """Start the background work; waiting for Kafka is part of it, not of start-up.

        The server (which calls this from its lifespan) listens at once: liveness
        answers, readiness fails until the consumer is assigned, and a SIGTERM while
        Kafka is unreachable stops the process at once (``stop`` cancels the wait)
        instead of going unheard until Kafka answers.
        """
        if self.jwks is not None:
            await self.jwks.fetch()
            self._spawn(self.jwks.run())
        self._consume_task = self._spawn(self._consume(), fatal=True)
        self._spawn(self._loop_probe())
        self._spawn(self._chores())

    async def start(self) -> None:
        """``launch``, then wait until the consumer is assigned (embedding, tests)."""
        await self.launch()
        consume = self._consume_task
        assert consume is not None
        ready = asyncio.ensure_future(self.consumer.ready.wait())
        await asyncio.wait({ready, consume}, return_when=asyncio.FIRST_COMPLETED)
        ready.cancel()
        if consume.done():
            consume.result()  # the consumer's error, if it stopped before being ready

    async def _consume(self) -> None:
        await self.consumer.start()
        await self.consumer.run()

    def _spawn(self, coro: Coroutine[Any, Any, None], *, fatal: bool = False) -> asyncio.Task[None]:
        task = asyncio.create_task(coro)
        if fatal:
            task.add_done_callback(self._fatal)
        self._tasks.append(task)
        return task

    def _fatal(self, task: asyncio.Task[None]) -> None:
        if task.cancelled():
            return
        error = task.exception()
        if error is not None:
            # Without its consumer a worker would serve stale nothing: fail liveness.
            log.error("consumer stopped", extra={"error": repr(error)})
            self.failed = repr(error)

    failed: str | None = None

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await self.consumer.stop()

    async def _loop_probe(self) -> None:
        """Measures how late the event loop wakes us, to pause Kafka when it is behind."""
        while True:
            started = time.monotonic()
            await asyncio.sleep(_LOOP_PROBE_SECONDS)
            lag = max(0.0, time.monotonic() - started - _LOOP_PROBE_SECONDS)
            self.metrics.loop_lag.observe(lag)
            self.consumer.apply_loop_lag(lag)

    async def _chores(self) -> None:
        """Consumer lag and token expiry: one sweep for all sessions, not a timer each."""
        leeway = self.settings.auth.leeway_seconds
        while True:
            await asyncio.sleep(_LAG_SECONDS)
            await self.consumer.update_lag()
            self.collect_if_due()
            now = time.time()
            for session in self.sessions:
                expires = session.connection.principal.expires_at
                if expires is not None and expires + leeway < now:
                    session.request_close(CloseCode.TOKEN_EXPIRED, "token expired")

    def collect_if_due(self) -> bool:
        """Run a full garbage collection when the policy says closed connections wait."""
        started = time.monotonic()
        closes = self.sessions.removed - self._removed_at_collection
        if not self.collection.due(closes, started - self._last_collection):
            return False
        gc.unfreeze()  # what ``open_session`` froze is walked too: closed sessions are in it
        gc.collect()
        allocator.trim()  # what the collection freed goes back to the system
        finished = time.monotonic()
        self.metrics.gc_collection.observe(finished - started)
        self._removed_at_collection += closes
        self._last_collection = finished
        return True

    # ---- drain ---------------------------------------------------------------------

    async def drain(self) -> None:
        """Fail readiness, then advise and close clients in batches over the window."""
        if self.draining:
            return
        self.draining = True
        self.metrics.draining.set(1)
        window = self.settings.drain.window_seconds
        plan = plan_drain(self.sessions.ids(), window_seconds=window, rng=random.Random())
        log.info("draining", extra={"sessions": len(self.sessions), "window_s": window})
        started = time.monotonic()
        for batch in plan:
            delay = batch.at_seconds - (time.monotonic() - started)
            if delay > 0:
                await asyncio.sleep(delay)
            for notice in batch.notices:
                session = self.sessions.get(notice.connection_id)
                if session is not None:
                    session.offer_control(reconnect_frame(after_ms=notice.after_ms))
                    session.close_after_flush(CloseCode.DRAIN, "draining")
        # Sessions that connected meanwhile (readiness already fails) get the same.
        for session in self.sessions:
            session.offer_control(reconnect_frame(after_ms=random.randint(0, 1000)))
            session.close_after_flush(CloseCode.DRAIN, "draining")
        self.drained.set()
