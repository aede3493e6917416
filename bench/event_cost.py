"""What one event costs a worker before any delivery (issue 17, docs/scaling.md).

    .venv/bin/python bench/event_cost.py [--rate 2000] [--seconds 8]   # needs the local stack

A worker (uvicorn, pinned to core 0) with no client at all, fed ``--rate`` events/s from
Kafka for ``--seconds`` (organization events over 100 organizations, the bench's
envelope of ~250 bytes): every replica of a channel consumes, decodes and routes every
event of the channel, whether or not one of its clients is a recipient. The worker's CPU
seconds over the events it consumed is that per-event cost; the idle CPU of the same
worker over the same time (heartbeat timers, metrics) is measured first and subtracted.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent


async def measure(rate: float, seconds: float, profile: bool = False) -> dict[str, Any]:
    sys.path.insert(0, str(BENCH))
    import run  # type: ignore[import-not-found]  # bench/run.py

    with run.bench_context(argparse.Namespace(keep=False)) as bench:
        topics = await bench.topics()
        server = bench.clarion("events", topics)
        publisher, producer = await run.kafka_publisher(bench.bootstrap, topics)
        try:
            server.mark()
            await asyncio.sleep(seconds)
            idle_cpu = float(run.cpu_seconds(server.pid)) - server._cpu_mark
            load = run.loadavg()

            def pick(n: int) -> tuple[str, str | None]:
                org = run.org_of(n * 7919, 100)
                return org, org

            server.mark()
            started = time.monotonic()
            spy = run.start_profile(bench, server.pid, seconds, "events") if profile else None
            sent = await run.paced(publisher, rate, seconds, pick)
            # The worker may still be consuming the tail: wait until its CPU stops moving.
            last = -1.0
            while True:
                await asyncio.sleep(1)
                used = float(run.cpu_seconds(server.pid)) - server._cpu_mark
                if used - last < 0.02 * max(idle_cpu, 0.05) + 0.01:
                    break
                last = used
            elapsed = time.monotonic() - started
            net = used - idle_cpu * elapsed / seconds
            summary = spy.finish(timeout=60, top=30) if spy is not None else None
            return {
                "what": "worker CPU per consumed event, no client connected (idle subtracted)",
                "events": sent,
                "events_per_s": round(sent / seconds),
                "worker_cpu_seconds": round(used, 3),
                "idle_cpu_seconds_per_s": round(idle_cpu / seconds, 4),
                "us_per_event": round(1e6 * net / max(sent, 1), 1),
                "loadavg": load,
                "profile": summary,
            }
        finally:
            await producer.stop()
            server.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--rate", type=float, default=2000)
    parser.add_argument("--seconds", type=float, default=8)
    parser.add_argument("--profile", action="store_true", help="py-spy the worker")
    args = parser.parse_args()
    result = asyncio.run(measure(args.rate, args.seconds, args.profile))
    result["loadavg_end"] = Path("/proc/loadavg").read_text().strip()
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
