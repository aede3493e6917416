"""The W2 round target (bench/report.py ``round_table``): p99 against one fan-out round,
timed by dispatch plus write passes since events alone in their fetch skip the pass."""

from __future__ import annotations

from collections.abc import Callable
from types import ModuleType
from typing import Any


def _run(key: str, rounds: tuple[float, float], p99s: tuple[float, float]) -> dict[str, Any]:
    steps = [
        {
            "rate": rate,
            "cumulative_losses": 0,
            "catch_up_s": 0.1,
            key: round_ms,
            "loadgen": {"latency_ms": {"p99": p99}},
        }
        for rate, round_ms, p99 in zip((1.0, 2.0), rounds, p99s, strict=True)
    ]
    return {"target": "clarion-uvicorn", "clients": "batch", "connections": 10_000, "steps": steps}


def test_the_round_is_the_first_steps_dispatch_plus_passes(
    bench_script: Callable[[str], ModuleType],
) -> None:
    report = bench_script("report")
    table = report.round_table([_run("round_ms_mean", (100.0, 5.0), (140.0, 160.0))])
    rows = [line for line in table.splitlines() if line.startswith("| clarion")]
    # Both steps against the first step's round (100 ms), not each step's own.
    assert [row.split(" | ")[2:] for row in rows] == [
        ["100", "1.0", "140", "1.40", "met |"],
        ["100", "2.0", "160", "1.60", "not met |"],
    ]


def test_older_result_files_timed_the_round_by_the_pass_alone(
    bench_script: Callable[[str], ModuleType],
) -> None:
    report = bench_script("report")
    table = report.round_table([_run("write_pass_ms_mean", (200.0, 5.0), (250.0, 260.0))])
    assert "| 200 | 1.0 | 250 | 1.25 | met |" in table
