"""A Clarion client with the mobile reconnect policy: what apps, scripts, tests,
benchmarks and ``clarion tail`` use, and the reference for the other client libraries.

- Resume: the id of the last event received is sent as ``lastId`` on every reconnect,
  so the server replays what was missed (or answers ``reset``).
- Reconnect: exponential backoff with full jitter, capped at 60 s, reset after a stable
  connection; a drain's ``reconnect`` advice is honoured with its own delay.
- Refusals: the server accepts, sends an ``error`` frame and closes with a 4xxx code.
  4004 (token expired) asks ``token_provider`` for a fresh token and reconnects at once;
  without one, or when it has nothing new, the client stops (``ClientRejectedError``), as
  it does on codes that retrying cannot fix (4001, 4003, 4009, 1003, 1009): retrying
  those forever is what the browser clients did when all they saw was 1006.
- Heartbeat: an application-level ``ping`` every ``heartbeat_seconds`` (the seed app's 30 s);
  no frame at all within ``heartbeat_timeout`` after it means the connection is dead
  (a frozen or unplugged server never closes it): drop it and reconnect.
- Replicas: ``url`` may be a list, one URL per replica; every reconnect moves to the next
  (round robin), so a killed or draining replica's clients resume elsewhere.
- States: ``on_state(state, info)`` reports ``connecting`` (``url``), ``connected``
  (``replicaId``), ``reconnecting`` (``delay``, ``code``, ``reason``) and ``closed``
  (``code``, ``reason``; terminal): the state machine of docs/clients.md.
- Stickiness: cookies set on the handshake (a load balancer's affinity cookie) are sent
  back on reconnect, as a browser would.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode, urlsplit, urlunsplit

import httpx
import websockets
from websockets.asyncio.client import ClientConnection, connect

from clarion_client.backoff import Backoff
from clarion_contract.close_codes import CloseCode


class ClientRejectedError(RuntimeError):
    """The server refused us for a reason that retrying will not fix (auth, protocol)."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(f"closed with {code}: {reason}")
        self.code = code
        self.reason = reason


@dataclass
class ClientStats:
    connects: int = 0
    resets: int = 0
    reconnect_advice: int = 0
    replicas: list[str] = field(default_factory=list)
    close_codes: list[int] = field(default_factory=list)


_TERMINAL = {int(c) for c in CloseCode if not c.client_should_reconnect}
#: HTTP refusals before the upgrade (older workers; heads too large) that retrying
#: cannot fix. 408 and 503 are worth a retry with backoff.
_DENIED_TERMINAL = {401, 403, 414, 431}
#: SSE refusals keep HTTP statuses; clients report the WebSocket close code instead.
_SSE_REFUSALS = {401: int(CloseCode.UNAUTHORIZED), 403: int(CloseCode.FORBIDDEN)}


#: What ``on_state`` receives: the state's name and its details.
StateCallback = Callable[[str, dict[str, Any]], None]


