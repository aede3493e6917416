"""Tables and plots from one bench/run.py result file.

    .venv/bin/python bench/report.py bench/results/<date>.json

Prints Markdown tables (pasted into docs/benchmarks.md) and writes PNG plots next to the
doc, in docs/benchmarks/: W2 latency against offered load, and deliveries/s against
offered load for every target.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

from latency import latency_table  # type: ignore[import-not-found]  # bench/latency.py

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

Json = dict[str, Any]
DOCS = Path(__file__).resolve().parent.parent / "docs/benchmarks"


def _name(run: Json) -> str:
    return f"{run['target']} ({run['clients']})"


def effective(step: Json) -> int:
    """Deliveries over the whole step window, catch-up included (the true throughput)."""
    gen = step["loadgen"]
    return round(float(gen["events"]) / float(gen["seconds"]))


def sustained(run: Json) -> tuple[int, Json | None]:
    """Best true throughput among steps that lost nothing and drained within 2 s."""
    ok = [s for s in run["steps"] if s["cumulative_losses"] <= 0 and s["catch_up_s"] <= 2]
    best = max(ok, key=effective, default=None)
    return (effective(best) if best else 0), best


def table(columns: list[str], rows: Iterable[list[object]]) -> str:
    """A Markdown table: one header cell per column, one row per list of cells."""
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def _slope(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def _load(step: Json) -> str:
    """The one-minute load average a step (or run) recorded."""
    return str(step["loadavg"].split()[0])


def w2_table(runs: list[Json]) -> str:
    reference = next((sustained(r)[0] for r in runs if r["target"].startswith("centrifugo")), 0)
    ceiling = next((sustained(r)[0] for r in runs if r["target"] == "websockets.broadcast"), 0)
    columns = [
        "server (clients)", "max sustained deliveries/s", "at events/s", "p99 there (ms)",
        "best deliveries/s incl. catch-up", "server CPU there", "loadgen CPU there",
        "vs Centrifugo", "vs websockets.broadcast", "load average",
    ]  # fmt: skip
    rows = []
    for run in runs:
        rate, best = sustained(run)
        p99 = best["loadgen"]["latency_ms"]["p99"] if best else 0
        rows.append([
            _name(run), f"{rate:,}", best["rate"] if best else "-", f"{p99:.0f}",
            f"{max(effective(s) for s in run['steps']):,}",
            f"{best['server_cpu_percent'] if best else '-'} %",
            f"{best['loadgen']['cpu_percent'] if best else 0:.0f} %",
            f"{rate / reference if reference else 0:.2f}x",
            f"{rate / ceiling if ceiling else 0:.2f}x",
            _load(best) if best else "-",
        ])  # fmt: skip
    return table(columns, rows)


def w2_steps_table(runs: list[Json]) -> str:
    columns = [
        "server (clients)", "events/s", "offered/s", "delivered/s incl. catch-up", "p50 ms",
        "p99 ms", "catch-up s", "server CPU %", "lost", "load average",
    ]  # fmt: skip
    rows = [
        [
            _name(run),
            step["rate"],
            f"{step['offered_per_s']:,.0f}",
            f"{effective(step):,}",
            f"{step['loadgen']['latency_ms']['p50']:.0f}",
            f"{step['loadgen']['latency_ms']['p99']:.0f}",
            step["catch_up_s"],
            step["server_cpu_percent"],
            step["cumulative_losses"],
            _load(step),
        ]
        for run in runs
        for step in run["steps"]
    ]
    return table(columns, rows)


def round_table(runs: list[Json]) -> str:
    """W2 latency target: p99 against the time of one fan-out round (Clarion only).

    A round is the time one event takes to reach every client at the lowest rate, from
    the worker's own histograms: dispatch (``broadcast_duration``: an event alone in its
    fetch is written there) plus write passes (``write_pass_duration``), per event.
    """
    columns = [
        "server (clients)", "connections", "one round (ms)", "events/s", "p99 (ms)",
        "p99 / round", "target <= 1.5",
    ]  # fmt: skip
    rows: list[list[object]] = []
    for run in runs:
        # Result files before 2dac308 timed the round by the write pass alone.
        key = (
            "round_ms_mean"
            if any("round_ms_mean" in s for s in run["steps"])
            else ("write_pass_ms_mean")
        )
        rounds = [s for s in run["steps"] if key in s]
        if not rounds:
            continue
        one_round = rounds[0][key]
        for step in run["steps"]:
            if step["cumulative_losses"] > 0 or step["catch_up_s"] > 2:
                continue  # saturated: latency is queueing, not a round
            p99 = step["loadgen"]["latency_ms"]["p99"]
            ratio = p99 / one_round if one_round else 0
            rows.append([
                _name(run), f"{run['connections']:,}", f"{one_round:.0f}", step["rate"],
                f"{p99:.0f}", f"{ratio:.2f}", "met" if ratio <= 1.5 else "not met",
            ])  # fmt: skip
    return table(columns, rows)


def scaling_table(runs: list[Json]) -> str:
    columns = [
        "server (clients)", "connections", "max sustained deliveries/s", "at events/s",
        "p99 there (ms)",
    ]  # fmt: skip
    rows = []
    for run in sorted(runs, key=lambda r: (_name(r), r["connections"])):
        rate, best = sustained(run)
        p99 = best["loadgen"]["latency_ms"]["p99"] if best else 0
        rows.append([
            _name(run), f"{run['connections']:,}", f"{rate:,}", best["rate"] if best else "-",
            f"{p99:.0f}",
        ])  # fmt: skip
    return table(columns, rows)


def _pyplot() -> ModuleType:
    """matplotlib, loaded only to draw: the tables need nothing beyond the standard
    library (the bench dependency group brings matplotlib; the tests' venv may not)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Figure, ax: Axes, name: str, title: str, xlabel: str, ylabel: str) -> Path:
    """Label, title and write one plot to docs/benchmarks/``name``."""
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(fontsize=7)
    ax.grid(True, alpha=0.3)
    DOCS.mkdir(parents=True, exist_ok=True)
    path = DOCS / name
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    _pyplot().close(fig)
    return path


def scaling_plot(runs: list[Json]) -> Path:
    fig, ax = _pyplot().subplots(figsize=(7, 4.5))
    by_name: dict[str, list[tuple[int, int]]] = {}
    for run in runs:
        by_name.setdefault(_name(run), []).append((run["connections"], sustained(run)[0]))
    for name, points in sorted(by_name.items()):
        points.sort()
        ax.plot([c for c, _ in points], [d for _, d in points], marker="o", label=name)
    return _save(
        fig,
        ax,
        "w2-connections.png",
        "W2 broadcast: deliveries/s against connections (one server core)",
        "connections",
        "max sustained deliveries/s",
    )


def other_table(result: Json) -> str:
    columns = [
        "workload", "connections", "result", "p50 / p99 ms", "server CPU", "losses",
        "load average",
    ]  # fmt: skip
    rows: list[list[object]] = []
    w1 = result.get("w1")
    if w1:
        lat = w1["loadgen"]["latency_ms"]
        rows.append([
            f"W1 dashboard, {w1['organizations']} orgs, {w1['events_per_s']:.0f} events/s",
            f"{w1['connections']:,}",
            f"{w1['loadgen']['deliveries_per_s']:,.0f} deliveries/s",
            f"{lat['p50']:.0f} / {lat['p99']:.0f}",
            f"{w1['server_cpu_percent']} %",
            w1["losses"],
            _load(w1),
        ])  # fmt: skip
    w3 = result.get("w3")
    if w3:
        lat = w3["broadcast_1_per_s"]["latency_ms"]
        rows.append([
            "W3 idle (then 1 broadcast/s)",
            f"{w3['connections']:,}",
            f"{w3['kib_per_connection']} KiB RSS per connection "
            f"({w3['rss_before_kib'] // 1024} -> {w3['rss_after_kib'] // 1024} MiB)",
            f"{lat['p50']:.0f} / {lat['p99']:.0f}",
            "-",
            w3["losses"],
            _load(w3),
        ])  # fmt: skip
    w4 = result.get("w4")
    if w4:
        storm = w4["storm"]
        rows.append([
            f"W4 reconnect storm ({w4['events_per_s']:.0f} events/s throughout)",
            f"{w4['connections']:,}",
            "all welcomed on the 2nd worker after "
            f"{storm.get('all_welcomed_s', float('nan')):.1f} s, all got a post-resume event "
            f"after {storm.get('all_event_after_s', float('nan')):.1f} s "
            f"({storm.get('resumed', 0):,} resumed; welcomed p50/p90/p99 "
            f"{_quantiles(storm.get('welcomed_s'))} s); gaps {w4['gaps']}, "
            f"duplicates {w4['duplicates']}",
            "-",
            f"{w4['second_worker_cpu_percent']} % (2nd)",
            w4["losses"],
            _load(w4),
        ])  # fmt: skip
    soak = result.get("soak")
    if soak:
        spread, rss = soak["per_window_after_warmup"], soak["rss_mib"]
        rows.append([
            f"soak: {soak['plan']['minutes']:g} min of churn "
            f"({soak['churn']['started']:,} churn clients, {soak['resumes']['kafka'] or 0:.0f} "
            "read-backs)",
            f"{soak['long_lived']:,} long-lived",
            f"RSS slope before bursts {_slope(soak.get('rss_slope_before_bursts_mib_per_min'))}"
            f" MiB/min after warm-up (target <= {soak.get('rss_slope_threshold_mib_per_min')}), "
            f"{rss['long_lived_connected']} -> {rss['all_gone']} MiB when all left; "
            f"unclosed consumers {soak['unclosed_consumer_lines']}; slowest /healthz per "
            f"window median {spread['healthz_slowest_ms']['median']} ms",
            f"{spread['latency_p50_ms']['median']:.0f} / {spread['latency_p99_ms']['median']:.0f}"
            " (median window)",
            "-",
            soak["lost"],
            result["loadavg_start"].split()[0],
        ])  # fmt: skip
    w5 = result.get("w5")
    if w5:
        ready, usage = w5["ready"], w5["operator_usage"]
        per = ready.get("per_channel_s") or {}
        all_s = ready.get("all_ready_s", float("nan"))
        rows.append([
            f"W5 operator: {w5['channels']} RealtimeChannels at once",
            "-",
            f"all Ready: {ready['all_ready']} after {all_s:.1f} s "
            f"(per channel p50 {per.get('p50', float('nan')):.1f} s); cleanup verified "
            f"{w5['cleanup']['verified']}; operator RSS peak {usage['rss_kib_peak'] // 1024} MiB",
            "-",
            f"{usage['cpu_seconds_to_all_ready']} s CPU to all Ready",
            "-",
            w5["loadavg_start"].split()[0],
        ])  # fmt: skip
    return table(columns, rows)


def _quantiles(values: Json | None) -> str:
    if not values:
        return "-"
    return " / ".join(f"{values[q]:.1f}" for q in ("p50", "p90", "p99"))


def profile_table(runs: list[Json], result: Json | None = None) -> str:
    out = []
    named = [(f"{_name(run)} at {run['profile']['rate']} events/s", run) for run in runs]
    for key, title in (("w1", "W1"), ("w3", "W3 (idle)"), ("w4", "W4, second worker")):
        section = (result or {}).get(key) or {}
        if section.get("profile") or section.get("idle_profile"):
            named.append((title, {"profile": section.get("profile") or section["idle_profile"]}))
    for title, run in named:
        profile = run.get("profile")
        if not profile:
            continue
        out.append(f"py-spy, {title}, {profile['samples']} samples:\n")
        out.append("| self time | % | inclusive | % |\n|---|---|---|---|")
        for (own, own_pct), (inc, inc_pct) in zip(
            profile["self"][:15], profile["inclusive"][:15], strict=False
        ):
            out.append(f"| `{own}` | {own_pct} | `{inc}` | {inc_pct} |")
        out.append("")
    return "\n".join(out)


def plots(runs: list[Json]) -> list[Path]:
    made = []
    fig, ax = _pyplot().subplots(figsize=(7, 4.5))
    for run in runs:
        xs = [s["offered_per_s"] for s in run["steps"]]
        ys = [s["loadgen"]["latency_ms"]["p99"] for s in run["steps"]]
        ax.plot(xs, ys, marker="o", label=_name(run))
    ax.set_yscale("log")
    made.append(
        _save(
            fig,
            ax,
            "w2-latency.png",
            "W2 broadcast: p99 latency against load (one server core)",
            "offered deliveries/s (events/s x connections)",
            "p99 produce-to-receive latency (ms)",
        )
    )
    fig, ax = _pyplot().subplots(figsize=(7, 4.5))
    for run in runs:
        xs = [s["offered_per_s"] for s in run["steps"]]
        ys = [s["deliveries_per_s"] for s in run["steps"]]
        ax.plot(xs, ys, marker="o", label=f"{_name(run)}, {run['connections']:,} conns")
    top = max((s["offered_per_s"] for r in runs for s in r["steps"]), default=1)
    ax.plot([0, top], [0, top], linestyle=":", color="grey", label="delivered = offered")
    made.append(
        _save(
            fig,
            ax,
            "w2-deliveries.png",
            "W2 broadcast: deliveries/s against load",
            "offered deliveries/s",
            "delivered deliveries/s",
        )
    )
    return made


def main(argv: list[str]) -> int:
    result: Json = json.loads(Path(argv[1]).read_text())
    runs: list[Json] = result.get("w2", [])
    print(f"Run {result['date']}: `{result['command']}`")
    print(f"load average at start {result['loadavg_start']}, end {result['loadavg_end']}\n")
    print(other_table(result) + "\n")
    print(profile_table([r for r in runs if r.get("profile")], result) + "\n")
    if runs:
        print(w2_table(runs) + "\n")
        print(round_table(runs) + "\n")
        print(w2_steps_table(runs) + "\n")
        for path in plots(runs):
            print(f"wrote {path}")
    if result.get("latency"):
        print(latency_table(result["latency"]) + "\n")
    scaling = result.get("w2_scaling", [])
    if scaling:
        counted = scaling + [
            r for r in runs if r["target"].startswith(("clarion-uvicorn", "centrifugo"))
        ]
        print(scaling_table(counted) + "\n")
        print(f"wrote {scaling_plot(counted)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
