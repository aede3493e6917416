"""Issue 17's latency verdicts (bench/latency.py): ratios to the bare asyncio peer, the
Kafka hop subtracted or not, and below websockets.broadcast, from a made-up result."""

from __future__ import annotations

from collections.abc import Callable
from types import ModuleType
from typing import Any

import pytest


@pytest.fixture
def latency(bench_script: Callable[[str], ModuleType]) -> ModuleType:
    return bench_script("latency")


def _step(rate: float, p50: float, p99: float, hop: float | None = None) -> dict[str, Any]:
    step: dict[str, Any] = {
        "rate": rate,
        "cumulative_losses": 0,
        "loadavg": "2.50 2.00 1.00",
        "loadgen": {"latency_ms": {"p50": p50, "p95": p99, "p99": p99, "max": p99}},
    }
    if hop is not None:
        step["kafka_hop_ms"] = {"p50": hop, "p99": 2 * hop, "samples": 10}
    return step


def _result() -> dict[str, Any]:
    def run(target: str, clients: str, steps: list[dict[str, Any]]) -> dict[str, Any]:
        return {"target": target, "clients": clients, "connections": 10_000, "steps": steps}

    return {
        "connections": 10_000,
        "rates": [2.0, 5.0],
        "seconds": 8,
        "loadavg_start": "2.0 2.0 2.0",
        "loadavg_end": "3.0 2.0 2.0",
        "runs": [
            run("bare-asyncio", "native", [_step(2, 100, 200), _step(5, 100, 300)]),
            run("websockets.broadcast", "native", [_step(2, 160, 400), _step(5, 120, 350)]),
            run(
                "clarion-uvicorn",
                "one-per-frame",
                [_step(2, 140, 290, hop=10), _step(5, 170, 440, hop=20)],
            ),
        ],
    }


def test_ratios_and_verdicts_per_rate(latency: ModuleType) -> None:
    rows = latency.latency_rows(_result())
    assert [(r["rate"], r["clients"]) for r in rows] == [
        (2.0, "one-per-frame"),
        (5.0, "one-per-frame"),
    ]
    at2, at5 = rows
    assert at2["deliveries_per_s"] == 20_000
    assert at2["ratio"] == {"p50": 1.4, "p99": 1.45}
    assert at2["within_floor"] is True
    assert at2["below_websockets"] is True
    # 5/s: p50 1.7x and p99 1.47x the floor; with the hop's median (20 ms) taken off,
    # 1.5x and 1.4x: within. Above websockets.broadcast's 120 / 350 ms.
    assert at5["ratio"]["p50"] == 1.7
    assert at5["within_floor"] is False
    assert at5["ratio_less_hop"] == {"p50": 1.5, "p99": 1.4}
    assert at5["within_floor_less_hop"] is True
    assert at5["below_websockets"] is False


def test_table_prints_every_row_with_verdicts(latency: ModuleType) -> None:
    table = latency.latency_table(_result())
    lines = [line for line in table.splitlines() if line.startswith(("| 2 ", "| 5 "))]
    assert len(lines) == 2
    assert "| 140 / 290 | 10 / 20 | 100 / 200 | 160 / 400 | 1.40x, 1.45x |" in lines[0]
    assert lines[0].count("**met**") == 2
    assert "not met | not met" in lines[1]


def test_a_missing_peer_step_gives_no_verdict(latency: ModuleType) -> None:
    result = _result()
    result["runs"][0]["steps"] = result["runs"][0]["steps"][:1]  # bare peer saturated at 5/s
    at5 = latency.latency_rows(result)[1]
    assert "within_floor" not in at5
    assert "| - |" in latency.latency_table(result).splitlines()[-1]


def test_rounds_are_judged_by_their_median_and_counted(latency: ModuleType) -> None:
    """Three rounds; in the second, websockets.broadcast has a quick run and beats the
    worker's p99 at 2/s. The median of the rounds is below it; the row says 2 of 3."""
    rounds = []
    for index, (ws_p99, worker_p99) in enumerate(((400, 290), (280, 300), (390, 295))):
        result = _result()
        result["runs"][1]["steps"][0] = _step(2, 160, ws_p99)
        result["runs"][2]["steps"][0] = _step(2, 140, worker_p99, hop=10)
        rounds += [{**run, "round": index} for run in result["runs"]]
    result = {**_result(), "runs": rounds}
    at2 = latency.latency_rows(result)[0]
    assert at2["worker"] == {"p50": 140, "p99": 295}
    assert at2["websockets"] == {"p50": 160, "p99": 390}
    assert at2["below_websockets"] is True
    assert (at2["rounds"], at2["rounds_below_websockets"], at2["rounds_within_floor"]) == (3, 2, 3)
    table = latency.latency_table(result)
    assert "median of 3 rounds" in table
    assert "**met** (2 of 3 rounds)" in table.splitlines()[4]


def test_a_server_saturated_in_one_round_is_judged_on_the_others(latency: ModuleType) -> None:
    first, second = _result(), _result()
    first["runs"][0]["steps"] = first["runs"][0]["steps"][:1]  # bare peer saturated at 5/s
    second["runs"][0]["steps"][1] = _step(5, 80, 240)
    runs = [{**run, "round": 0} for run in first["runs"]]
    runs += [{**run, "round": 1} for run in second["runs"]]
    at5 = latency.latency_rows({**_result(), "runs": runs})[1]
    assert at5["bare"] == {"p50": 80, "p99": 240}
    assert at5["rounds_within_floor"] == 0


def test_every_round_runs_every_server_once_in_an_order_rotated_by_one(
    latency: ModuleType,
) -> None:
    schedule = latency.latency_schedule(3)
    servers = latency.LATENCY_TARGETS
    assert len(schedule) == 3 * len(servers)
    for index in range(3):
        order = [(kind, batch) for r, kind, batch in schedule if r == index]
        assert sorted(order, key=str) == sorted(servers, key=str)
        assert order[0] == servers[index]  # a different server first each round
