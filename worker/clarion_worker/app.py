"""The worker's HTTP edge: WebSocket and SSE endpoints, probes and metrics.

Handlers authenticate before upgrading, then ask the runtime for a ``Session`` and drive
it through its methods; they build nothing of the runtime's and set none of its fields.
Fan-out never awaits a client: it only appends to outboxes. What drains them depends on
the server: under ``clarion-worker`` (uvicorn with the ``clarion.direct`` extension, see
``direct``) the write pass (``flusher``) writes every client's queue in one socket write
and the handler only reads; elsewhere a writer task per connection sends frame by frame
through ASGI. The reader answers pings, narrows subscriptions and notices the client
leaving.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.requests import HTTPConnection, Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from clarion_contract import HEALTH_PATH, METRICS_PATH, READY_PATH
from clarion_worker.core.auth import (
    AuthError,
    check_origin,
    read_handshake,
    unverified_principal,
)
from clarion_worker.core.envelope import SSE_HEARTBEAT, batch_frame
from clarion_worker.core.principal import Principal
from clarion_worker.core.protocol import (
    PONG_FRAME,
    ClientFrameError,
    CloseCode,
    Ping,
    Resume,
    Subscribe,
    disconnect_label,
    error_frame,
    parse_client_frame,
)
from clarion_worker.direct import DirectSink, sink_of
from clarion_worker.runtime import WorkerRuntime
from clarion_worker.sessions import Session

log = logging.getLogger("clarion.worker.app")
_SSE_CHUNK_BYTES = 64 * 1024
#: How long the writer may take to flush what must go out before closing.
_FLUSH_SECONDS = 5.0
#: How long a closed connection waits for the client's close reply.
_CLOSE_HANDSHAKE_SECONDS = 2.0


def create_app(runtime: WorkerRuntime) -> Starlette:
    settings = runtime.settings

    @asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        await runtime.launch()  # Kafka is waited for in the background (see runtime)
        try:
            yield
        finally:
            await runtime.stop()

    routes: list[Any] = [
        WebSocketRoute(settings.server.websocket_path, _websocket_endpoint(runtime)),
        Route(HEALTH_PATH, _healthz(runtime)),
        Route(READY_PATH, _readyz(runtime)),
        Route(METRICS_PATH, _metrics(runtime)),
    ]
    if settings.server.sse_enabled:
        routes.append(Route(settings.server.sse_path, _sse_endpoint(runtime)))
    return Starlette(routes=routes, lifespan=lifespan)


# ---- authentication -------------------------------------------------------------------


async def _authenticate(
    runtime: WorkerRuntime, conn: HTTPConnection, subprotocols: list[str]
) -> tuple[Principal, bool, str | None]:
    """The principal, batch opt-in and subprotocol to echo; raises AuthError."""
    auth = runtime.settings.auth
    # Straight from the scope: Starlette's ``Headers`` would build a list and a mapping
    # per handshake only to be copied into this dict (W4, docs/benchmarks.md).
    headers = {
        name.decode("latin-1").lower(): value.decode("latin-1")
        for name, value in conn.scope["headers"]
    }
    query = dict(conn.query_params)
    check_origin(headers.get("origin"), auth.allowed_origins)
    handshake = read_handshake(headers, query, subprotocols)
    if auth.mode == "none":
        return unverified_principal(query), handshake.batch, handshake.subprotocol
    try:
        principal = runtime.verifier.verify(handshake.token, now=time.time())
    except AuthError as error:
        if (
            error.reason == "unknown_key"
            and runtime.jwks
            and await runtime.jwks.refresh_if_allowed()
        ):
            principal = runtime.verifier.verify(handshake.token, now=time.time())
        else:
            raise
    return principal, handshake.batch, handshake.subprotocol


def _last_id(conn: HTTPConnection) -> str | None:
    return conn.query_params.get("lastId") or conn.headers.get("last-event-id") or None


def _denial(status: int, reason: str, message: str) -> JSONResponse:
    return JSONResponse({"error": reason, "message": message}, status_code=status)


# ---- WebSocket ------------------------------------------------------------------------


def _websocket_endpoint(runtime: WorkerRuntime) -> Any:
    async def endpoint(websocket: WebSocket) -> None:
        subprotocols = list(websocket.scope.get("subprotocols") or [])
        try:
            principal, batch, subprotocol = await _authenticate(runtime, websocket, subprotocols)
        except AuthError as error:
            runtime.metrics.auth_failures.labels(error.reason).inc()
            await _refuse_in_band(runtime, websocket, subprotocols, error.close_code, str(error))
            return
        if not runtime.ready:
            await _refuse_in_band(
                runtime,
                websocket,
                subprotocols,
                CloseCode.OVERLOADED,
                "unavailable: this replica is not ready; retry with backoff",
            )
            return
        sink = sink_of(websocket.scope) if runtime.settings.server.direct_writes else None
        await websocket.accept(subprotocol=subprotocol)
        runtime.handler_opened()
        try:
            if sink is not None:
                await _serve_direct(runtime, websocket, sink, principal, batch)
            else:
                await _serve_websocket(runtime, websocket, principal, batch)
        finally:
            runtime.handler_closed()

    return endpoint


async def _refuse_in_band(
    runtime: WorkerRuntime,
    websocket: WebSocket,
    subprotocols: list[str],
    code: CloseCode,
    message: str,
) -> None:
    """Accept, send ``error``, close with ``code``: what a browser's WebSocket can see.

    An HTTP refusal before the upgrade reaches the browser's and Dart's WebSocket APIs
    only as an error and close code 1006, so a client could not tell "refresh your token"
    (4004) from "fix your setup" (4001, 4003) or "retry later" (4013). Nothing is
    registered and no event is sent; SSE and plain HTTP keep their statuses.
    """
    echo = read_handshake({}, {}, subprotocols).subprotocol
    try:
        await websocket.accept(subprotocol=echo)
        await websocket.send_text(error_frame(code, message))
    except (WebSocketDisconnect, RuntimeError, OSError):
        return
    await _close(websocket, code, message.partition(":")[0])
    runtime.metrics.disconnects.labels("websocket", str(int(code))).inc()


def _refuse_over_capacity(runtime: WorkerRuntime) -> bool:
    if not runtime.at_capacity():
        return False
    runtime.metrics.disconnects.labels("websocket", str(int(CloseCode.OVERLOADED))).inc()
    return True


async def _serve_direct(
    runtime: WorkerRuntime,
    websocket: WebSocket,
    sink: DirectSink,
    principal: Principal,
    batch: bool,
) -> None:
    """The handler only reads; the write pass writes and closes (see ``flusher``)."""
    session = runtime.open_session(principal, "websocket", batch, sink)
    if _refuse_over_capacity(runtime):
        session.request_close(CloseCode.OVERLOADED, "connection limit reached")
        session.flush_now()
        return
    session.open(_last_id(websocket))
    try:
        await _ws_reader(websocket, session, runtime.settings.limits.max_client_frame_bytes)
    except (WebSocketDisconnect, RuntimeError, OSError):
        session.request_close(CloseCode.NORMAL, "client left")
    finally:
        session.end()
        # What must still go out (an error frame, the close) goes now: once the handler
        # returns, uvicorn closes a transport that has no close handshake under way.
        session.flush_now()
        _finish(runtime, session)


async def _serve_websocket(
    runtime: WorkerRuntime, websocket: WebSocket, principal: Principal, batch: bool
) -> None:
    session = runtime.open_session(principal, "websocket", batch)
    if _refuse_over_capacity(runtime):
        await _close(websocket, CloseCode.OVERLOADED, "connection limit reached")
        return
    session.open(_last_id(websocket))
    writer = asyncio.create_task(_ws_writer(runtime, websocket, session))
    reader = asyncio.create_task(
        _ws_reader(websocket, session, runtime.settings.limits.max_client_frame_bytes)
    )
    try:
        await asyncio.wait({reader, writer}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        session.end()
        # The writer sends what must go out (error, reconnect advice) and closes; the
        # reader then sees the client's close reply. A client that never answers (it
        # stopped reading) must not keep the handler, and its socket, alive.
        for task, grace in ((writer, _FLUSH_SECONDS), (reader, _CLOSE_HANDSHAKE_SECONDS)):
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await asyncio.wait_for(task, timeout=grace)
            task.cancel()
        _finish(runtime, session)


def _finish(runtime: WorkerRuntime, session: Session) -> None:
    """The WebSocket handler's last step, after its writes: unregister and count the end."""
    session.finish()
    label = disconnect_label(session.ended_with())
    runtime.metrics.disconnects.labels("websocket", label).inc()


