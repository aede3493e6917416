"""The upgrade head handed from httptools to the direct protocol without a second parse.

``GuardedHttpProtocol.handle_websocket_upgrade`` gives ``DirectWebSocketProtocol`` the
head httptools parsed (``receive_head``); websockets' ``Request.parse`` runs only for a
head it would refuse, so the refusal stays websockets' own.
"""

from __future__ import annotations

import asyncio
import gc
import json
import socket
import weakref
from typing import Any

import pytest
import uvicorn
from hypothesis import given
from hypothesis import strategies as st
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from uvicorn.server import ServerState
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosedOK
from websockets.http11 import MAX_NUM_HEADERS, Request
from websockets.streams import StreamReader

from clarion_worker import direct
from clarion_worker.handshake import HandshakeGuard


def _parsed_by_websockets(head: bytes) -> Request | None:
    """What websockets' own parser makes of ``head``; None where it refuses it."""
    reader = StreamReader()
    reader.feed_data(head)
    parser = Request.parse(reader.read_line)
    try:
        next(parser)
    except StopIteration as done:
        request: Request = done.value
        return request
    except Exception:  # any refusal: too long, too many, not HTTP
        return None
    raise AssertionError("the whole head was fed, yet websockets wants more")


_NAMES = st.sampled_from([b"host", b"upgrade", b"x-pad", b"content-length", b"transfer-encoding"])
_VALUES = st.binary(max_size=12)


@given(
    st.lists(st.tuples(_NAMES | st.binary(min_size=1, max_size=6), _VALUES), max_size=8),
    st.binary(min_size=1, max_size=12),
)
def test_a_head_is_taken_as_websockets_would_parse_it_or_left_to_it(
    headers: list[tuple[bytes, bytes]], target: bytes
) -> None:
    if any(b"\r" in n + v or b"\n" in n + v or b":" in n for n, v in headers) or b" " in target:
        return  # httptools never hands such a head over (its own parse refused it)
    taken = direct.request_of("GET", b"/" + target, headers)
    parsed = _parsed_by_websockets(direct.serialized_head("GET", b"/" + target, headers))
    if taken is not None:
        assert parsed is not None
        assert (taken.path, taken.method) == (parsed.path, parsed.method)
        assert list(taken.headers.raw_items()) == list(parsed.headers.raw_items())


def test_heads_websockets_refuses_are_left_to_it() -> None:
    plain = [(b"host", b"a"), (b"upgrade", b"websocket")]
    assert direct.request_of("GET", b"/ws", plain) is not None
    for refused in (
        [*plain, (b"transfer-encoding", b"chunked")],
        [*plain, (b"content-length", b"5")],
        [*plain, (b"x-ctl", b"a\x01b")],
        [(b"x-%d" % i, b"v") for i in range(MAX_NUM_HEADERS + 1)],
    ):
        assert direct.request_of("GET", b"/ws", refused) is None
        assert _parsed_by_websockets(direct.serialized_head("GET", b"/ws", refused)) is None
    assert direct.request_of("GET", "/wś".encode(), plain) is None
    assert direct.request_of("GET", b"/ws", [*plain, (b"content-length", b"0")]) is not None


async def _serve_one(
    app: Any, state: ServerState, ws: Any = direct.DirectWebSocketProtocol
) -> tuple[list[Any], socket.socket]:
    """``app`` behind the worker's HTTP protocol (guarded, handing upgrades to the direct
    protocol, or to ``ws``) on one end of a socket pair: the protocols it ran, the client's
    end."""
    guard = HandshakeGuard(
        max_pending=10, timeout_seconds=5, max_url_bytes=4096, max_header_bytes=65536
    )
    config = uvicorn.Config(app, http=guard.protocol_class(), ws=ws, log_config=None)
    config.load()
    ours, theirs = socket.socketpair()
    loop = asyncio.get_running_loop()
    made: list[Any] = []

    def http_protocol() -> Any:
        made.append(config.http_protocol_class(config=config, server_state=state, app_state={}))
        return made[-1]

    await loop.connect_accepted_socket(http_protocol, ours)
    return made, theirs


