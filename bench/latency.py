"""Issue 17's latency table, from the ``latency`` part of a bench/run.py result.

The worker against the bare asyncio peer (the floor of Python on one core) and
``websockets.broadcast``, same connections, same broadcast rates, same run. Pure (no
plotting library), so its arithmetic is unit-tested (tests/bench/test_latency_table.py);
bench/report.py prints it.
"""

from __future__ import annotations

from statistics import median
from typing import Any

Json = dict[str, Any]


#: Issue 17: the worker's p50 and p99 within this factor of the bare asyncio peer's.
FLOOR_RATIO = 1.5

#: The latency table's servers: the two peers, then the worker with one-per-frame and with
#: batch clients.
LATENCY_TARGETS: tuple[tuple[str, bool | None], ...] = (
    ("bare_asyncio", None),
    ("ws_broadcast", None),
    ("clarion", False),
    ("clarion", True),
)


def latency_schedule(rounds: int) -> list[tuple[int, str, bool | None]]:
    """``(round, server, batch)`` in the order the latency workload runs them: every
    server once a round, each round's order rotated by one from the last."""
    order: list[tuple[int, str, bool | None]] = []
    for index in range(rounds):
        shift = index % len(LATENCY_TARGETS)
        rotated = LATENCY_TARGETS[shift:] + LATENCY_TARGETS[:shift]
        order += [(index, kind, batch) for kind, batch in rotated]
    return order


def _step_at(run: Json | None, rate: float) -> Json | None:
    if run is None:
        return None
    return next((s for s in run["steps"] if float(s["rate"]) == float(rate)), None)


def _round_rows(runs: list[Json], rates: list[float]) -> list[Json]:
    """One row per broadcast rate and kind of Clarion client, from one run of each server:
    the worker's p50/p99, the Kafka hop measured beside it, both peers' p50/p99 at the
    same rate, the ratios, and the verdicts of issue 17 (within 1.5x of the bare peer;
    below websockets.broadcast).

    The verdicts use the worker's end-to-end figures, Kafka hop included (the peers have
    none); ``ratio_less_hop`` subtracts the hop's median from the worker's p50 and p99.
    """
    bare = next((r for r in runs if r["target"] == "bare-asyncio"), None)
    ws = next((r for r in runs if r["target"] == "websockets.broadcast"), None)
    rows: list[Json] = []
    for run in runs:
        if not run["target"].startswith("clarion"):
            continue
        for rate in rates:
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


def _median_run(runs: list[Json], rates: list[float]) -> Json:
    """One server's runs over the rounds as one run: each rate's p50 and p99 (and the
    Kafka hop's) the median of the rounds that reached that rate."""
    steps: list[Json] = []
    for rate in rates:
        found = [s for s in (_step_at(run, rate) for run in runs) if s is not None]
        if not found:
            continue
        step: Json = {
            "rate": rate,
            "loadgen": {
                "latency_ms": {
                    q: median(s["loadgen"]["latency_ms"][q] for s in found) for q in ("p50", "p99")
                }
            },
            "cumulative_losses": max(s["cumulative_losses"] for s in found),
            "loadavg": found[len(found) // 2]["loadavg"],
        }
        hops = [s["kafka_hop_ms"] for s in found if s.get("kafka_hop_ms")]
        if hops:
            step["kafka_hop_ms"] = {q: median(h[q] for h in hops) for q in ("p50", "p99")}
        steps.append(step)
    return {**runs[0], "steps": steps}


def latency_rows(latency: Json) -> list[Json]:
    """Issue 17's rows: ``_round_rows`` of the median of the rounds (bench/run.py runs
    every server ``rounds`` times, in rotated order; a result without rounds is one), and
    for each row how many rounds met each verdict on their own (``rounds_within_floor``,
    ``rounds_below_websockets``, out of ``rounds``).
    """
    rates: list[float] = latency["rates"]
    rounds: dict[int, list[Json]] = {}
    for run in latency["runs"]:
        rounds.setdefault(int(run.get("round", 0)), []).append(run)
    servers: dict[tuple[str, str], list[Json]] = {}
    for run in latency["runs"]:
        servers.setdefault((run["target"], run["clients"]), []).append(run)
    rows = _round_rows([_median_run(runs, rates) for runs in servers.values()], rates)
    per_round = [_round_rows(runs, rates) for runs in rounds.values()]
    for row in rows:
        same = [
            r
            for rows_of_round in per_round
            for r in rows_of_round
            if (r["rate"], r["clients"]) == (row["rate"], row["clients"])
        ]
        row["rounds"] = len(rounds)
        row["rounds_within_floor"] = sum(1 for r in same if r.get("within_floor"))
        row["rounds_below_websockets"] = sum(1 for r in same if r.get("below_websockets"))
    return rows


def _load(text: str) -> str:
    """The 1, 5 and 15-minute load averages of a /proc/loadavg line."""
    return " ".join(text.split()[:3])


def latency_table(latency: Json) -> str:
    def pair(value: Json | None) -> str:
        return f"{value['p50']:.0f} / {value['p99']:.0f}" if value else "-"

    def ratios(value: Json | None) -> str:
        return f"{value['p50']:.2f}x, {value['p99']:.2f}x" if value else "-"

    def verdict(value: bool | None, met: int, rounds: int) -> str:
        if value is None:
            return "-"
        said = "**met**" if value else "not met"
        return said if rounds == 1 else f"{said} ({met} of {rounds} rounds)"

    rounds = len({int(run.get("round", 0)) for run in latency["runs"]})
    of_rounds = f"median of {rounds} rounds, " if rounds > 1 else ""

    lines = [
        f"Latency at {latency['connections']:,} connections, p50 / p99 ms end to end "
        f"({of_rounds}{latency['seconds']:g} s per rate; load average "
        f"{_load(latency['loadavg_start'])} at start, {_load(latency['loadavg_end'])} at end):",
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
            f"| {verdict(row.get('within_floor'), row['rounds_within_floor'], row['rounds'])} "
            f"| {verdict(row.get('below_websockets'), row['rounds_below_websockets'], rounds)} "
            f"| {row['loadavg']} |"
        )
    return "\n".join(lines)
