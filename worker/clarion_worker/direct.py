"""Direct writes: an ASGI extension that lets the fan-out pass write to the socket itself.

Through plain ASGI every frame costs a task wake-up and a ``send`` coroutine per client;
docs/benchmarks.md measured that at 3-5x below what one core can write. This uvicorn WebSocket
protocol (the ``websockets-sansio`` one) adds the extension ``clarion.direct`` to the
scope of each upgrade request. Its ``DirectSink`` writes pre-built frames straight to
the transport, reports whether the transport still accepts data (uvicorn's own
``pause_writing`` flow control), and closes with the same steps uvicorn's
``websocket.close`` takes. Everything else — handshake, denial responses, reading client
frames, protocol pings — stays uvicorn's.

Frames written here are whole, unfragmented server frames (never masked), written from
the event loop thread like uvicorn's own, so they never interleave inside a frame.
Servers without the extension (granian, or ``server.directWrites: false``) fall back to
one ASGI send per frame.

The subclass reaches into uvicorn's implementation (``PROTOCOL_METHODS``,
``PROTOCOL_STATE``, ``CONNECTION_STATE``: none of it is public API). pyproject.toml pins
uvicorn and websockets to the tested minor ranges, tests/worker/test_direct_contract.py
holds these lists against the installed classes and against this file's own code, and
``incompatibilities`` checks them at start-up: the server falls back to uvicorn's plain
protocol (and so to the ASGI path) with a warning instead of failing every write.
"""

from __future__ import annotations

import asyncio
import fcntl
import re
import struct
import termios
from collections.abc import Callable
from typing import Any, Final

import uvicorn
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from uvicorn.server import ServerState
from websockets.datastructures import Headers
from websockets.http11 import MAX_NUM_HEADERS, Request
from websockets.protocol import Protocol, State

from clarion_worker.core.protocol import CloseCode, error_frame
from clarion_worker.core.writepass import CLOSED as CLOSED
from clarion_worker.core.writepass import PAUSED as PAUSED
from clarion_worker.core.writepass import WRITABLE as WRITABLE
from clarion_worker.core.wsframe import text_frame
from clarion_worker.handshake import NOT_A_HANDSHAKE, refusal_bytes

#: RFC 9110's token (a header name) and field value (visible characters, space, tab,
#: obs-text), the rules websockets' own head parser applies.
_TOKEN: Final = re.compile(rb"[-!#$%&'*+.^_`|~0-9a-zA-Z]+")
_FIELD_VALUE: Final = re.compile(rb"[\x09\x20-\x7e\x80-\xff]*")

#: The scope extension's name; its value is ``{"sink": DirectSink}``.
EXTENSION: Final = "clarion.direct"

#: uvicorn's methods the subclass overrides and calls through ``super()``.
PROTOCOL_METHODS: Final = (
    "data_received",
    "handle_parser_exception",
    "connection_lost",
    "handle_connect",
    "send",
    "pause_writing",
    "resume_writing",
    "keepalive_timeout",
    "shutdown",
)
#: uvicorn's per-connection state, set in its ``__init__``, that this module reads or writes.
PROTOCOL_STATE: Final = (
    "transport",
    "loop",
    "queue",
    "conn",
    "handshake_initiated",
    "handshake_complete",
    "close_sent",
    "disconnected",
    "close_timer",
    "read_paused",
    "writable",
)
#: What this module uses of the protocol's websockets ``ServerProtocol`` (``conn``).
CONNECTION_STATE: Final = (
    "send_close",
    "data_to_send",
    "handshake_exc",
    "close_sent",
    "close_rcvd",
    "state",
    "reader",
    "parser",
    "parse",
)
#: Set by uvicorn's ``handle_connect``, after the request is parsed; read tolerantly.
HANDSHAKE_STATE: Final = ("request", "response", "scope")


