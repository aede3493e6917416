"""``clarion-worker``: the process entry point, uvicorn underneath, with a real drain.

uvicorn's own shutdown closes every WebSocket at once with 1012, so every client of a
replica reconnects in the same instant. On SIGTERM this server first drains: readiness
fails, clients get reconnect advice with jitter and are closed in batches over
``drain.windowSeconds``; only then does uvicorn shut down. A second SIGTERM or SIGINT
stops at once.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import importlib.util
import inspect
import logging
import os
import signal
import socket
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from types import FrameType

import uvicorn
from prometheus_client import CollectorRegistry, disable_created_metrics
from starlette.applications import Starlette
from starlette.routing import Match, WebSocketRoute
from starlette.types import ASGIApp, Receive, Scope, Send
from starlette.websockets import WebSocket
from websockets.version import version as websockets_version

from clarion_contract import WORKER_PORT
from clarion_worker import allocator, config, logs
from clarion_worker.app import create_app
from clarion_worker.core.collection import CollectionPolicy
from clarion_worker.core.settings import SettingsError
from clarion_worker.direct import DirectWebSocketProtocol, incompatibilities
from clarion_worker.runtime import WorkerRuntime

log = logging.getLogger("clarion.worker")
_BACKLOG = 16384
_GC_THRESHOLD = 50_000
#: Freeze the collector's generations after this many new sessions (core/collection.py):
#: ~17,000 objects, a third of the young generation's threshold.
_FREEZE_OPENS = 200
#: What Starlette names the wrapper ``WebSocketRoute`` puts around a function endpoint.
_STARLETTE_SESSION_WRAPPER = "websocket_session.<locals>.app"
#: After the drain window, how long the last writers get to flush and close.
_FLUSH_SECONDS = 5.0


def websocket_fast_path(app: Starlette) -> ASGIApp:
    """The ASGI entry: a WebSocket upgrade goes straight to its route, past Starlette's
    middleware stack and router; everything else (HTTP, lifespan, unknown paths) takes
    the whole app.

    An ASGI call lives as long as its connection, so every layer it passes through keeps
    a coroutine frame (and closures) per idle WebSocket: ~2 KiB of the W3 figure (issue
    17, bench/memory.py). For WebSockets those layers do nothing here: the server-error
    middleware passes non-HTTP scopes through, the app has no exception handlers of its
    own, and the route sets the same ``app``, ``endpoint`` and ``path_params`` as the
    router does.

    A function endpoint is called with its ``WebSocket`` directly, as the route's own
    ``websocket_session`` wrapper would after three more coroutine layers and two
    closures per connection: that wrapper only looks for exception handlers, which the
    app does not have (and which only the middleware stack skipped here would install).
    """
    routes = [
        (route, _direct_endpoint(route))
        for route in app.routes
        if isinstance(route, WebSocketRoute)
    ]

    async def entry(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            for route, endpoint in routes:
                match, child = route.matches(scope)
                if match is Match.FULL:
                    scope.update(child)
                    scope["app"] = app
                    if endpoint is not None:
                        await endpoint(WebSocket(scope, receive=receive, send=send))
                    else:
                        await route.handle(scope, receive, send)
                    return
        await app(scope, receive, send)

    return entry


def _direct_endpoint(route: WebSocketRoute) -> Callable[[WebSocket], Awaitable[None]] | None:
    """The route's function endpoint when its ``app`` is Starlette's plain wrapper of it
    (no route middleware); None otherwise, and the route's own ``handle`` runs."""
    wrapper = getattr(route.app, "__qualname__", None)
    if inspect.isfunction(route.endpoint) and wrapper == _STARLETTE_SESSION_WRAPPER:
        return route.endpoint
    return None


class DrainingServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, runtime: WorkerRuntime) -> None:
        super().__init__(config)
        self.runtime = runtime
        self._drain_task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    async def serve(self, sockets: list[object] | None = None) -> None:  # type: ignore[override]
        self._loop = asyncio.get_running_loop()
        await super().serve(sockets)  # type: ignore[arg-type]

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if sig == signal.SIGTERM and self._drain_task is None and self._loop is not None:
            self._loop.call_soon_threadsafe(self._start_drain)
            return
        super().handle_exit(sig, frame)

    def _start_drain(self) -> None:
        self._drain_task = asyncio.create_task(self._drain_then_exit())

    async def _drain_then_exit(self) -> None:
        started = time.monotonic()
        await self.runtime.drain()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.runtime.idle.wait(), _FLUSH_SECONDS)
        log.info(
            "drained",
            extra={
                "seconds": round(time.monotonic() - started, 2),
                "left": self.runtime.open_handlers,
            },
        )
        self.should_exit = True


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="clarion-worker", description="Clarion broadcast worker")
    parser.add_argument("--config", help="settings file (JSON or YAML); default $CLARION_CONFIG")
    parser.add_argument("--host", default="0.0.0.0")
    parser.add_argument("--port", type=int, default=WORKER_PORT)
    parser.add_argument("--log-level", default=None, help="default $CLARION_LOG_LEVEL or info")
    return parser.parse_args(argv)


