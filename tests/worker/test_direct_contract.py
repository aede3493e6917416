"""The uvicorn coupling of ``clarion_worker.direct``, held against the installed classes.

``DirectWebSocketProtocol`` subclasses uvicorn's sans-I/O WebSocket protocol and uses
its undocumented attributes (issue 14, item 3). An upgrade that renames one must fail
here, and at start-up turn direct writes off with a warning, rather than make every
write raise in production.
"""

from __future__ import annotations

import ast
import asyncio
import logging
import socket
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from uvicorn.server import ServerState
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, ConnectionClosedOK

from clarion_worker import direct, server
from clarion_worker.core.wsframe import text_frame

DIRECT_PY = Path(direct.__file__)


def test_the_installed_uvicorn_and_websockets_have_every_name_direct_uses() -> None:
    assert direct.incompatibilities() == []
    assert server.websocket_protocol() is direct.DirectWebSocketProtocol


def _names_used_on_uvicorns_objects() -> tuple[set[str], set[str], set[str]]:
    """From direct.py's own code: attributes read or written on the protocol (``p.x``,
    ``self._protocol.x``, ``self.x`` inside the subclass), on its websockets connection
    (``….conn.x``), and methods reached through ``super()``."""
    tree = ast.parse(DIRECT_PY.read_text())
    on_protocol: set[str] = set()
    on_conn: set[str] = set()
    via_super: set[str] = set()
    own: set[str] = set()

    def is_protocol(node: ast.expr, in_subclass: bool) -> bool:
        if isinstance(node, ast.Name):
            return node.id == "p" or (in_subclass and node.id == "self")
        return isinstance(node, ast.Attribute) and node.attr == "_protocol"

    for cls in (n for n in tree.body if isinstance(n, ast.ClassDef)):
        in_subclass = cls.name == "DirectWebSocketProtocol"
        if in_subclass:
            own |= {
                n.name if isinstance(n, ast.FunctionDef) else n.target.id  # type: ignore[union-attr]
                for n in cls.body
                if isinstance(n, ast.FunctionDef)
                or (isinstance(n, ast.AnnAssign) and isinstance(n.target, ast.Name))
            }
        for node in ast.walk(cls):
            if not isinstance(node, ast.Attribute):
                continue
            value = node.value
            if isinstance(value, ast.Call) and getattr(value.func, "id", None) == "super":
                via_super.add(node.attr)
            elif isinstance(value, ast.Attribute) and value.attr == "conn":
                if is_protocol(value.value, in_subclass):
                    on_conn.add(node.attr)
            elif is_protocol(value, in_subclass):
                on_protocol.add(node.attr)
    return on_protocol - own - {"_protocol"}, on_conn, via_super


def test_the_declared_lists_cover_everything_direct_py_touches() -> None:
    # A new use of uvicorn's internals must be declared, or neither the start-up check
    # nor the test above would watch it.
    on_protocol, on_conn, via_super = _names_used_on_uvicorns_objects()
    assert on_protocol, "the scan found nothing: it no longer matches direct.py's code"
    declared = set(direct.PROTOCOL_STATE) | set(direct.HANDSHAKE_STATE)
    assert on_protocol <= declared, on_protocol - declared
    assert on_conn <= set(direct.CONNECTION_STATE), on_conn - set(direct.CONNECTION_STATE)
    assert via_super - {"__init__"} <= set(direct.PROTOCOL_METHODS)