def incompatibilities() -> list[str]:
    """What this module uses that the installed uvicorn and websockets lack; empty if none.

    Builds one protocol object the way uvicorn does for a connection (no socket, no
    task) and looks for every name of ``PROTOCOL_METHODS``, ``PROTOCOL_STATE`` and
    ``CONNECTION_STATE`` on it.
    """
    # Defined by uvicorn itself: asyncio.Protocol's no-op ``resume_writing`` would leave
    # a paused client paused for good.
    defined = {
        name
        for cls in WebSocketsSansIOProtocol.__mro__
        if cls.__module__.startswith("uvicorn.")
        for name, value in vars(cls).items()
        if callable(value)
    }
    missing = [
        f"WebSocketsSansIOProtocol.{name}" for name in PROTOCOL_METHODS if name not in defined
    ]
    config = uvicorn.Config(_no_app, ws=DirectWebSocketProtocol, log_config=None, lifespan="off")
    loop = asyncio.new_event_loop()
    try:
        config.load()
        protocol = DirectWebSocketProtocol(config, ServerState(), {}, _loop=loop)
    except (TypeError, AttributeError, ValueError) as error:  # the constructor itself changed
        return [*missing, f"WebSocketsSansIOProtocol(config, server_state, app_state): {error}"]
    finally:
        loop.close()
    missing += [f"protocol.{name}" for name in PROTOCOL_STATE if not hasattr(protocol, name)]
    conn = getattr(protocol, "conn", None)
    missing += [f"protocol.conn.{name}" for name in CONNECTION_STATE if not hasattr(conn, name)]
    return missing


async def _no_app(scope: Any, receive: Any, send: Any) -> None:
    """The application of the throwaway ``incompatibilities`` config: never called."""


class DirectSink:
    """The socket of one accepted WebSocket, as the fan-out pass sees it."""

    __slots__ = ("_protocol", "held", "on_blocked", "on_writable", "paused", "write")

    def __init__(self, protocol: DirectWebSocketProtocol) -> None:
        self._protocol = protocol
        #: The 101 response waits in a ``_HeldResponse`` for the first write: ``write`` is
        #: that stand-in's until then, not the transport's own.
        self.held = False
        #: Called when the socket may no longer take a frame at once: paused, closing or
        #: lost (the session disarms its connection: ``hub.Connection.armed``). Called
        #: more often than needed rather than less: it only costs a later full check.
        self.on_blocked: Callable[[], None] | None = None
        #: The protocol's ``write_paused``, kept here too (the protocol updates both): the
        #: fan-out reads it for every client of every event, and the sink is in cache.
        self.paused = protocol.write_paused
        #: Called when a paused transport accepts data again (the session has more).
        self.on_writable: Callable[[], None] | None = None
        #: Hand bytes to the socket: the transport's own ``write``, bound once, so the
        #: write pass calls it with no Python frame of ours per client.
        self.write: Callable[[bytes], None] = protocol.transport.write

    @property
    def open(self) -> bool:
        """Accepted, not closing and not lost."""
        p = self._protocol
        return p.handshake_complete and not p.close_sent and not p.disconnected

    @property
    def writable(self) -> bool:
        """Open and below the transport's high-water mark."""
        return self.open and self._protocol.writable.is_set()

    def blocked(self) -> None:
        """The socket may no longer take a frame at once (see ``on_blocked``)."""
        if self.on_blocked is not None:
            self.on_blocked()

    def state(self) -> int:
        """``CLOSED``, ``PAUSED`` or ``WRITABLE`` in one call (the write pass's hot path)."""
        p = self._protocol
        if p.close_sent or p.disconnected or not p.handshake_complete:
            return CLOSED
        return PAUSED if self.paused else WRITABLE

    def close(
        self, code: int, reason: str, *, handshake_seconds: float, max_seconds: float = 30.0
    ) -> None:
        """Send a close frame and end the ASGI side now; the socket follows.

        Same steps as uvicorn's ``websocket.close`` except the deadline. Whatever was
        written before the close frame (already in the transport's and the kernel's
        buffers: it cannot be recalled) must reach the client first. A client still
        reading gets there, however slowly: the deadline moves on while the bytes ahead
        of the close keep draining, and once all are handed over the client has until
        ``max_seconds`` to read them and answer. A client that stopped reading with bytes
        still unsent is aborted once ``handshake_seconds`` pass without progress, rather
        than waiting on a flush that cannot happen.
        """
        p = self._protocol
        self.blocked()
        if p.close_sent or p.disconnected or p.transport.is_closing():
            return
        p.queue.put_nowait({"type": "websocket.disconnect", "code": code, "reason": reason})
        p.conn.send_close(code, reason)
        p.transport.write(b"".join(p.conn.data_to_send()))
        p.close_sent = True
        if p.read_paused:
            p.read_paused = False
            p.transport.resume_reading()
        watch = _CloseWatch(p, handshake_seconds, p.loop.time() + max_seconds)
        p.close_timer = p.loop.call_later(handshake_seconds, watch.check)