def websocket_protocol() -> type[DirectWebSocketProtocol] | str:
    """The direct-write protocol if the installed uvicorn still has all it uses, else
    uvicorn's own: every frame then takes the ASGI path, slower but correct."""
    missing = incompatibilities()
    if not missing:
        return DirectWebSocketProtocol
    log.warning(
        "direct writes off: uvicorn's WebSocket protocol lacks what clarion.direct uses; "
        "every frame goes through ASGI send",
        extra={
            "uvicorn": uvicorn.__version__,
            "websockets": websockets_version,
            "missing": missing,
        },
    )
    return "websockets-sansio"


def build_server(args: argparse.Namespace, environ: dict[str, str]) -> DrainingServer:
    path = args.config or environ.get("CLARION_CONFIG")
    if not path:
        raise SettingsError(["--config: required (or set CLARION_CONFIG)"])
    settings = config.load(Path(path), environ)
    runtime = WorkerRuntime(settings, config.load_secrets(settings), CollectorRegistry())
    has_uvloop = importlib.util.find_spec("uvloop") is not None
    uv_config = uvicorn.Config(
        websocket_fast_path(create_app(runtime)),
        host=args.host,
        port=args.port,
        loop="uvloop" if has_uvloop else "asyncio",
        # httptools, with request heads bounded in size, time and number (handshake).
        http=runtime.http_protocol(),
        # uvicorn's websockets-sansio protocol plus the direct-write extension.
        ws=websocket_protocol(),
        # Deflate costs ~50 KiB and CPU per connection; events are small JSON.
        ws_per_message_deflate=False,
        ws_max_size=settings.limits.max_client_frame_bytes,
        # Protocol pings find dead peers that app-level heartbeats cannot see.
        ws_ping_interval=settings.heartbeat.interval_seconds,
        ws_ping_timeout=settings.heartbeat.timeout_seconds,
        log_config=None,
        access_log=False,
        # Nothing here reads the client's address, so uvicorn's X-Forwarded-* middleware
        # would only add a layer (and a coroutine frame per idle WebSocket: W3).
        proxy_headers=False,
        lifespan="on",
        # A replica's clients all come back at once after a failover or a drain: a
        # short accept queue would reset most of them (the kernel caps it at somaxconn).
        backlog=_BACKLOG,
        timeout_graceful_shutdown=int(_FLUSH_SECONDS),
    )
    return DrainingServer(uv_config, runtime)


def listening_socket(host: str, port: int, *, stall_seconds: float) -> socket.socket:
    """The server's listening socket, with a kernel deadline for stalled peers.

    A client that stops reading fills its receive window; uvicorn's send then waits for
    the socket to drain, and its ping timeout only *closes* the transport, which also
    waits for that flush: the connection would hang as long as the peer's kernel answers
    zero-window probes. TCP_USER_TIMEOUT (inherited by accepted sockets) makes the
    kernel abort a connection whose data stays unsent or unacknowledged this long.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, int(stall_seconds * 1000))
    sock.bind((host, port))
    sock.listen(_BACKLOG)
    sock.set_inheritable(True)
    return sock


def _exit_at_once(signum: int, _frame: FrameType | None) -> None:
    """SIGTERM or SIGINT before uvicorn serves (settings, secrets): nothing to drain yet."""
    raise SystemExit(0)


def main(argv: list[str] | None = None) -> int:
    # From the first instant: uvicorn installs its own handlers (our drain) while it
    # serves and restores these after; Kafka is waited for while serving (see runtime).
    signal.signal(signal.SIGTERM, _exit_at_once)
    signal.signal(signal.SIGINT, _exit_at_once)
    args = _parse(argv)
    environ = dict(os.environ)  # noqa: TID251 - the process edge
    allocator.tune(environ)  # before the allocations it governs
    logs.configure(args.log_level or environ.get("CLARION_LOG_LEVEL", "info"))
    # The *_created series double the scrape for no use to a dashboard.
    disable_created_metrics()
    try:
        server = build_server(args, environ)
    except SettingsError as error:
        print(f"clarion-worker: invalid settings:\n{error}", file=sys.stderr)
        return 2
    # Thousands of long-lived sessions make every young-generation collection walk a
    # big heap: py-spy put 30 % of a loaded worker's CPU in the collector
    # (docs/benchmarks.md). Collect far less often; cycles are rare on the hot path.
    gc.set_threshold(_GC_THRESHOLD, 20, 20)
    # And new sessions leave the young generation in batches (``gc.freeze``): a process
    # policy like the thresholds, so a test process driving a runtime keeps its own.
    server.runtime.collection = CollectionPolicy(freeze_opens=_FREEZE_OPENS)
    heartbeat = server.runtime.settings.heartbeat
    stall = heartbeat.interval_seconds + heartbeat.timeout_seconds
    server.run(sockets=[listening_socket(args.host, args.port, stall_seconds=stall)])
    return 0 if server.runtime.failed is None else 1


if __name__ == "__main__":
    sys.exit(main())