async def test_an_upgrade_is_parsed_once_and_frames_still_read(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    parses: list[Request] = []
    original = Request.parse

    def counted(*args: Any, **kwargs: Any) -> Any:
        # Every ServerProtocol starts this parser at once; count the heads it completes.
        request = yield from original(*args, **kwargs)
        parses.append(request)
        return request

    monkeypatch.setattr(Request, "parse", counted)
    scopes: list[Any] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        assert (await receive())["type"] == "websocket.connect"
        scopes.append(scope)
        await send({"type": "websocket.accept", "subprotocol": "clarion.v1"})
        await send({"type": "websocket.send", "text": "welcome"})
        message = await receive()
        await send({"type": "websocket.send", "text": "echo " + message["text"]})
        await send({"type": "websocket.close", "code": 1000})

    state = ServerState()
    _, theirs = await _serve_one(app, state)
    async with connect(
        "ws://clarion.invalid/ws?lastId=abc",
        sock=theirs,
        subprotocols=["clarion.v1"],  # type: ignore[list-item]
        additional_headers={"X-Pad": "p" * 300},
    ) as client:
        assert client.subprotocol == "clarion.v1"
        assert await client.recv() == "welcome"
        await client.send("after the head")
        assert await client.recv() == "echo after the head"
        with pytest.raises(ConnectionClosedOK):
            await client.recv()
    await asyncio.gather(*state.tasks)
    assert parses == []
    (scope,) = scopes
    assert (scope["path"], scope["query_string"]) == ("/ws", b"lastId=abc")
    assert (b"x-pad", b"p" * 300) in scope["headers"]
    assert scope["subprotocols"] == ["clarion.v1"]
    assert direct.sink_of(scope) is not None


@pytest.mark.parametrize("ws", [direct.DirectWebSocketProtocol, WebSocketsSansIOProtocol])
async def test_the_upgraded_http_protocol_is_freed_without_the_cyclic_collector(ws: Any) -> None:
    """Once the WebSocket protocol has the connection, the HTTP protocol is freed by its
    reference count: it and its parser no longer hold each other (~25 objects per
    upgrade the collector had to find, W4 in docs/benchmarks.md)."""

    async def app(scope: Any, receive: Any, send: Any) -> None:
        assert (await receive())["type"] == "websocket.connect"
        await send({"type": "websocket.accept"})
        await send({"type": "websocket.send", "text": "welcome"})
        await receive()

    state = ServerState()
    gc.disable()  # only reference counting may free it
    try:
        made, theirs = await _serve_one(app, state, ws)
        http_protocol = weakref.ref(made.pop())
        async with connect("ws://clarion.invalid/ws", sock=theirs) as client:
            assert await client.recv() == "welcome"
            assert http_protocol() is None
        await asyncio.gather(*state.tasks)
    finally:
        gc.enable()


_UPGRADE = (
    b"host: clarion.invalid",
    b"connection: Upgrade",
    b"upgrade: websocket",
    b"sec-websocket-version: 13",
    b"sec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==",
)


async def _answer_to(request_line: bytes, headers: list[bytes], body: bytes = b"") -> bytes:
    """What the worker's protocols answer to an upgrade head that reaches no application,
    read until the server closes."""

    async def app(scope: Any, receive: Any, send: Any) -> None:
        raise AssertionError("a refused head reaches no application")

    _, theirs = await _serve_one(app, ServerState())
    reader, writer = await asyncio.open_connection(sock=theirs)
    writer.write(b"\r\n".join([request_line, *_UPGRADE, *headers]) + b"\r\n\r\n" + body)
    try:
        return await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()


async def test_a_head_websockets_refuses_gets_its_refusal_as_before() -> None:
    many = [b"x-%d: v" % i for i in range(MAX_NUM_HEADERS)]
    answer = await _answer_to(b"GET /ws HTTP/1.1", many)
    assert answer.startswith(b"HTTP/1.1 431 "), answer[:80]


async def test_an_upgrade_with_a_body_gets_a_400_not_a_silent_close() -> None:
    """websockets answers such a head with nothing but EOF (curl: "Empty reply from
    server"); the client gets a status and a reason instead."""
    answer = await _answer_to(b"POST /ws HTTP/1.1", [b"content-length: 5"], b"hello")
    status, _, rest = answer.partition(b"\r\n")
    assert status == b"HTTP/1.1 400 Bad Request", answer[:80]
    body = json.loads(rest.partition(b"\r\n\r\n")[2])
    assert body["error"] == "bad_request"