class _CloseWatch:
    """Aborts a closing connection once the bytes ahead of its close frame stop draining."""

    __slots__ = ("_deadline", "_handed_over", "_last", "_period", "_protocol")

    def __init__(self, protocol: DirectWebSocketProtocol, period: float, deadline: float) -> None:
        self._protocol = protocol
        self._period = period
        self._deadline = deadline
        self._last = unsent_bytes(protocol.transport)
        self._handed_over = False

    def check(self) -> None:
        p = self._protocol
        if p.disconnected or p.transport.is_closing():
            return
        unsent = unsent_bytes(p.transport)
        draining = unsent < self._last
        self._last = unsent
        if p.loop.time() >= self._deadline:
            p.transport.abort()
        elif unsent == 0 and not self._handed_over:
            # All handed over; the client may still have its own receive buffer (it is
            # invisible from here) to read before it meets the close frame: until the cap.
            self._handed_over = True
            p.close_timer = p.loop.call_later(self._deadline - p.loop.time(), self.check)
        elif draining:
            p.close_timer = p.loop.call_later(self._period, self.check)
        else:
            p.transport.abort()


class _HeldResponse:
    """The transport while the 101 response waits for the first frame to go out with it.

    uvicorn writes the response as soon as the application accepts; the welcome (and a
    resume's replay) follows in the next write pass: two writes, and on loopback two
    deliveries to wake the client, where one does (W4: one per reconnect). Standing in
    for the transport during the accept, this holds the response, then prepends it to
    the first write, whoever makes it (the write pass through the sink, or uvicorn: a
    pong, a close). If nothing is written by the turn after the write pass that follows
    the accept, the response goes out alone. Anything else is the transport's own.
    """

    __slots__ = ("_accepting", "_head", "_protocol", "_sink", "_transport")

    def __init__(self, protocol: DirectWebSocketProtocol, sink: DirectSink) -> None:
        self._protocol = protocol
        self._sink = sink
        self._transport: asyncio.Transport = protocol.transport
        self._head = b""
        self._accepting = True

    def write(self, data: bytes) -> None:
        if self._accepting and not self._head:
            self._head = bytes(data)  # uvicorn's 101
            return
        self.release(data)

    def accepted(self) -> None:
        """uvicorn's accept returned: hold what it wrote, or step aside if it wrote nothing."""
        self._accepting = False
        if not self._head:
            self._restore()
            return
        self._sink.write = self.write
        self._sink.held = True
        # The write pass that carries the welcome is scheduled after this accept returns:
        # the fallback runs a turn later, so that the pass comes first.
        self._protocol.loop.call_soon(self._release_next_turn)

    def _release_next_turn(self) -> None:
        self._protocol.loop.call_soon(self.release)

    def release(self, data: bytes = b"") -> None:
        head, self._head = self._head, b""
        transport = self._restore()
        if (head or data) and not transport.is_closing():
            transport.write(head + data if head else data)

    def _restore(self) -> asyncio.Transport:
        transport = self._transport
        protocol: Any = self._protocol
        if protocol.transport is self:
            protocol.transport = transport
        if self._sink.write == self.write:
            self._sink.write = transport.write
        self._sink.held = False
        return transport

    def close(self) -> None:
        self.release()
        self._transport.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


def unsent_bytes(transport: Any) -> int:
    """Bytes written but not yet taken by the peer: the transport's buffer plus the
    kernel's send queue (SIOCOUTQ), which holds megabytes on a fast link."""
    size = int(transport.get_write_buffer_size())
    sock = transport.get_extra_info("socket")
    if sock is not None:
        try:
            raw = fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, b"\0\0\0\0")
            size += int(struct.unpack("i", raw)[0])
        except (OSError, ValueError):
            pass
    return size


class _Inbox:
    """What uvicorn needs of its per-connection ``asyncio.Queue``, for a single reader.

    ``asyncio.Queue`` allocates three deques and an Event per connection (~3 KiB and a
    few microseconds per handshake, measured with bench/memory.py and py-spy under W4);
    uvicorn only calls ``put_nowait``, ``get`` and ``empty``, from one ASGI task.
    """

    __slots__ = ("_items", "_waiter")

    def __init__(self) -> None:
        self._items: list[Any] = []
        self._waiter: asyncio.Future[None] | None = None

    def put_nowait(self, item: Any) -> None:
        self._items.append(item)
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def get(self) -> Any:
        while not self._items:
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        return self._items.pop(0)

    def empty(self) -> bool:
        return not self._items

    def amend_last_disconnect(self, code: int) -> None:
        """Correct the code of the disconnect message just queued (see connection_lost)."""
        if self._items and self._items[-1].get("type") == "websocket.disconnect":
            self._items[-1] = {**self._items[-1], "code": code}