def test_a_renamed_attribute_turns_direct_writes_off_with_a_warning(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    original = WebSocketsSansIOProtocol.__init__

    def renamed(self: Any, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        self.reading_paused = self.__dict__.pop("read_paused")  # what an upgrade could do

    monkeypatch.setattr(WebSocketsSansIOProtocol, "__init__", renamed)
    monkeypatch.delattr(WebSocketsSansIOProtocol, "resume_writing")
    assert direct.incompatibilities() == [
        "WebSocketsSansIOProtocol.resume_writing",
        "protocol.read_paused",
    ]
    with caplog.at_level(logging.WARNING, logger="clarion.worker"):
        assert server.websocket_protocol() == "websockets-sansio"
    (record,) = caplog.records
    assert record.getMessage().startswith("direct writes off")
    assert record.missing == direct.incompatibilities()  # type: ignore[attr-defined]


async def _serve_one(
    app: Any, state: ServerState
) -> tuple[direct.DirectWebSocketProtocol, socket.socket]:
    """``app`` behind the real uvicorn protocol class on one end of a socket pair: the
    protocol, and the other end for the client."""
    config = uvicorn.Config(app, ws=direct.DirectWebSocketProtocol, log_config=None)
    config.load()
    ours, theirs = socket.socketpair()
    loop = asyncio.get_running_loop()
    _, protocol = await loop.connect_accepted_socket(
        lambda: direct.DirectWebSocketProtocol(config, state, {}), ours
    )
    return protocol, theirs


async def test_a_handshake_through_the_real_protocol_offers_the_sink_and_closes_cleanly() -> None:
    offered: list[bool] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        assert (await receive())["type"] == "websocket.connect"
        await send({"type": "websocket.accept"})
        sink = direct.sink_of(scope)
        offered.append(sink is not None)
        assert sink is not None
        assert sink.state() == direct.WRITABLE
        sink.write(text_frame(b"hello"))
        sink.close(1000, "bye", handshake_seconds=5.0)
        assert sink.state() == direct.CLOSED
        assert (await receive())["type"] == "websocket.disconnect"

    state = ServerState()
    protocol, theirs = await _serve_one(app, state)
    async with connect("ws://clarion.invalid/ws", sock=theirs) as client:
        assert await client.recv() == "hello"
        with pytest.raises(ConnectionClosedOK) as closed:
            await client.recv()
    assert closed.value.rcvd is not None
    assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (1000, "bye")
    await asyncio.gather(*state.tasks)
    assert offered == [True]
    assert isinstance(protocol, direct.DirectWebSocketProtocol)
    assert protocol.request is None  # dropped after the handshake (W3 memory)


async def test_after_the_handshake_the_parser_holds_no_request_and_still_reads_frames() -> None:
    """websockets' parser generator parsed the request first; once the connection is open
    it is replaced by one that never saw it (W3 memory), and frames are still read."""
    received: list[str] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        assert (await receive())["type"] == "websocket.connect"
        await send({"type": "websocket.accept"})
        await send({"type": "websocket.send", "text": "welcome"})
        message = await receive()
        received.append(message.get("text"))
        await send({"type": "websocket.close", "code": 1000})

    state = ServerState()
    protocol, theirs = await _serve_one(app, state)
    pad = "p" * 4096
    async with connect(
        "ws://clarion.invalid/ws", sock=theirs, additional_headers={"X-Pad": pad}
    ) as client:
        assert await client.recv() == "welcome"
        assert isinstance(protocol, direct.DirectWebSocketProtocol)
        parser: Any = protocol.conn.parser
        parser_locals = parser.gi_frame.f_locals
        assert "request" not in parser_locals, sorted(parser_locals)
        await client.send("after the restart")
        with pytest.raises(ConnectionClosedOK):
            await client.recv()
    await asyncio.gather(*state.tasks)
    assert received == ["after the restart"]


async def test_the_sink_says_blocked_once_a_client_closes_before_the_app_hears_of_it() -> None:
    """The fan-out writes an armed connection without asking the sink again: the close a
    client sends must disarm it in the same callback that echoes it, before the
    application's handler learns of the disconnect. The sink also says whether the 101
    is still held (then its ``write`` is not the socket's own)."""
    seen: dict[str, Any] = {}

    async def app(scope: Any, receive: Any, send: Any) -> None:
        assert (await receive())["type"] == "websocket.connect"
        await send({"type": "websocket.accept"})
        sink = direct.sink_of(scope)
        assert sink is not None
        seen["held after accept"] = sink.held
        blocked: list[bool] = []
        sink.on_blocked = lambda: blocked.append(True)
        await asyncio.sleep(0)  # as the write pass: a turn after the accept
        sink.write(text_frame(b"welcome"))
        seen["held after a write"] = sink.held
        seen["blocked before the close"] = list(blocked)
        message = await receive()
        seen["blocked when the app hears"] = (message["type"], list(blocked))

    state = ServerState()
    protocol, theirs = await _serve_one(app, state)
    async with connect("ws://clarion.invalid/ws", sock=theirs) as client:
        assert await client.recv() == "welcome"
    await asyncio.gather(*state.tasks)
    assert isinstance(protocol, direct.DirectWebSocketProtocol)
    assert seen == {
        "held after accept": True,
        "held after a write": False,
        "blocked before the close": [],
        "blocked when the app hears": ("websocket.disconnect", [True]),
    }


class _Transport:
    def __init__(self) -> None:
        self.written: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.written.append(data)


def test_the_sink_follows_the_transports_flow_control() -> None:
    """uvicorn's transport calls pause_writing and resume_writing; the sink the fan-out
    reads must say so at once, and a resumed socket marks its session again."""
    config = uvicorn.Config(direct._no_app, ws=direct.DirectWebSocketProtocol, log_config=None)
    config.load()
    loop = asyncio.new_event_loop()
    try:
        protocol = direct.DirectWebSocketProtocol(config, ServerState(), {}, _loop=loop)
        protocol.transport = _Transport()  # type: ignore[assignment]
        protocol.handshake_complete = True
        sink = direct.DirectSink(protocol)
        protocol.sink = sink
        woken: list[bool] = []
        blocked: list[bool] = []
        sink.on_writable = lambda: woken.append(True)
        sink.on_blocked = lambda: blocked.append(True)
        assert sink.state() == direct.WRITABLE
        protocol.pause_writing()
        assert (sink.state(), sink.writable, woken) == (direct.PAUSED, False, [])
        assert blocked == [True]  # an armed connection stops writing straight to it
        protocol.resume_writing()
        assert (sink.state(), sink.writable, woken) == (direct.WRITABLE, True, [True])
        protocol.close_sent = True
        assert sink.state() == direct.CLOSED
    finally:
        loop.close()


def _count_writes(protocol: Any) -> list[bytes]:
    """Every write the protocol's socket transport takes from now on."""
    transport = protocol.transport
    written: list[bytes] = []
    real_write = transport.write

    def write(data: bytes) -> None:
        written.append(bytes(data))
        real_write(data)

    transport.write = write
    return written


async def test_the_101_response_leaves_in_the_same_write_as_the_first_frame() -> None:
    writes: list[list[bytes]] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        assert (await receive())["type"] == "websocket.connect"
        await send({"type": "websocket.accept"})
        sink = direct.sink_of(scope)
        assert sink is not None
        await asyncio.sleep(0)  # as the write pass: a turn after the accept
        sink.write(text_frame(b"welcome"))
        assert (await receive())["type"] == "websocket.receive"
        sink.close(1000, "bye", handshake_seconds=5.0)
        assert (await receive())["type"] == "websocket.disconnect"

    state = ServerState()
    loop = asyncio.get_running_loop()
    ours, theirs = socket.socketpair()
    config = uvicorn.Config(app, ws=direct.DirectWebSocketProtocol, log_config=None)
    config.load()

    def made() -> direct.DirectWebSocketProtocol:
        protocol = direct.DirectWebSocketProtocol(config, state, {})
        original = protocol.connection_made

        def connection_made(transport: Any) -> None:
            original(transport)
            writes.append(_count_writes(protocol))

        protocol.connection_made = connection_made  # type: ignore[method-assign]
        return protocol

    await loop.connect_accepted_socket(made, ours)
    async with connect("ws://clarion.invalid/ws", sock=theirs) as client:
        assert await client.recv() == "welcome"
        await client.send("hi")
        with pytest.raises(ConnectionClosedOK):
            await client.recv()
    await asyncio.gather(*state.tasks)
    (written,) = writes
    assert written[0].startswith(b"HTTP/1.1 101 ")
    assert written[0].endswith(text_frame(b"welcome"))


async def test_a_101_response_with_nothing_after_it_goes_out_alone() -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        assert (await receive())["type"] == "websocket.connect"
        await send({"type": "websocket.accept"})
        message = await receive()  # the client speaks first: it saw the 101 on its own
        sink = direct.sink_of(scope)
        assert sink is not None
        sink.write(text_frame(b"echo " + message["text"].encode()))
        sink.close(1000, "bye", handshake_seconds=5.0)
        assert (await receive())["type"] == "websocket.disconnect"

    state = ServerState()
    _, theirs = await _serve_one(app, state)
    async with connect("ws://clarion.invalid/ws", sock=theirs) as client:
        await client.send("first")
        assert await client.recv() == "echo first"
        with pytest.raises(ConnectionClosedOK):
            await client.recv()
    await asyncio.gather(*state.tasks)


async def test_a_close_right_after_the_accept_follows_the_101() -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        assert (await receive())["type"] == "websocket.connect"
        await send({"type": "websocket.accept"})
        sink = direct.sink_of(scope)
        assert sink is not None
        sink.close(4013, "full", handshake_seconds=5.0)  # before any write pass
        assert (await receive())["type"] == "websocket.disconnect"

    state = ServerState()
    _, theirs = await _serve_one(app, state)
    async with connect("ws://clarion.invalid/ws", sock=theirs) as client:
        with pytest.raises(ConnectionClosed) as closed:
            await client.recv()
    await asyncio.gather(*state.tasks)
    assert closed.value.rcvd is not None
    assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (4013, "full")
