"""Tables and plots from one bench/run.py result file.

    .venv/bin/python bench/report.py bench/results/<date>.json

Prints Markdown tables (pasted into docs/benchmarks.md) and writes PNG plots next to the
doc, in docs/benchmarks/: W2 latency against offered load, and deliveries/s against
offered load for every target.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import matplotlib
from latency import latency_table  # type: ignore[import-not-found]  # bench/latency.py

matplotlib.use("Agg")
import matplotlib.pyplot as plt

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


def w2_table(runs: list[Json]) -> str:
    reference = next((sustained(r)[0] for r in runs if r["target"].startswith("centrifugo")), 0)
    ceiling = next((sustained(r)[0] for r in runs if r["target"] == "websockets.broadcast"), 0)
    lines = [
        "| server (clients) | max sustained deliveries/s | at events/s | p99 there (ms) "
        "| best deliveries/s incl. catch-up | server CPU there | loadgen CPU there | vs Centrifugo "
        "| vs websockets.broadcast | load average |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for run in runs:
        rate, best = sustained(run)
        p99 = best["loadgen"]["latency_ms"]["p99"] if best else 0
        lines.append(
            f"| {_name(run)} | {rate:,} | {best['rate'] if best else '-'} "
            f"| {p99:.0f} | {max(effective(s) for s in run['steps']):,} "
            f"| {best['server_cpu_percent'] if best else '-'} % "
            f"| {best['loadgen']['cpu_percent'] if best else 0:.0f} % "
            f"| {rate / reference if reference else 0:.2f}x "
            f"| {rate / ceiling if ceiling else 0:.2f}x "
            f"| {best['loadavg'].split()[0] if best else '-'} |"
        )
    return "\n".join(lines)


def w2_steps_table(runs: list[Json]) -> str:
    lines = [
        "| server (clients) | events/s | offered/s | delivered/s incl. catch-up | p50 ms | p99 ms "
        "| catch-up s | server CPU % | lost | load average |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for run in runs:
        for step in run["steps"]:
            lat = step["loadgen"]["latency_ms"]
            lines.append(
                f"| {_name(run)} | {step['rate']} | {step['offered_per_s']:,.0f} "
                f"| {effective(step):,} | {lat['p50']:.0f} | {lat['p99']:.0f} "
                f"| {step['catch_up_s']} | {step['server_cpu_percent']} "
                f"| {step['cumulative_losses']} | {step['loadavg'].split()[0]} |"
            )
    return "\n".join(lines)


def round_table(runs: list[Json]) -> str:
    """W2 latency target: p99 against the time of one fan-out round (Clarion only).

    A round is the mean write pass at the lowest rate, where each pass carries one event
    to every client (the worker's own ``write_pass_duration`` histogram).
    """
    lines = [
        "| server (clients) | connections | one round (ms) | events/s | p99 (ms) "
        "| p99 / round | target <= 1.5 |",
        "|---|---|---|---|---|---|---|",
    ]
    for run in runs:
        rounds = [s for s in run["steps"] if "write_pass_ms_mean" in s]
        if not rounds:
            continue
        one_round = rounds[0]["write_pass_ms_mean"]
        for step in run["steps"]:
            if step["cumulative_losses"] > 0 or step["catch_up_s"] > 2:
                continue  # saturated: latency is queueing, not a round
            p99 = step["loadgen"]["latency_ms"]["p99"]
            ratio = p99 / one_round if one_round else 0
            lines.append(
                f"| {_name(run)} | {run['connections']:,} | {one_round:.0f} | {step['rate']} "
                f"| {p99:.0f} | {ratio:.2f} | {'met' if ratio <= 1.5 else 'not met'} |"
            )
    return "\n".join(lines)


def scaling_table(runs: list[Json]) -> str:
    lines = [
        "| server (clients) | connections | max sustained deliveries/s | at events/s "
        "| p99 there (ms) |",
        "|---|---|---|---|---|",
    ]
    for run in sorted(runs, key=lambda r: (_name(r), r["connections"])):
        rate, best = sustained(run)
        p99 = best["loadgen"]["latency_ms"]["p99"] if best else 0
        lines.append(
            f"| {_name(run)} | {run['connections']:,} | {rate:,} "
            f"| {best['rate'] if best else '-'} | {p99:.0f} |"
        )
    return "\n".join(lines)


def scaling_plot(runs: list[Json]) -> Path:
    DOCS.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    by_name: dict[str, list[tuple[int, int]]] = {}
    for run in runs:
        by_name.setdefault(_name(run), []).append((run["connections"], sustained(run)[0]))
    for name, points in sorted(by_name.items()):
        points.sort()
        ax.plot([c for c, _ in points], [d for _, d in points], marker="o", label=name)
    ax.set_xlabel("connections")
    ax.set_ylabel("max sustained deliveries/s")
    ax.set_title("W2 broadcast: deliveries/s against connections (one server core)")
    ax.legend(fontsize=7)
    ax.grid(True, alpha=0.3)
    path = DOCS / "w2-connections.png"
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def other_table(result: Json) -> str:
    lines = [
        "| workload | connections | result | p50 / p99 ms | server CPU | losses | load average |",
        "|---|---|---|---|---|---|---|",
    ]
    w1 = result.get("w1")
    if w1:
        lat = w1["loadgen"]["latency_ms"]
        lines.append(
            f"| W1 dashboard, {w1['organizations']} orgs, {w1['events_per_s']:.0f} events/s "
            f"| {w1['connections']:,} | {w1['loadgen']['deliveries_per_s']:,.0f} deliveries/s "
            f"| {lat['p50']:.0f} / {lat['p99']:.0f} | {w1['server_cpu_percent']} % "
            f"| {w1['losses']} | {w1['loadavg'].split()[0]} |"
        )
    w3 = result.get("w3")
    if w3:
        lat = w3["broadcast_1_per_s"]["latency_ms"]
        lines.append(
            f"| W3 idle (then 1 broadcast/s) | {w3['connections']:,} "
            f"| {w3['kib_per_connection']} KiB RSS per connection "
            f"({w3['rss_before_kib'] // 1024} -> {w3['rss_after_kib'] // 1024} MiB) "
            f"| {lat['p50']:.0f} / {lat['p99']:.0f} | - | {w3['losses']} "
            f"| {w3['loadavg'].split()[0]} |"
        )
    w4 = result.get("w4")
    if w4:
        storm = w4["storm"]
        lines.append(
            f"| W4 reconnect storm ({w4['events_per_s']:.0f} events/s throughout) "
            f"| {w4['connections']:,} | all welcomed on the 2nd worker after "
            f"{storm.get('all_welcomed_s', float('nan')):.1f} s, all got a post-resume event "
            f"after {storm.get('all_event_after_s', float('nan')):.1f} s "
            f"({storm.get('resumed', 0):,} resumed; welcomed p50/p90/p99 "
            f"{_quantiles(storm.get('welcomed_s'))} s); gaps {w4['gaps']}, "
            f"duplicates {w4['duplicates']} | - | {w4['second_worker_cpu_percent']} % (2nd) "
            f"| {w4['losses']} | {w4['loadavg'].split()[0]} |"
        )
    soak = result.get("soak")
    if soak:
        spread, rss = soak["per_window_after_warmup"], soak["rss_mib"]
        lines.append(
            f"| soak: {soak['plan']['minutes']:g} min of churn "
            f"({soak['churn']['started']:,} churn clients, {soak['resumes']['kafka'] or 0:.0f} "
            f"read-backs) | {soak['long_lived']:,} long-lived "
            f"| RSS slope {soak['rss_slope_mib_per_min_after_warmup']} MiB/min after warm-up, "
            f"{rss['long_lived_connected']} -> {rss['all_gone']} MiB when all left; "
            f"unclosed consumers {soak['unclosed_consumer_lines']}; slowest /healthz per "
            f"window median {spread['healthz_slowest_ms']['median']} ms "
            f"| {spread['latency_p50_ms']['median']:.0f} / {spread['latency_p99_ms']['median']:.0f}"
            f" (median window) | - | {soak['lost']} | {result['loadavg_start'].split()[0]} |"
        )
    w5 = result.get("w5")
    if w5:
        ready, usage = w5["ready"], w5["operator_usage"]
        per = ready.get("per_channel_s") or {}
        all_s = ready.get("all_ready_s", float("nan"))
        lines.append(
            f"| W5 operator: {w5['channels']} RealtimeChannels at once | - "
            f"| all Ready: {ready['all_ready']} after {all_s:.1f} s "
            f"(per channel p50 {per.get('p50', float('nan')):.1f} s); cleanup verified "
            f"{w5['cleanup']['verified']}; operator RSS peak {usage['rss_kib_peak'] // 1024} MiB "
            f"| - | {usage['cpu_seconds_to_all_ready']} s CPU to all Ready | - "
            f"| {w5['loadavg_start'].split()[0]} |"
        )
    return "\n".join(lines)


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
    DOCS.mkdir(parents=True, exist_ok=True)
    made = []
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for run in runs:
        xs = [s["offered_per_s"] for s in run["steps"]]
        ys = [s["loadgen"]["latency_ms"]["p99"] for s in run["steps"]]
        ax.plot(xs, ys, marker="o", label=_name(run))
    ax.set_xlabel("offered deliveries/s (events/s x connections)")
    ax.set_ylabel("p99 produce-to-receive latency (ms)")
    ax.set_yscale("log")
    ax.set_title("W2 broadcast: p99 latency against load (one server core)")
    ax.legend(fontsize=7)
    ax.grid(True, alpha=0.3)
    path = DOCS / "w2-latency.png"
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    made.append(path)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for run in runs:
        xs = [s["offered_per_s"] for s in run["steps"]]
        ys = [s["deliveries_per_s"] for s in run["steps"]]
        ax.plot(xs, ys, marker="o", label=f"{_name(run)}, {run['connections']:,} conns")
    top = max((s["offered_per_s"] for r in runs for s in r["steps"]), default=1)
    ax.plot([0, top], [0, top], linestyle=":", color="grey", label="delivered = offered")
    ax.set_xlabel("offered deliveries/s")
    ax.set_ylabel("delivered deliveries/s")
    ax.set_title("W2 broadcast: deliveries/s against load")
    ax.legend(fontsize=7)
    ax.grid(True, alpha=0.3)
    path = DOCS / "w2-deliveries.png"
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    made.append(path)
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