class DirectWebSocketProtocol(WebSocketsSansIOProtocol):
    """uvicorn's sans-I/O WebSocket protocol plus the ``clarion.direct`` extension."""

    sink: DirectSink | None = None
    #: Between the transport's ``pause_writing`` and ``resume_writing`` (uvicorn keeps the
    #: same fact in an ``asyncio.Event``; a bool costs the write pass no call per client).
    write_paused: bool = False
    #: The frame parser never held the request (``receive_head``): nothing to restart.
    fresh_parser: bool = False

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.queue = _Inbox()  # type: ignore[assignment]
        self.write_paused = False

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        # websockets refused the head itself (a line above its MAX_LINE_LENGTH, not HTTP):
        # it queued a 414/431 or an EOF that uvicorn's protocol never writes, and the
        # client would wait on an open socket forever. Where it has only the EOF (a head
        # with a body, a transfer coding, a header it cannot read), the client gets a 400
        # rather than a connection closed without a word.
        refused = not self.handshake_initiated and self.conn.handshake_exc is not None
        if refused and not self.transport.is_closing():
            answer = b"".join(self.conn.data_to_send())
            self.transport.write(answer or refusal_bytes(NOT_A_HANDSHAKE))
            self.transport.close()
        # A client's close (echoed, then the transport closes), or a frame websockets
        # refused (uvicorn sets ``close_sent``): nothing may follow the close frame.
        self._after_uvicorn()

    def _after_uvicorn(self) -> None:
        """Tell the sink once uvicorn's own code closed or lost the connection: uvicorn
        sets ``close_sent``/``disconnected`` and closes the transport in several places,
        all reached through the methods that call this."""
        sink = self.sink
        if sink is not None and (
            self.close_sent or self.disconnected or self.transport.is_closing()
        ):
            sink.blocked()

    def handle_parser_exception(self) -> None:
        # websockets failed the connection on a client frame (1009 too big, 1002, 1007)
        # and holds its close frame, not written yet: the error frame the protocol
        # promises for client-caused closes goes out right before it.
        sent = self.conn.close_sent
        if sent is not None and not self.close_sent and not self.transport.is_closing():
            self.transport.write(text_frame(error_frame(sent.code, sent.reason).encode()))
        super().handle_parser_exception()

    def connection_lost(self, exc: Exception | None) -> None:
        # uvicorn reports 1005 for any loss after the handshake; without a close frame
        # either way it is an abnormal closure, 1006, and counted as one.
        abnormal = self.handshake_complete and self.conn.close_rcvd is None and not self.close_sent
        super().connection_lost(exc)
        if abnormal:
            self.queue.amend_last_disconnect(int(CloseCode.ABNORMAL))  # type: ignore[attr-defined]
        if self.sink is not None:
            self.sink.blocked()

    def keepalive_timeout(self) -> None:
        super().keepalive_timeout()  # a client that stopped answering pings: 1011
        self._after_uvicorn()

    def shutdown(self) -> None:
        if self.sink is not None:
            self.sink.blocked()  # uvicorn writes its 1012 close next
        super().shutdown()

    def receive_head(self, method: str, target: bytes, headers: list[tuple[bytes, bytes]]) -> None:
        """The upgrade request as httptools parsed it, without websockets parsing it again.

        uvicorn writes the parsed head back out as bytes for websockets to parse line by
        line (46 -> 36 us for websockets' part of a handshake, ``bench/handshake_cost.py
        head``; issue 17's W4). A head websockets would accept as it stands becomes its
        ``Request`` here; any other goes through ``data_received`` as uvicorn sends it, so
        websockets refuses it exactly as before.
        """
        request = request_of(method, target, headers)
        if request is None:
            self.data_received(serialized_head(method, target, headers))
            return
        # What websockets' own parser does once the request is read: frames from here on.
        conn = self.conn
        parser = Protocol.parse(conn)
        next(parser)
        conn.parser = parser
        self.fresh_parser = True
        self.handle_connect(request)

    def handle_connect(self, event: Request) -> None:
        super().handle_connect(event)
        # The ASGI task is created but has not run yet: extending its scope is safe.
        scope: Any = getattr(self, "scope", None)
        response: Any = getattr(self, "response", None)
        if scope is not None and response is not None and response.status_code == 101:
            self.sink = DirectSink(self)
            scope["extensions"][EXTENSION] = {"sink": self.sink}

    async def send(self, message: Any) -> None:
        sink = self.sink
        if message["type"] != "websocket.accept" or sink is None or self.handshake_complete:
            await super().send(message)
            self._after_uvicorn()  # the application's own websocket.close
            return
        held = _HeldResponse(self, sink)
        self.transport = held  # type: ignore[assignment]
        try:
            await super().send(message)
        finally:
            held.accepted()
        self._after_accept()

    def _after_accept(self) -> None:
        if self.handshake_complete:
            # Parsed request and prepared response are not read again once the handshake
            # is done; dropping them saves ~4 KiB per idle connection (W3).
            self.request = None  # type: ignore[assignment]
            self.response = None  # type: ignore[assignment]
            self._restart_parser()

    def _restart_parser(self) -> None:
        """Give websockets a frame parser that never saw the HTTP request.

        websockets' parser is one generator for the connection's life: it parsed the
        request, then went on to frames, and its frame keeps the request's locals (the
        request line, every header) alive as long as the connection: ~3 KiB per idle
        connection (W3, docs/benchmarks.md). Once the connection is open and nothing of a
        frame is buffered, a fresh ``parse()`` starts directly with frames, as websockets'
        own ``ServerProtocol.parse`` does in the OPEN state.
        """
        conn = self.conn
        if self.fresh_parser:
            return  # ``receive_head``'s parser never saw the request
        if conn.state is not State.OPEN or conn.reader.buffer:
            return  # a frame is half-read: keep the parser that holds its progress
        parser = conn.parse()
        next(parser)
        conn.parser = parser

    def pause_writing(self) -> None:
        super().pause_writing()
        self.write_paused = True
        if self.sink is not None:
            self.sink.paused = True
            self.sink.blocked()

    def resume_writing(self) -> None:
        super().resume_writing()
        self.write_paused = False
        sink = self.sink
        if sink is not None:
            sink.paused = False
            if sink.on_writable is not None:
                sink.on_writable()


