"""Where an idle connection's memory goes: tracemalloc inside one worker process.

    .venv/bin/python bench/memory.py --conns 2000

Starts the worker in this process (same settings as the benchmarks' workers), opens
``--conns`` idle connections with the Go load generator, and compares tracemalloc
snapshots taken before and after: Python bytes per connection, by allocation site.
RSS per connection (W3 in bench/run.py) adds what Python does not see (uvloop handles,
allocator slack). tracemalloc slows the process: never use it for timings.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import sys
import tracemalloc
from pathlib import Path
from typing import Any

import run as bench_run  # type: ignore[import-not-found]  # bench/run.py, beside this

from clarion_worker import server as worker_server


def rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


async def measure(conns: int, top: int, trace: bool = True) -> dict[str, Any]:
    with bench_run.bench_context(argparse.Namespace(keep=False)) as bench:
        topics = await bench.topics()
        config = bench.worker_config("memory", topics)
        port = bench_run.free_port()
        args = argparse.Namespace(
            config=str(config), host="127.0.0.1", port=port, log_level="warning"
        )
        environ = {
            key: value
            for key, value in os.environ.items()  # noqa: TID251 - this script is a process edge
            if not key.startswith("CLARION_")
        }
        server = worker_server.build_server(args, environ)
        sock = worker_server.listening_socket("127.0.0.1", port, stall_seconds=60)
        serving = asyncio.create_task(server.serve(sockets=[sock]))
        await server.runtime.consumer.ready.wait()
        while not server.started:  # noqa: ASYNC110 - uvicorn offers no event for this
            await asyncio.sleep(0.05)
        tokens = bench.tokens(conns, 100)
        gc.collect()
        rss_before = rss_kib()
        if trace:
            tracemalloc.start(1)
            before = tracemalloc.take_snapshot()
        url = f"ws://127.0.0.1:{port}/ws/dashboard"
        gen = bench.loadgen("memory", url, conns, "-tokens", str(tokens))
        try:
            ready = await asyncio.to_thread(gen.ready, 300)
            connected = int(ready["connected"])
            await asyncio.sleep(2)  # the last handshakes' buffers released
            gc.collect()
            rss_after = rss_kib()
            after = tracemalloc.take_snapshot() if trace else None
        finally:
            await asyncio.to_thread(gen.close)
        stats = after.compare_to(before, "lineno") if after is not None else []
        total = sum(stat.size_diff for stat in stats)
        server.should_exit = True
        await serving
        return {
            "connections": connected,
            # Without --no-trace, RSS includes tracemalloc's own records: compare like runs.
            "traced": trace,
            "rss_kib_per_connection": round((rss_after - rss_before) / max(connected, 1), 2),
            "python_kib_per_connection": round(total / 1024 / max(connected, 1), 2),
            "top": [
                {
                    "bytes_per_connection": round(stat.size_diff / max(connected, 1)),
                    "objects_per_connection": round(stat.count_diff / max(connected, 1), 2),
                    "site": str(stat.traceback[0]).replace(str(Path.home()), "~"),
                }
                for stat in stats[:top]
            ],
        }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--conns", type=int, default=2000)
    parser.add_argument("--top", type=int, default=15)
    parser.add_argument(
        "--no-trace", action="store_true", help="RSS only (tracemalloc inflates RSS)"
    )
    args = parser.parse_args(argv)
    result = asyncio.run(measure(args.conns, args.top, not args.no_trace))
    result["loadavg"] = Path("/proc/loadavg").read_text().strip()
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