async def _ws_reader(websocket: WebSocket, session: Session, max_bytes: int) -> None:
    while session.close_code is None:
        message = await websocket.receive()
        if message["type"] == "websocket.disconnect":
            session.peer_left(int(message.get("code") or CloseCode.NORMAL))
            return
        payload = message.get("text")
        if payload is None:
            payload = message.get("bytes") or b""
        try:
            frame = parse_client_frame(payload, max_bytes=max_bytes)
        except ClientFrameError as error:
            session.request_close(error.code, error.message)
            return
        if isinstance(frame, Ping):
            session.offer_control(PONG_FRAME)
        elif isinstance(frame, Subscribe):
            session.subscribe(frame.event_types)
        elif isinstance(frame, Resume):
            session.resume(frame.last_id)


async def _ws_writer(runtime: WorkerRuntime, websocket: WebSocket, session: Session) -> None:
    outbox = session.outbox
    batch = session.connection.batch
    deliveries = runtime.metrics.deliveries.labels("websocket")
    frames = {
        kind: runtime.metrics.frames_sent.labels("websocket", kind) for kind in ("one", "batch")
    }
    live_latency = runtime.metrics.delivery_latency.labels("websocket")
    replay_latency = runtime.metrics.replay_latency.labels("websocket")
    try:
        while True:
            run = outbox.take_run(batch)
            if run is None:
                code = session.all_written()
                if code is not None:
                    await _close(websocket, code, session.close_reason)
                    return
                await session.wait_for_work()
                continue
            queued = outbox.count
            first = run[0]
            if len(run) == 1:
                await websocket.send_text(first.text)
            else:
                await websocket.send_text(batch_frame([item.text for item in run]))
            events = len(run) if first.event else 0
            replayed = session.wrote(1, events, queued)
            frames["one" if len(run) == 1 else "batch"].inc()
            if events:
                deliveries.inc(events)
                if first.kafka_ms is not None:  # the run's first (oldest) event
                    # Frames of a resume (as old as the cursor) have their own series.
                    latency = replay_latency if replayed else live_latency
                    latency.observe(max(0.0, time.time() - first.kafka_ms / 1000))
    except (WebSocketDisconnect, RuntimeError, OSError):
        session.request_close(CloseCode.NORMAL, "client left")


