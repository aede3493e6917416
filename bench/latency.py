"""Issue 17's latency table, from the ``latency`` part of a bench/run.py result.

The worker against the bare asyncio peer (the floor of Python on one core) and
``websockets.broadcast``, same connections, same broadcast rates, same run. Pure (no
plotting library), so its arithmetic is unit-tested (tests/bench/test_latency_table.py);
bench/report.py prints it.
"""

from __future__ import annotations

from typing import Any

Json = dict[str, Any]


#: Issue 17: the worker's p50 and p99 within this factor of the bare asyncio peer's.
FLOOR_RATIO = 1.5


def _step_at(run: Json | None, rate: float) -> Json | None:
    if run is None:
        return None
    return next((s for s in run["steps"] if float(s["rate"]) == float(rate)), None)


def latency_rows(latency: Json) -> list[Json]:
    """One row per broadcast rate and kind of Clarion client: the worker's p50/p99, the
    Kafka hop measured beside it, both peers' p50/p99 at the same rate, the ratios, and
    the verdicts of issue 17 (within 1.5x of the bare peer; below websockets.broadcast).

    The verdicts use the worker's end-to-end figures, Kafka hop included (the peers have
    none); ``ratio_less_hop`` subtracts the hop's median from the worker's p50 and p99.
    """
    runs: list[Json] = latency["runs"]
    bare = next((r for r in runs if r["target"] == "bare-asyncio"), None)
    ws = next((r for r in runs if r["target"] == "websockets.broadcast"), None)
    rows: list[Json] = []
    for run in runs:
        if not run["target"].startswith("clarion"):
            continue
        for rate in latency["rates"]:
            step = _step_at(run, rate)
            floor = _step_at(bare, rate)
            other = _step_at(ws, rate)
            if step is None:
                continue
            worker = step["loadgen"]["latency_ms"]
            row: Json = {
                "rate": rate,
                "deliveries_per_s": round(rate * run["connections"]),
                "clients": run["clients"],
                "worker": {"p50": worker["p50"], "p99": worker["p99"]},
                "kafka_hop": step.get("kafka_hop_ms"),
                "lost": step["cumulative_losses"],
                "loadavg": step["loadavg"].split()[0],
            }
            hop = float((step.get("kafka_hop_ms") or {}).get("p50") or 0)
            if floor is not None:
                base = floor["loadgen"]["latency_ms"]
                row["bare"] = {"p50": base["p50"], "p99": base["p99"]}
                ratio = {q: worker[q] / max(base[q], 1e-9) for q in ("p50", "p99")}
                less = {q: max(worker[q] - hop, 0) / max(base[q], 1e-9) for q in ("p50", "p99")}
                row["ratio"] = ratio
                row["ratio_less_hop"] = less
                row["within_floor"] = all(v <= FLOOR_RATIO for v in ratio.values())
                row["within_floor_less_hop"] = all(v <= FLOOR_RATIO for v in less.values())
            if other is not None:
                peer = other["loadgen"]["latency_ms"]
                row["websockets"] = {"p50": peer["p50"], "p99": peer["p99"]}
                below = worker["p50"] < peer["p50"] and worker["p99"] < peer["p99"]
                row["below_websockets"] = below
            rows.append(row)
    return rows


def _load(text: str) -> str:
    """The 1, 5 and 15-minute load averages of a /proc/loadavg line."""
    return " ".join(text.split()[:3])


def latency_table(latency: Json) -> str:
    def pair(value: Json | None) -> str:
        return f"{value['p50']:.0f} / {value['p99']:.0f}" if value else "-"

    def ratios(value: Json | None) -> str:
        return f"{value['p50']:.2f}x, {value['p99']:.2f}x" if value else "-"

    def verdict(value: bool | None) -> str:
        return "-" if value is None else ("**met**" if value else "not met")

    lines = [
        f"Latency at {latency['connections']:,} connections, p50 / p99 ms end to end "
        f"({latency['seconds']:g} s per rate; load average {_load(latency['loadavg_start'])} "
        f"at start, {_load(latency['loadavg_end'])} at end):",
        "",
        "| broadcasts/s (deliveries/s) | worker clients | worker (from Kafka) | Kafka hop "
        "| bare asyncio | websockets.broadcast | worker / bare (p50, p99) "
        "| same, hop p50 subtracted | within 1.5x bare | below websockets.broadcast "
        "| load average |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in latency_rows(latency):
        lines.append(
            f"| {row['rate']:g} ({row['deliveries_per_s']:,}) | {row['clients']} "
            f"| {pair(row['worker'])} | {pair(row['kafka_hop'])} | {pair(row.get('bare'))} "
            f"| {pair(row.get('websockets'))} "
            f"| {ratios(row.get('ratio'))} | {ratios(row.get('ratio_less_hop'))} "
            f"| {verdict(row.get('within_floor'))} | {verdict(row.get('below_websockets'))} "
            f"| {row['loadavg']} |"
        )
    return "\n".join(lines)
