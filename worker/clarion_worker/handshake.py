"""The request head of every connection, bounded in size, time and number.

uvicorn reads a request head for as long as the client takes and as large as it comes
(httptools sets no limit), then hands a WebSocket upgrade to websockets-sansio, whose
parser refuses any line above ``websockets.http11.MAX_LINE_LENGTH`` (8192) by queueing a
414/431 that uvicorn's protocol never writes: the client waited forever on an open
socket (issue 12). So the HTTP protocol here, uvicorn's httptools one subclassed:

- counts the connections whose request head is not complete yet (a metric) and refuses
  new ones at once with 503 above ``limits.maxPendingHandshakes``;
- gives each head ``server.handshakeTimeoutSeconds`` to arrive, then answers 408 and
  closes (a slow-loris client held its descriptor indefinitely);
- answers 414 as soon as the request target passes ``limits.maxUrlBytes`` and 431 as
  soon as the header section passes ``limits.maxHeaderBytes``, for WebSocket and SSE
  alike, before anything else reads the request.

Each refusal is a complete HTTP response with a JSON body, then the connection closes.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

import websockets.http11
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

#: Per header line: name, ": " and CRLF around the value (as sent on the wire).
_LINE_OVERHEAD: Final = 4


@dataclass(frozen=True, slots=True)
class Refusal:
    status: int
    reason: str
    message: str


def url_too_long(limit: int) -> Refusal:
    return Refusal(414, "url_too_long", f"request target longer than {limit} bytes")


def headers_too_large(limit: int) -> Refusal:
    return Refusal(431, "headers_too_large", f"request headers larger than {limit} bytes")


HANDSHAKE_TIMEOUT: Final = Refusal(408, "handshake_timeout", "request head not received in time")
NOT_A_HANDSHAKE: Final = Refusal(
    400,
    "bad_request",
    "not a WebSocket handshake: a body, a transfer coding or a header that cannot be read",
)
TOO_MANY_PENDING: Final = Refusal(
    503, "unavailable", "too many connections are opening; retry with backoff"
)


def refusal_bytes(refusal: Refusal) -> bytes:
    body = json.dumps({"error": refusal.reason, "message": refusal.message}).encode()
    return b"".join(
        (
            STATUS_LINE[refusal.status],
            b"content-type: application/json\r\n",
            b"content-length: " + str(len(body)).encode() + b"\r\n",
            b"connection: close\r\n",
            b"\r\n",
            body,
        )
    )


class HandshakeGuard:
    """What every connection's protocol shares: limits, the pending count, observers."""

    def __init__(
        self,
        *,
        max_pending: int,
        timeout_seconds: float,
        max_url_bytes: int,
        max_header_bytes: int,
        on_pending: Callable[[int], None] = lambda _n: None,
        on_refused: Callable[[str], None] = lambda _reason: None,
    ) -> None:
        self.max_pending = max_pending
        self.timeout_seconds = timeout_seconds
        self.max_url_bytes = max_url_bytes
        self.max_header_bytes = max_header_bytes
        self.pending = 0
        self._on_pending = on_pending
        self._on_refused = on_refused
        # Where websockets-sansio parses the upgrade head again, line by line (uvicorn's
        # own protocol, or a head ``receive_head`` leaves to it), it must accept every line
        # these limits let through (its silent refusal is handled in direct).
        websockets.http11.MAX_LINE_LENGTH = max(
            websockets.http11.MAX_LINE_LENGTH, max_url_bytes + 64, max_header_bytes
        )

    def opened(self) -> None:
        self.pending += 1
        self._on_pending(self.pending)

    def settled(self) -> None:
        self.pending -= 1
        self._on_pending(self.pending)

    def refused(self, refusal: Refusal) -> None:
        self._on_refused(refusal.reason)

    def protocol_class(self) -> type[HttpToolsProtocol]:
        """uvicorn's ``http=`` protocol class, bound to this guard."""
        guard = self

        class Bound(GuardedHttpProtocol):
            _guard = guard

        return Bound


class _Refused(Exception):  # noqa: N818 - stops the parser, never leaves this module
    pass


class GuardedHttpProtocol(HttpToolsProtocol):
    _guard: HandshakeGuard

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._pending = False
        self._refused = False
        self._timer: asyncio.TimerHandle | None = None
        self._url_bytes = 0
        self._header_bytes = 0

    # ---- the pending window: from the first byte we wait for to the head's end -------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if self._guard.pending >= self._guard.max_pending:
            self._refuse(TOO_MANY_PENDING)
            return
        self._begin()

    def _begin(self) -> None:
        if self._pending:
            return
        self._pending = True
        self._guard.opened()
        self._timer = self.loop.call_later(self._guard.timeout_seconds, self._timed_out)

    def _settle(self) -> None:
        if not self._pending:
            return
        self._pending = False
        self._guard.settled()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _timed_out(self) -> None:
        self._timer = None
        if self._pending and not self._refused:
            self._refuse(HANDSHAKE_TIMEOUT)

    def connection_lost(self, exc: Exception | None) -> None:
        self._settle()
        super().connection_lost(exc)

    # ---- parser callbacks --------------------------------------------------------------

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._url_bytes = 0
        self._header_bytes = 0
        self._begin()  # a further request on a kept-alive connection: a new deadline

    def on_url(self, url: bytes) -> None:
        self._url_bytes += len(url)
        if self._url_bytes > self._guard.max_url_bytes:
            self._refuse(url_too_long(self._guard.max_url_bytes))
            raise _Refused
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_bytes += len(name) + len(value) + _LINE_OVERHEAD
        if self._header_bytes > self._guard.max_header_bytes:
            self._refuse(headers_too_large(self._guard.max_header_bytes))
            raise _Refused
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        if self._refused:
            return
        self._settle()
        super().on_headers_complete()

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return  # the answer is out and the transport closing: read nothing more
        super().data_received(data)

    def handle_websocket_upgrade(self) -> None:
        # The direct protocol takes the head httptools parsed (``receive_head``) instead of
        # bytes to parse again; uvicorn's own protocol gets what uvicorn gives it.
        protocol_class: Any = self.ws_protocol_class
        if not hasattr(protocol_class, "receive_head"):
            super().handle_websocket_upgrade()
        else:
            self.connections.discard(self)
            protocol = protocol_class(
                config=self.config, server_state=self.server_state, app_state=self.app_state
            )
            protocol.connection_made(self.transport)
            protocol.receive_head(self.scope["method"], self.url, self.scope["headers"])
            self.transport.set_protocol(protocol)
        # This protocol is done with the connection, but it and its parser hold each other
        # (the parser calls back bound methods): a cycle of ~25 objects per upgrade that
        # only the cyclic collector would free (W4, docs/benchmarks.md). uvicorn breaks the
        # same cycle when a plain HTTP connection is lost (``connection_lost``); an upgrade
        # never gets there, so it is broken here. Nothing reads the parser afterwards:
        # ``data_received`` returns right after this call.
        self.parser = None  # type: ignore[assignment]

    def send_400_response(self, msg: str) -> None:
        if self._refused:
            return  # the parser stopped because we refused (``_Refused``): answered already
        super().send_400_response(msg)

    def _refuse(self, refusal: Refusal) -> None:
        self._refused = True
        self._settle()
        self._guard.refused(refusal)
        if not self.transport.is_closing():
            self.transport.write(refusal_bytes(refusal))
            self.transport.close()
