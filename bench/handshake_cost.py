"""Per-handshake cost of the worker (issue 17, W4): token verification and whole handshakes.

    .venv/bin/python bench/handshake_cost.py verify [--tokens 2000]
    .venv/bin/python bench/handshake_cost.py head [--heads 20000]
    .venv/bin/python bench/handshake_cost.py connect [--conns 2000]   # needs the local stack

``verify``: ``TokenVerifier.verify`` in this process on distinct HS256 tokens (the bench's
own, one per connection): microseconds per call, the best of several rounds (the least
disturbed by other processes on a shared machine), and a cProfile of one round.
``head``: websockets' part of one upgrade, the two ways the worker can take it: as
uvicorn hands it over (the head httptools parsed written back to bytes and parsed again
by websockets) and as ``DirectWebSocketProtocol.receive_head`` does (``request_of`` and a
frame parser), each followed by ``accept`` and the 101 response: microseconds per head,
the best of several rounds, on a browser-like head with a token subprotocol.
``connect``: a real worker (uvicorn, pinned to core 0) and the Go load generator opening
``--conns`` WebSocket connections with a token each (batch clients, as in W4): the
worker's CPU seconds from the first dial to the last welcome, per connection. Both print
one JSON document; compare a checkout before and after with ``PYTHONPATH=<its worker>``.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import json
import pstats
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from clarion_contract.worker_config import AuthSettings
from clarion_devstack.harness import AUDIENCE, ISSUER, Keys
from clarion_worker.core.auth import TokenVerifier

BENCH = Path(__file__).resolve().parent


def verify_cost(count: int, rounds: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="clarion-hs-") as folder:  # the HMAC key's
        return _verify_cost(Keys(Path(folder)), count, rounds)


def _verify_cost(keys: Keys, count: int, rounds: int) -> dict[str, Any]:
    settings = AuthSettings(
        mode="jwt",
        algorithms=("HS256",),
        audience=AUDIENCE,
        issuer=ISSUER,
        hmac_secret_file=str(keys.hmac_file),
    )
    verifier = TokenVerifier(settings, hmac_secret=keys.hmac_secret)
    tokens = [keys.token([f"org-{i % 100:03d}"], f"u{i}") for i in range(count)]
    now = time.time()
    per_call: list[float] = []
    for _ in range(rounds):
        started = time.perf_counter()
        for token in tokens:
            verifier.verify(token, now=now)
        per_call.append((time.perf_counter() - started) / count * 1e6)
    profile = cProfile.Profile()
    profile.enable()
    for token in tokens:
        verifier.verify(token, now=now)
    profile.disable()
    text = io.StringIO()
    pstats.Stats(profile, stream=text).sort_stats("cumulative").print_stats(12)
    return {
        "what": "TokenVerifier.verify, HS256, distinct tokens",
        "tokens": count,
        "rounds_us_per_call": [round(v, 1) for v in per_call],
        "best_us_per_call": round(min(per_call), 1),
        "median_us_per_call": round(sorted(per_call)[len(per_call) // 2], 1),
        "profile_top": text.getvalue().splitlines()[:40],
    }


_HEAD: list[tuple[bytes, bytes]] = [
    (b"host", b"127.0.0.1:8080"),
    (b"user-agent", b"Mozilla/5.0 (X11; Linux x86_64) Chrome/131.0"),
    (b"connection", b"Upgrade"),
    (b"upgrade", b"websocket"),
    (b"origin", b"https://dashboard.example"),
    (b"sec-websocket-version", b"13"),
    (b"sec-websocket-key", b"dGhlIHNhbXBsZSBub25jZQ=="),
    (b"sec-websocket-protocol", b"clarion.v1, bearer." + b"t" * 180),
]
_TARGET = b"/ws/dashboard?lastId=AQABXbd8yPsApVUBAA"


def head_cost(count: int, rounds: int) -> dict[str, Any]:
    from websockets.protocol import Protocol
    from websockets.server import ServerProtocol

    from clarion_worker.direct import request_of, serialized_head

    def reparsed() -> None:  # uvicorn's handle_websocket_upgrade, then websockets
        conn = ServerProtocol()
        conn.receive_data(serialized_head("GET", _TARGET, _HEAD))
        (request,) = conn.events_received()
        conn.send_response(conn.accept(request))  # type: ignore[arg-type]
        conn.data_to_send()

    def handed_over() -> None:  # DirectWebSocketProtocol.receive_head
        conn = ServerProtocol()
        request = request_of("GET", _TARGET, _HEAD)
        assert request is not None
        parser = Protocol.parse(conn)
        next(parser)
        conn.parser = parser
        conn.send_response(conn.accept(request))
        conn.data_to_send()

    result: dict[str, Any] = {"what": "websockets' part of one upgrade", "heads": count}
    for name, step in (("reparsed_us", reparsed), ("handed_over_us", handed_over)):
        per_head: list[float] = []
        for _ in range(rounds):
            started = time.perf_counter()
            for _ in range(count):
                step()
            per_head.append((time.perf_counter() - started) / count * 1e6)
        result[name] = {"best": round(min(per_head), 1), "rounds": [round(v, 1) for v in per_head]}
    return result


async def connect_cost(conns: int, profile: bool) -> dict[str, Any]:
    sys.path.insert(0, str(BENCH))
    import run  # type: ignore[import-not-found]  # bench/run.py

    args = argparse.Namespace(keep=False)
    with run.bench_context(args) as bench:
        topics = await bench.topics()
        server = bench.clarion("hs", topics)
        tokens = str(bench.tokens(conns, 100))
        try:
            load = run.loadavg()
            server.mark()
            started_cpu = run.cpu_seconds(server.pid)
            spy = run.start_profile(bench, server.pid, 15, "hs") if profile else None
            gen = bench.loadgen("hs", server.url, conns, "-tokens", tokens, "-batch")
            try:
                ready = gen.ready(timeout=400)
                used = float(run.cpu_seconds(server.pid)) - float(started_cpu)
            finally:
                gen.close()
            summary = spy.finish(timeout=60, top=30) if spy is not None else None
            return {
                "what": "worker CPU from first dial to last welcome, per connection",
                "connections": ready["connected"],
                "dial_fails": ready.get("dial_fails"),
                "wall_seconds": ready["seconds"],
                "worker_cpu_seconds": round(used, 3),
                "worker_cpu_ms_per_connection": round(1000 * used / max(ready["connected"], 1), 3),
                "loadavg": load,
                "profile": summary,
            }
        finally:
            server.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("mode", choices=("verify", "head", "connect"))
    parser.add_argument("--tokens", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--heads", type=int, default=20000)
    parser.add_argument("--conns", type=int, default=2000)
    parser.add_argument("--profile", action="store_true", help="connect: py-spy the worker")
    args = parser.parse_args()
    import clarion_worker

    result: dict[str, Any] = {"worker": str(Path(clarion_worker.__file__).parent)}
    if args.mode == "verify":
        result |= verify_cost(args.tokens, args.rounds)
    elif args.mode == "head":
        result |= head_cost(args.heads, args.rounds)
    else:
        result |= asyncio.run(connect_cost(args.conns, args.profile))
    result["loadavg_end"] = Path("/proc/loadavg").read_text().strip()
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
