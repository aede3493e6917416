"""The floor of Python on one core: a bare asyncio WebSocket server, nothing else.

Issue 17's latency peer. Clients connect to ``/ws`` and only receive. One publisher
connects to ``/publish``; every text frame it sends becomes one server frame, built once,
and is written with one ``transport.write`` per client, in one loop, with no await. No
auth, no routing, no queues, no per-client state beyond the transport, no metrics. uvloop.
Any request that is not a WebSocket upgrade gets ``200 ok`` (the bench's readiness probe).

    python bench/peers/bare_asyncio.py --host 127.0.0.1 --port 8766

Only the framing the load generator and the publisher need is implemented: the RFC 6455
handshake, unmasking of client frames, text/ping/close opcodes, no fragmentation, no
extensions (clients offer none: the bench turns compression off).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
from typing import cast

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
MAX_REQUEST = 16384


def accept_key(key: bytes) -> bytes:
    return base64.b64encode(hashlib.sha1(key + GUID).digest())  # RFC 6455


def server_frame(opcode: int, payload: bytes) -> bytes:
    """One unmasked, final frame (the server side of RFC 6455)."""
    size = len(payload)
    if size < 126:
        header = bytes((0x80 | opcode, size))
    elif size < 1 << 16:
        header = bytes((0x80 | opcode, 126)) + size.to_bytes(2, "big")
    else:
        header = bytes((0x80 | opcode, 127)) + size.to_bytes(8, "big")
    return header + payload


def parse_frames(buffer: bytearray) -> list[tuple[int, bytes]]:
    """Complete client frames at the start of ``buffer`` (removed from it): (opcode, payload)."""
    frames: list[tuple[int, bytes]] = []
    while len(buffer) >= 2:
        opcode = buffer[0] & 0x0F
        masked = buffer[1] & 0x80
        size = buffer[1] & 0x7F
        at = 2
        if size == 126:
            if len(buffer) < 4:
                break
            size = int.from_bytes(buffer[2:4], "big")
            at = 4
        elif size == 127:
            if len(buffer) < 10:
                break
            size = int.from_bytes(buffer[2:10], "big")
            at = 10
        mask = b""
        if masked:
            mask = bytes(buffer[at : at + 4])
            at += 4
        if len(buffer) < at + size:
            break
        payload = bytes(buffer[at : at + size])
        del buffer[: at + size]
        if mask:
            key = int.from_bytes((mask * (size // 4 + 1))[:size], "big")
            payload = (int.from_bytes(payload, "big") ^ key).to_bytes(size, "big")
        frames.append((opcode, payload))
    return frames


CLIENTS: set[asyncio.Transport] = set()


class Connection(asyncio.Protocol):
    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.upgraded = False
        self.publisher = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = cast(asyncio.Transport, transport)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.transport is not None:
            CLIENTS.discard(self.transport)

    def data_received(self, data: bytes) -> None:
        transport = self.transport
        assert transport is not None
        self.buffer += data
        if not self.upgraded:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                if len(self.buffer) > MAX_REQUEST:
                    transport.close()
                return
            self.handshake(transport, bytes(self.buffer[:end]))
            del self.buffer[: end + 4]
            if not self.upgraded:
                return
        if self.publisher:
            self.publish(transport)
        elif len(self.buffer) > 1:
            for opcode, payload in parse_frames(self.buffer):
                if opcode == 0x8:
                    transport.write(server_frame(0x8, payload[:2]))
                    transport.close()

    def handshake(self, transport: asyncio.Transport, head: bytes) -> None:
        lines = head.split(b"\r\n")
        parts = lines[0].split(b" ")
        path = parts[1] if len(parts) > 1 else b"/"
        key = b""
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"sec-websocket-key":
                key = value.strip()
        if not key:
            transport.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
            transport.close()
            return
        transport.write(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
            b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + accept_key(key) + b"\r\n\r\n"
        )
        self.upgraded = True
        if path.startswith(b"/publish"):
            self.publisher = True
        else:
            CLIENTS.add(transport)

    def publish(self, transport: asyncio.Transport) -> None:
        for opcode, payload in parse_frames(self.buffer):
            if opcode == 0x1:
                frame = server_frame(0x1, payload)  # built once
                for client in CLIENTS:
                    client.write(frame)  # one write per client, never awaited
            elif opcode == 0x9:
                transport.write(server_frame(0xA, payload))
            elif opcode == 0x8:
                transport.write(server_frame(0x8, payload[:2]))
                transport.close()


async def main(host: str, port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(Connection, host, port, backlog=4096)
    print(f"bare_asyncio listening on {host}:{port}", flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8766)
    args = parser.parse_args()
    import uvloop

    uvloop.install()
    asyncio.run(main(args.host, args.port))
