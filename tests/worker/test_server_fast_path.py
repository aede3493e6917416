"""The worker's ASGI entry (server.websocket_fast_path): WebSocket upgrades reach their
route without Starlette's middleware stack and router, whose coroutine frames would live
as long as each idle connection (issue 17, W3); everything else takes the whole app."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket

from clarion_worker.server import build_server, websocket_fast_path


def _app(seen: dict[str, Any]) -> Starlette:
    async def endpoint(websocket: WebSocket) -> None:
        frames = []
        frame = sys._getframe().f_back
        while frame is not None:
            frames.append(frame.f_code.co_filename)
            frame = frame.f_back
        seen["frames"] = frames
        seen["path_params"] = websocket.path_params
        seen["app"] = websocket.scope.get("app")
        await websocket.accept()
        message = await websocket.receive()
        seen["received"] = message["type"]

    async def hello(_request: Request) -> PlainTextResponse:
        return PlainTextResponse("hi")

    return Starlette(
        routes=[WebSocketRoute("/ws/{kind}", endpoint), Route("/hello", hello)],
    )


def _scope(kind: str, path: str) -> dict[str, Any]:
    return {
        "type": kind,
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "scheme": "ws" if kind == "websocket" else "http",
        "method": "GET",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [],
        "server": ("127.0.0.1", 80),
        "client": ("127.0.0.1", 1234),
        "subprotocols": [],
        "state": {},
        "extensions": {},
    }


async def _drive(app: Any, scope: dict[str, Any], inbound: list[dict[str, Any]]) -> list[Any]:
    sent: list[Any] = []

    async def receive() -> dict[str, Any]:
        return inbound.pop(0)

    async def send(message: Any) -> None:
        sent.append(message)

    await app(scope, receive, send)
    return sent


async def test_a_websocket_reaches_its_route_past_the_middleware_stack() -> None:
    seen: dict[str, Any] = {}
    app = _app(seen)
    sent = await _drive(
        websocket_fast_path(app),
        _scope("websocket", "/ws/dashboard"),
        [{"type": "websocket.connect"}, {"type": "websocket.disconnect", "code": 1000}],
    )
    assert [m["type"] for m in sent] == ["websocket.accept"]
    assert seen["received"] == "websocket.disconnect"
    assert seen["path_params"] == {"kind": "dashboard"}
    assert seen["app"] is app
    # Not one Starlette layer between the entry and the endpoint: no middleware, router,
    # route or session wrapper frame lives as long as the connection.
    assert not [f for f in seen["frames"] if "starlette" in f]


async def test_a_route_with_middleware_keeps_its_own_wrapper() -> None:
    """The endpoint is called directly only when Starlette's plain wrapper is the route's
    app; a route-level middleware (or a renamed wrapper) keeps the route's ``handle``."""
    seen: dict[str, Any] = {}
    called: list[str] = []

    class Marker:
        def __init__(self, app: Any) -> None:
            self.app = app

        async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
            called.append(scope["type"])
            await self.app(scope, receive, send)

    app = _app(seen)
    route = app.routes[0]
    assert isinstance(route, WebSocketRoute)
    app.routes[0] = WebSocketRoute(route.path, route.endpoint, middleware=[Middleware(Marker)])
    await _drive(
        websocket_fast_path(app),
        _scope("websocket", "/ws/dashboard"),
        [{"type": "websocket.connect"}, {"type": "websocket.disconnect", "code": 1000}],
    )
    assert called == ["websocket"]
    assert seen["received"] == "websocket.disconnect"
    assert [f for f in seen["frames"] if "starlette/routing.py" in f]


async def test_the_whole_app_still_serves_websockets_without_the_fast_path() -> None:
    seen: dict[str, Any] = {}
    await _drive(
        _app(seen),
        _scope("websocket", "/ws/dashboard"),
        [{"type": "websocket.connect"}, {"type": "websocket.disconnect", "code": 1000}],
    )
    # The measure above can fail: through the app, the middleware frames are there.
    assert [f for f in seen["frames"] if "starlette/middleware" in f]


async def test_http_and_unknown_websocket_paths_take_the_whole_app() -> None:
    entry = websocket_fast_path(_app({}))
    sent = await _drive(entry, _scope("http", "/hello"), [{"type": "http.request"}])
    assert sent[0]["type"] == "http.response.start"
    assert sent[0]["status"] == 200
    sent = await _drive(entry, _scope("websocket", "/elsewhere"), [{"type": "websocket.connect"}])
    assert [m["type"] for m in sent] == ["websocket.close"]


def test_the_worker_serves_its_app_through_the_fast_path_alone(tmp_path: Path) -> None:
    """uvicorn wraps nothing around it: no X-Forwarded-* middleware (the worker never
    reads a client address), so no extra layer per connection."""
    config = tmp_path / "worker.json"
    config.write_text(
        json.dumps(
            {
                "apiVersion": "clarion.dev/worker-config/v1",
                "channel": "tests",
                "kafka": {"bootstrapServers": "127.0.0.1:1"},
                "topics": [{"name": "t.approvals", "audience": "organization"}],
                "auth": {"mode": "none"},
            }
        )
    )
    args = argparse.Namespace(config=str(config), host="127.0.0.1", port=0, log_level="warning")
    built = build_server(args, {})
    built.config.load()
    entry = built.config.loaded_app
    assert getattr(entry, "__qualname__", "") == "websocket_fast_path.<locals>.entry"
