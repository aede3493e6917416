"""The benchmark runner's smoke mode: builds the Go load generator, drives one worker with
both client kinds and the bare asyncio peer, and must report well-formed results with no
loss, gap or duplicate."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

CHECKOUT = Path(__file__).resolve().parents[2]


@pytest.mark.timeout(180)
@pytest.mark.usefixtures("local_stack")
def test_bench_smoke_reports_every_delivery() -> None:
    run = subprocess.run(
        [sys.executable, str(CHECKOUT / "bench/run.py"), "--smoke"],
        capture_output=True,
        text=True,
        timeout=170,
        check=False,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads(run.stdout)
    smoke = result["smoke"]
    assert smoke["produced"] > 0
    assert smoke["losses"] == 0
    assert smoke["gaps"] == 0
    assert smoke["duplicates"] == 0
    for kind in ("batch", "one-per-frame"):
        client = smoke["clients"][kind]
        assert client["connected"] == smoke["connections"][kind] > 0
        assert client["events"] > 0
        assert set(client["latency_ms"]) == {"p50", "p95", "p99", "max"}
        # The load generator decoded every frame it counted: that is CPU time, not zero.
        assert client["cpu_seconds"] > 0
    # Issue 17's floor: the bare asyncio peer speaks the load generator's plain dialect
    # and delivers every broadcast to every client, in order.
    bare = smoke["peers"]["bare-asyncio"]
    assert bare["connected"] == bare["connections"] > 0
    assert bare["produced"] > 0
    assert bare["events"] == bare["produced"] * bare["connections"]
    assert bare["losses"] == 0
    assert bare["gaps"] == 0
    assert bare["duplicates"] == 0
    assert result["loadavg_start"]
    assert result["loadavg_end"]