class ClarionClient:
    def __init__(
        self,
        url: str | list[str],
        token: str | None = None,
        *,
        last_id: str | None = None,
        batch: bool = False,
        event_types: list[str] | None = None,
        heartbeat_seconds: float = 30.0,
        heartbeat_timeout: float = 10.0,
        rng: random.Random | None = None,
        transport: str = "ws",
        backoff_base: float = 1.0,
        backoff_cap: float = 60.0,
        extra_headers: Mapping[str, str] | None = None,
        on_welcome: Callable[[dict[str, Any]], None] | None = None,
        token_provider: Callable[[], Awaitable[str | None]] | None = None,
        on_state: StateCallback | None = None,
    ) -> None:
        self.urls = [url] if isinstance(url, str) else list(url)
        if not self.urls:
            raise ValueError("no URL to connect to")
        self.url = self.urls[0]
        self.token = token
        self.last_id = last_id
        self.batch = batch
        if transport not in ("ws", "sse"):
            raise ValueError(f"transport must be 'ws' or 'sse', not {transport!r}")
        #: "ws", or "sse" (Server-Sent Events; ``url`` then names the SSE path).
        self.transport = transport
        self.event_types = event_types
        self.heartbeat_seconds = heartbeat_seconds
        self.heartbeat_timeout = heartbeat_timeout
        self.backoff = Backoff(rng or random.Random(), base=backoff_base, cap=backoff_cap)
        self.extra_headers = dict(extra_headers or {})
        self.cookies: dict[str, str] = {}
        self.stats = ClientStats()
        self.on_welcome = on_welcome
        #: Called for the first token when none is given, and after a 4004 close: a
        #: fresh token, or None to give up.
        self.token_provider = token_provider
        self.on_state = on_state
        #: The last state reported; ``closed`` is terminal.
        self.state: str | None = None
        #: Code and reason of the last close (1006 when there was no close frame).
        self._last_close: tuple[int, str] = (1006, "")
        self._frame_seen = asyncio.Event()
        self._heartbeat_lost = False
        self._attempts = 0
        #: The last ``error`` frame the server sent (its reason for the close after it).
        self.last_error: dict[str, Any] | None = None
        self.replica: str | None = None
        self._ws: ClientConnection | None = None
        self._sse: httpx.Response | None = None
        self._closing = False

    def _target(self) -> str:
        parts = urlsplit(self.url)
        query = [item for item in parts.query.split("&") if item and not item.startswith("lastId=")]
        if self.last_id:
            query.append(urlencode({"lastId": self.last_id}))
        return urlunsplit(parts._replace(query="&".join(query)))

    def _headers(self) -> dict[str, str]:
        headers = dict(self.extra_headers)
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        if self.cookies:
            headers["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        return headers

    def _remember_cookies(self, ws: ClientConnection) -> None:
        response = ws.response
        if response is None:
            return
        for value in response.headers.get_all("Set-Cookie"):
            name, _, rest = value.partition("=")
            self.cookies[name.strip()] = rest.split(";", 1)[0].strip()

    def is_closing(self) -> bool:
        return self._closing

    def _emit(self, state: str, **info: Any) -> None:
        if self.state == "closed":
            return  # terminal: nothing follows it
        self.state = state
        if self.on_state is not None:
            self.on_state(state, info)

    async def close(self) -> None:
        self._closing = True
        self._emit("closed", code=1000, reason="closed by the client")
        if self._ws is not None:
            await self._ws.close()
        if self._sse is not None:
            await self._sse.aclose()

    async def events(self) -> AsyncIterator[dict[str, Any]]:
        """Every event meant for us, across reconnects, until ``close()``."""
        if self.token is None and self.token_provider is not None:
            self.token = await self.token_provider()
        while not self.is_closing():
            delay: float | None = None
            self._last_close = (1006, "")
            try:
                async for event in self._session():
                    yield event
            except ClientRejectedError as rejected:
                self._emit("closed", code=rejected.code, reason=rejected.reason)
                raise
            except _TokenRefreshed:
                if self.is_closing():
                    return
                self._emit("reconnecting", delay=0.0, code=4004, reason="expired")
                self._next_url()
                continue  # a fresh token: straight back, no backoff
            except _ReconnectAdvice as advice:
                delay = advice.seconds
                self._last_close = (int(CloseCode.DRAIN), advice.reason)
            except (
                OSError,
                websockets.exceptions.WebSocketException,
                TimeoutError,
                httpx.HTTPError,
            ) as error:
                if not self._last_close[1]:  # unless the session said why already
                    self._last_close = (1006, str(error) or type(error).__name__)
            if self.is_closing():
                return
            self.backoff.disconnected(time.monotonic())
            if delay is None:
                delay = self.backoff.next_delay()
            code, reason = self._last_close
            self._emit("reconnecting", delay=delay, code=code, reason=reason)
            self._next_url()
            await asyncio.sleep(delay)

    def _next_url(self) -> None:
        """Round robin over the replicas: each reconnect tries the next one."""
        self._attempts += 1
        self.url = self.urls[self._attempts % len(self.urls)]

    async def _session(self) -> AsyncIterator[dict[str, Any]]:
        if self.transport == "sse":
            async for item in self._sse_session():
                yield item
            return
        subprotocols = ["clarion.batch.v1" if self.batch else "clarion.v1"]
        self._emit("connecting", url=self.url)
        try:
            ws = await connect(
                self._target(),
                additional_headers=self._headers(),
                subprotocols=subprotocols,  # type: ignore[arg-type]
                compression=None,
                open_timeout=10,
                max_size=None,
                ping_interval=None,
            )
        except websockets.exceptions.InvalidStatus as error:
            status = error.response.status_code
            if status in _DENIED_TERMINAL:
                raise ClientRejectedError(
                    status, error.response.body.decode(errors="replace")
                ) from error
            self._last_close = (1006, f"HTTP {status}")
            raise
        self._ws = ws
        self.last_error = None
        self._heartbeat_lost = False
        self._remember_cookies(ws)
        self.stats.connects += 1
        self.backoff.connected(time.monotonic())
        heartbeat = asyncio.create_task(self._heartbeat(ws))
        try:
            if self.event_types:
                await ws.send(json.dumps({"type": "subscribe", "eventTypes": self.event_types}))
            # Iterating ends quietly on 1000/1001 only and raises on every other code,
            # which is exactly when the code matters (4004, 4001, ...): read it below.
            with contextlib.suppress(websockets.exceptions.ConnectionClosedError):
                async for raw in ws:
                    self._frame_seen.set()
                    try:
                        for item in self._on_frame(json.loads(raw)):
                            yield item
                    except _ReconnectAdvice:
                        await ws.close()
                        raise
            code = ws.close_code or 1006
            last: dict[str, Any] = self.last_error or {}  # set by frames, meanwhile
            reason = str(last.get("message") or ws.close_reason or "")
            if self._heartbeat_lost:
                code, reason = 1006, "heartbeat timeout"
            await self._closed(code, reason)
        finally:
            heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await heartbeat
            self._ws = None

    def _on_frame(self, message: dict[str, Any]) -> list[dict[str, Any]]:
        """Act on one server frame (either transport); return what to hand the app."""
        kind = message.get("type")
        if kind == "event":
            self.last_id = message["id"]
            return [message]
        if kind == "batch":
            for event in message["events"]:
                self.last_id = event["id"]
            return list(message["events"])
        if kind == "welcome":
            if self.last_id is None and message.get("position"):
                # No event yet: resume from "when we joined" after a disconnect.
                self.last_id = message["position"]
            self.replica = message.get("replicaId")
            self.stats.replicas.append(self.replica or "")
            self._emit("connected", replicaId=self.replica)
            if self.on_welcome:
                self.on_welcome(message)
        elif kind == "reset":
            # The server cannot replay what we missed: refetch state, start live.
            self.stats.resets += 1
            self.last_id = None
            return [message]
        elif kind == "reconnect":
            self.stats.reconnect_advice += 1
            raise _ReconnectAdvice(message.get("afterMs", 0) / 1000, str(message.get("reason", "")))
        elif kind == "error":
            self.last_error = message
        return []

    async def _closed(self, code: int, reason: str) -> None:
        """The session ended with ``code``: stop, refresh the token, or let it retry."""
        self.stats.close_codes.append(code)
        self._last_close = (code, reason)
        if code in _TERMINAL:
            raise ClientRejectedError(code, reason)
        if code == CloseCode.TOKEN_EXPIRED:
            await self._refresh_token(reason)

    async def _sse_session(self) -> AsyncIterator[dict[str, Any]]:
        """The same session over Server-Sent Events: HTTP statuses for refusals, the
        ``error`` frame's code for closes, ``: ping`` comments as the heartbeat."""
        self._emit("connecting", url=self.url)
        headers = {**self._headers(), "Accept": "text/event-stream"}
        self.last_error = None
        # No frame at all (not even the server's ``: ping``) for its heartbeat interval
        # plus our timeout: the stream is dead although it never ended.
        silence = 30.0 + self.heartbeat_timeout
        async with (
            httpx.AsyncClient(timeout=httpx.Timeout(10.0, read=None)) as http,
            http.stream("GET", self._target(), headers=headers) as response,
        ):
            if response.status_code != 200:
                body = (await response.aread()).decode(errors="replace")
                try:
                    error = str(json.loads(body).get("error", ""))
                except ValueError:
                    error = body[:200]
                status = response.status_code
                if status == 401 and error == "expired":
                    await self._closed(int(CloseCode.TOKEN_EXPIRED), error)
                if status in _DENIED_TERMINAL:
                    # The close code a WebSocket client would have seen, for the same reason.
                    await self._closed(_SSE_REFUSALS.get(status, status), error)
                self._last_close = (1006, f"HTTP {status} {error}")
                raise OSError(f"HTTP {status}")
            self.stats.connects += 1
            self.backoff.connected(time.monotonic())
            self._sse = response
            try:
                async for item in self._sse_frames(response, silence):
                    yield item
            finally:
                self._sse = None
        last: dict[str, Any] = self.last_error or {}  # set by frames, meanwhile
        await self._closed(int(last.get("code", 1006)), str(last.get("message", "")))

    async def _sse_frames(
        self, response: httpx.Response, silence: float
    ) -> AsyncIterator[dict[str, Any]]:
        """Frames of an SSE stream until it ends; silence longer than ``silence`` (the
        server's heartbeat interval plus ours, once the welcome told it) is a dead stream."""
        lines = response.aiter_lines()
        data: list[str] = []
        while True:
            try:
                line = await asyncio.wait_for(anext(lines), silence)
            except StopAsyncIteration:
                return
            except TimeoutError:
                self._last_close = (1006, "heartbeat timeout")
                raise
            if line.startswith("data:"):
                data.append(line[5:].removeprefix(" "))
            elif not line and data:
                message = json.loads("\n".join(data))
                data = []
                if message.get("type") == "welcome":
                    silence = float(message.get("heartbeatSeconds", 30)) + self.heartbeat_timeout
                for item in self._on_frame(message):
                    yield item

    async def _refresh_token(self, reason: str) -> None:
        """After 4004: reconnect with a fresh token, or stop (the same one is refused)."""
        fresh = await self.token_provider() if self.token_provider is not None else None
        if not fresh or fresh == self.token:
            raise ClientRejectedError(int(CloseCode.TOKEN_EXPIRED), reason or "token expired")
        self.token = fresh
        raise _TokenRefreshed

    async def _heartbeat(self, ws: ClientConnection) -> None:
        """Ping every ``heartbeat_seconds``; no frame within ``heartbeat_timeout`` after a
        ping (not even its ``pong``): the peer is gone without closing, cut the socket."""
        with contextlib.suppress(websockets.exceptions.ConnectionClosed):
            while True:
                await asyncio.sleep(self.heartbeat_seconds)
                self._frame_seen.clear()
                await ws.send('{"type":"ping"}')
                try:
                    await asyncio.wait_for(self._frame_seen.wait(), self.heartbeat_timeout)
                except TimeoutError:
                    self._heartbeat_lost = True
                    ws.transport.abort()
                    return


class _TokenRefreshed(Exception):  # noqa: N818 - control flow, not an error
    pass


class _ReconnectAdvice(Exception):  # noqa: N818 - control flow, not an error
    def __init__(self, seconds: float, reason: str = "") -> None:
        super().__init__(seconds)
        self.seconds = seconds
        self.reason = reason