def request_of(method: str, target: bytes, headers: list[tuple[bytes, bytes]]) -> Request | None:
    """websockets' ``Request`` for a head httptools parsed; None unless websockets'
    ``Request.parse`` would accept the same head as it stands (then it refuses it itself).

    httptools has parsed the request line; what is left are websockets' own rules: an
    ASCII target, at most ``MAX_NUM_HEADERS`` headers of its syntax, no body. (uvicorn
    presents every upgrade to websockets as HTTP/1.1, and websockets checks the method
    later, in ``accept``.)
    """
    if len(headers) > MAX_NUM_HEADERS or not target.isascii():
        return None
    pairs: list[tuple[str, str]] = []
    for name, raw_value in headers:
        value = raw_value.strip(b" \t")
        if (
            name == b"transfer-encoding"
            or (name == b"content-length" and value != b"0")
            or _TOKEN.fullmatch(name) is None
            or _FIELD_VALUE.fullmatch(value) is None
        ):
            return None
        # Names are tokens (ASCII); values are decoded as ISO-8859-1, as websockets does.
        pairs.append((name.decode("ascii"), value.decode("latin-1")))
    return Request(target.decode("ascii"), Headers(pairs), method=method)


def serialized_head(method: str, target: bytes, headers: list[tuple[bytes, bytes]]) -> bytes:
    """The head as uvicorn hands it to websockets (``handle_websocket_upgrade``)."""
    output = [method.encode(), b" ", target, b" HTTP/1.1\r\n"]
    for name, value in headers:
        output += [name, b": ", value, b"\r\n"]
    output.append(b"\r\n")
    return b"".join(output)


def sink_of(scope: dict[str, Any] | Any) -> DirectSink | None:
    """The direct sink of a WebSocket scope, if its server offers one."""
    extension = (scope.get("extensions") or {}).get(EXTENSION)
    if not extension:
        return None
    sink = extension.get("sink")
    return sink if isinstance(sink, DirectSink) else None
