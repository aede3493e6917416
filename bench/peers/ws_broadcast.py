"""The Python ceiling: a bare ``websockets.broadcast`` server, nothing else.

Clients connect to ``/ws`` and only receive. One publisher connects to ``/publish``;
every text frame it sends is handed as it is to ``websockets.broadcast`` for all clients.
No routing, no auth, no queues, no metrics: the least work a Python server can do per
delivery (one frame built once, written to each socket without awaiting it).

    python bench/peers/ws_broadcast.py --host 127.0.0.1 --port 8765
"""

from __future__ import annotations

import argparse
import asyncio

import websockets
from websockets.asyncio.server import ServerConnection, serve

CLIENTS: set[ServerConnection] = set()


async def handler(connection: ServerConnection) -> None:
    path = connection.request.path if connection.request else "/ws"
    if path.startswith("/publish"):
        async for message in connection:
            websockets.broadcast(CLIENTS, message)
        return
    CLIENTS.add(connection)
    try:
        await connection.wait_closed()
    finally:
        CLIENTS.discard(connection)


async def main(host: str, port: int) -> None:
    async with serve(handler, host, port, compression=None, backlog=4096, max_queue=16):
        print(f"ws_broadcast listening on {host}:{port}", flush=True)
        await asyncio.Future()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765)
    args = parser.parse_args()
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    asyncio.run(main(args.host, args.port))