async def _close(websocket: WebSocket, code: CloseCode, reason: str) -> None:
    with contextlib.suppress(Exception):
        await websocket.close(code=int(code), reason=reason[:120])


# ---- SSE ------------------------------------------------------------------------------


def _sse_endpoint(runtime: WorkerRuntime) -> Any:
    heartbeat = runtime.settings.heartbeat.interval_seconds

    async def endpoint(request: Request) -> Response:
        try:
            principal, _batch, _sub = await _authenticate(runtime, request, [])
        except AuthError as error:
            runtime.metrics.auth_failures.labels(error.reason).inc()
            return _denial(error.http_status, error.reason, str(error))
        if not runtime.ready:
            return _denial(503, "unavailable", "this replica is not ready; retry with backoff")
        if runtime.at_capacity():
            runtime.metrics.disconnects.labels("sse", str(int(CloseCode.OVERLOADED))).inc()
            return _denial(503, "overloaded", "connection limit reached")
        session = runtime.open_session(principal, "sse", batch=False)
        last_id = _last_id(request)
        if last_id is None:
            session.join_live()
        else:
            session.welcome()

        async def stream() -> AsyncIterator[str]:
            runtime.handler_opened()
            starter = asyncio.create_task(session.start(last_id)) if last_id else None
            deliveries = runtime.metrics.deliveries.labels("sse")
            outbox = session.outbox
            try:
                while True:
                    run = outbox.take_chunk_run(_SSE_CHUNK_BYTES)
                    if run is None:
                        if session.all_written() is not None:
                            return
                        if not await session.wait_for_work(heartbeat):
                            yield SSE_HEARTBEAT
                        continue
                    queued = outbox.count
                    yield run[0].text if len(run) == 1 else "".join(item.text for item in run)
                    events = sum(1 for item in run if item.event)
                    session.wrote(len(run), events, queued)
                    deliveries.inc(events)
            finally:
                if starter is not None:
                    starter.cancel()
                if session.close_code is None:
                    session.request_close(CloseCode.NORMAL, "client left")
                session.finish()
                code = session.close_code or session.pending_close or CloseCode.NORMAL
                runtime.metrics.disconnects.labels("sse", str(int(code))).inc()
                runtime.handler_closed()

        return StreamingResponse(
            stream(),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    return endpoint


# ---- probes and metrics ---------------------------------------------------------------


def _healthz(runtime: WorkerRuntime) -> Any:
    async def endpoint(_request: Request) -> Response:
        if runtime.failed:
            return PlainTextResponse(f"failed: {runtime.failed}\n", status_code=500)
        return PlainTextResponse("ok\n")

    return endpoint


def _readyz(runtime: WorkerRuntime) -> Any:
    async def endpoint(_request: Request) -> Response:
        if runtime.ready:
            return PlainTextResponse("ok\n")
        reason = "draining" if runtime.draining else "consumer not assigned yet"
        return PlainTextResponse(f"not ready: {reason}\n", status_code=503)

    return endpoint


def _metrics(runtime: WorkerRuntime) -> Any:
    async def endpoint(_request: Request) -> Response:
        return Response(generate_latest(runtime.registry), media_type=CONTENT_TYPE_LATEST)

    return endpoint
