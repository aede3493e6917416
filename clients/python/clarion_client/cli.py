"""``clarion tail URL --token T``: print a channel's events as JSON lines, across
reconnects, resuming from the last id (the client's mobile reconnect policy)."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys

from clarion_client.client import ClarionClient, ClientRejectedError


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="clarion", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    tail = sub.add_parser("tail", help="stream events from a worker or load balancer URL")
    tail.add_argument("url", help="ws://host:port/ws/dashboard")
    tail.add_argument("--token", help="JWT (default $CLARION_TOKEN)")
    tail.add_argument("--last-id", help="resume after this event id")
    tail.add_argument("--types", help="comma-separated event types to receive")
    tail.add_argument("--batch", action="store_true", help="ask for batch frames")
    tail.add_argument("--count", type=int, default=0, help="stop after N events")
    return parser.parse_args(argv)


async def _tail(args: argparse.Namespace, token: str | None) -> int:
    client = ClarionClient(
        args.url,
        token,
        last_id=args.last_id,
        batch=args.batch,
        event_types=args.types.split(",") if args.types else None,
        on_welcome=lambda w: print(json.dumps(w), file=sys.stderr, flush=True),
    )
    seen = 0
    try:
        async for event in client.events():
            print(json.dumps(event, ensure_ascii=False), flush=True)
            seen += 1
            if args.count and seen >= args.count:
                await client.close()
                break
    except ClientRejectedError as error:
        print(f"clarion: rejected: {error}", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    token = args.token or os.environ.get("CLARION_TOKEN")  # noqa: TID251 - the process edge
    try:
        return asyncio.run(_tail(args, token))
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
