"""Capacity model for Clarion workers (issue 17, docs/scaling.md): pods, cores, memory and
Kafka egress for N connections, E events/s and fan-out F, from measured unit costs.

    .venv/bin/python bench/capacity.py                 # the scenarios of docs/scaling.md
    .venv/bin/python bench/capacity.py --connections 1000000 --events 2000 --fanout 100

Pure and deterministic (no clock, no randomness: organizations get Zipf sizes and are
placed by a SHA-256 hash), so tests/bench/test_capacity.py checks its arithmetic.

Two placements are modelled:

- **shared** (the design today): a channel's clients are spread over all its replicas
  by the load balancer, and every replica consumes, decodes and routes every event of the
  channel. Per replica and second, on one core: ``E x event_us + (D / R) x delivery_us +
  (N / R) x idle_us`` with D = deliveries/s. The first term does not shrink with R: a
  channel's event rate is bounded by one core's decode rate (``ceiling``).
- **affine** (the way past it): the channel's organizations are hashed to G groups of
  replicas; the entry point sends a client to its organization's group, and each group
  reads only the partitions its organizations' events are keyed to. A group consumes
  its organizations' events plus every broadcast ("all") event, so the ceiling becomes
  the hottest group's rate, and broadcasts still reach every replica.
"""

from __future__ import annotations

import argparse
import hashlib
import math
import sys
from dataclasses import dataclass, replace


@dataclass(frozen=True)
class Cost:
    value: float
    unit: str
    source: str
    measured: bool


#: The unit costs, one worker process on one core of the 2-core development machine.
COSTS: dict[str, Cost] = {
    "event_us": Cost(
        29.1,
        "us of CPU per event consumed, decoded and routed by one replica (no recipient), "
        "marginal: the slope of CPU against the event rate",
        "least squares over bench/results/2026-11-30-event-cost.json and "
        "-event-cost-profile.json (2,000 events/s: 25.2 and 19.7 % of a core), "
        "-event-cost-6000.json (35.8 %), -event-cost-12000.json (51.4 %); "
        "bench/event_cost.py, no client, load average 22-26",
        True,
    ),
    "event_fixed": Cost(
        0.170,
        "cores a replica spends on consuming as soon as events flow (Kafka fetch requests "
        "and their bookkeeping, amortised as the rate grows)",
        "the intercept of the same fit (valid from 2,000 to 12,000 events/s; py-spy at "
        "2,000/s: 23 % of the worker in aiokafka sending fetch requests, "
        "bench/results/2026-11-30-event-cost-profile.json)",
        True,
    ),
    "delivery_us": Cost(
        20.0,
        "us of CPU per delivery written on its own (one socket write per client and event)",
        "W1 in bench/results/2026-11-27-make-bench.json (45,936 deliveries/s, nearly all "
        "one write each, at 86.0 % CPU: 18.7 us) and W2 at 1-2 events/s, 10,000 clients "
        "(25-36 us incl. idle cost; -direct-tuned.json: 25-30 us); docs/benchmarks.md",
        True,
    ),
    "coalesced_delivery_us": Cost(
        3.9,
        "us of CPU per delivery when a write pass carries several events per client",
        "W2 saturation, batch clients: 234,900/s at 91.8 % (2026-11-27-make-bench.json), "
        "251,225/s at 98.0 % (2026-11-27-direct-tuned.json)",
        True,
    ),
    "handshake_ms": Cost(
        0.9,
        "ms of CPU per WebSocket handshake with a verified HS256 token (no other traffic)",
        "bench/results/2026-11-30-handshake-connect-after.json (0.91 ms, load 24.6) and a "
        "3,000-connection run (0.88 ms); bench/handshake_cost.py connect",
        True,
    ),
    "handshake_live_ms": Cost(
        1.1,
        "ms of CPU per reconnect with resume while live traffic flows (W4)",
        "W4 on an idle machine, 2026-12-01: 10,000 resumed in 10.1-11.8 s at 200 events/s "
        "(bench/results/2026-12-01-w4-final-{1,2,3}.json), the second worker at 96-104 % of "
        "its core throughout (sampled: 2026-12-01-w4-sampled-cpu.txt)",
        True,
    ),
    "idle_us_per_s": Cost(
        7.5,
        "us of CPU per idle connection per second (protocol pings, timers)",
        "W3 in bench/results/2026-11-27-make-bench.json: 14.9 % of a core for 19,950 "
        "idle connections",
        True,
    ),
    "conn_kib": Cost(
        24.8,
        "KiB of RSS per idle connection",
        "W3 in bench/results/2026-11-27-make-bench.json (54 -> 538 MiB for 19,950)",
        True,
    ),
    "base_mib": Cost(
        55.0,
        "MiB of RSS of a worker with no client",
        "W3 rss_before_kib 56,092 in bench/results/2026-11-27-make-bench.json",
        True,
    ),
    "event_bytes": Cost(
        350.0,
        "bytes fetched from Kafka per event and replica (envelope ~250 B + record and "
        "batch overhead)",
        "modelled: the bench's envelope is ~250 bytes (docs/benchmarks.md); the overhead "
        "is an estimate, not a measurement",
        False,
    ),
}


@dataclass(frozen=True)
class Policy:
    """Planning choices (modelled, not measured)."""

    #: CPU fraction of its core a replica may use in steady state: the rest absorbs
    #: bursts and a failed neighbour's reconnect storm, and keeps passes short.
    max_cpu: float = 0.6
    memory_limit_mib: float = 1024.0
    min_replicas: int = 2
    #: p99 latency budget: one write pass over an event's recipients on one replica
    #: must fit in budget / 1.5 (the p99 was ~1.1-1.5 rounds at low rates, W2).
    latency_budget_ms: float = 250.0
    #: Deliveries coalesced (several events per write): only when clients get several
    #: events per pass; False plans for one write per delivery (the latency-safe case).
    coalesced: bool = False


@dataclass(frozen=True)
class Workload:
    connections: int
    events_per_s: float
    #: Mean recipients of an organization- or user-scoped event (the fan-out F).
    fanout: float
    organizations: int
    #: Zipf exponent of organization sizes (connections and events alike); 0: all equal.
    zipf: float = 1.0
    #: Share of events broadcast to every client of the channel ("all").
    broadcast_share: float = 0.0


@dataclass(frozen=True)
class Org:
    name: str
    connections: float
    events_per_s: float


def organizations(load: Workload) -> list[Org]:
    """Zipf-sized organizations: org i holds a share 1/(i+1)^s of connections and of the
    organization-scoped events (a big customer has many users and much activity)."""
    weights = [1.0 / (i + 1) ** load.zipf for i in range(load.organizations)]
    total = sum(weights)
    scoped = load.events_per_s * (1 - load.broadcast_share)
    return [
        Org(f"org-{i:06d}", load.connections * w / total, scoped * w / total)
        for i, w in enumerate(weights)
    ]


def group_of(name: str, groups: int) -> int:
    """The entry point's placement: a stable hash of the organization id."""
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big") % groups


@dataclass(frozen=True)
class Slice:
    """What one set of replicas serves: its connections, events read, deliveries."""

    connections: float
    events_per_s: float
    deliveries_per_s: float
    largest_fanout: float


def slices(load: Workload, groups: int) -> list[Slice]:
    orgs = organizations(load)
    broadcast = load.events_per_s * load.broadcast_share
    conns = [0.0] * groups
    events = [broadcast] * groups
    deliveries = [0.0] * groups
    fanout = [0.0] * groups
    for org in orgs:
        g = group_of(org.name, groups) if groups > 1 else 0
        conns[g] += org.connections
        events[g] += org.events_per_s
        deliveries[g] += org.events_per_s * load.fanout
        fanout[g] = load.fanout
    for g in range(groups):
        deliveries[g] += broadcast * conns[g]
        if broadcast:
            fanout[g] = max(fanout[g], conns[g])
    return [Slice(conns[g], events[g], deliveries[g], fanout[g]) for g in range(groups)]


@dataclass(frozen=True)
class Sizing:
    replicas: int
    bound: str  # which constraint set the count: cpu, memory, latency, minimum, ceiling
    cpu_per_replica: float
    rss_mib_per_replica: float
    kafka_bytes_per_s: float
    feasible: bool


def cost(name: str, costs: dict[str, Cost]) -> float:
    return costs[name].value


def size(part: Slice, policy: Policy, costs: dict[str, Cost] = COSTS) -> Sizing:
    """The fewest replicas (one core each) that serve ``part`` within ``policy``."""
    event_s = cost("event_us", costs) / 1e6
    delivery = "coalesced_delivery_us" if policy.coalesced else "delivery_us"
    delivery_s = cost(delivery, costs) / 1e6
    idle_s = cost("idle_us_per_s", costs) / 1e6
    # Every replica pays it: it does not shrink with R.
    fixed = part.events_per_s * event_s + (cost("event_fixed", costs) if part.events_per_s else 0)
    spread = part.deliveries_per_s * delivery_s + part.connections * idle_s
    room = policy.max_cpu - fixed
    bytes_per_replica = part.events_per_s * cost("event_bytes", costs)
    if room <= 0:
        return Sizing(0, "ceiling", fixed, 0.0, 0.0, False)
    candidates = {
        "minimum": policy.min_replicas,
        "cpu": math.ceil(spread / room - 1e-9),
        "memory": math.ceil(
            part.connections
            * cost("conn_kib", costs)
            / 1024
            / (policy.memory_limit_mib - cost("base_mib", costs))
            - 1e-9
        ),
        "latency": math.ceil(
            part.largest_fanout * delivery_s * 1.5 / (policy.latency_budget_ms / 1000) - 1e-9
        ),
    }
    bound = max(candidates, key=lambda k: (candidates[k], k == "minimum"))
    replicas = max(1, candidates[bound])
    return Sizing(
        replicas=replicas,
        bound=bound,
        cpu_per_replica=fixed + spread / replicas,
        rss_mib_per_replica=cost("base_mib", costs)
        + part.connections / replicas * cost("conn_kib", costs) / 1024,
        kafka_bytes_per_s=replicas * bytes_per_replica,
        feasible=True,
    )


@dataclass(frozen=True)
class Plan:
    placement: str
    groups: int
    sizings: list[Sizing]
    ceiling_events_per_s: float
    hottest_group_events_per_s: float

    @property
    def feasible(self) -> bool:
        return all(s.feasible for s in self.sizings)

    @property
    def replicas(self) -> int:
        return sum(s.replicas for s in self.sizings)

    @property
    def kafka_bytes_per_s(self) -> float:
        return sum(s.kafka_bytes_per_s for s in self.sizings)

    @property
    def max_cpu(self) -> float:
        return max(s.cpu_per_replica for s in self.sizings)

    @property
    def bounds(self) -> str:
        return ",".join(sorted({s.bound for s in self.sizings}))


def plan(load: Workload, groups: int = 1, policy: Policy | None = None,
         costs: dict[str, Cost] = COSTS) -> Plan:  # fmt: skip
    """Replicas for ``load``; ``groups`` > 1 is the partition-affine placement."""
    policy = policy or Policy()
    parts = slices(load, groups)
    sizings = [size(part, policy, costs) for part in parts]
    ceiling = (policy.max_cpu - cost("event_fixed", costs)) / (cost("event_us", costs) / 1e6)
    return Plan(
        "shared" if groups == 1 else "affine",
        groups,
        sizings,
        ceiling,
        max(part.events_per_s for part in parts),
    )


def storm_seconds(load: Workload, replicas: int, policy: Policy | None = None,
                  costs: dict[str, Cost] = COSTS) -> float:  # fmt: skip
    """Time for one failed replica's clients to be handshaken by the others (shared
    placement), each survivor spending its headroom (1 - max_cpu) on handshakes."""
    policy = policy or Policy()
    if replicas < 2:
        return math.inf
    per_survivor = load.connections / replicas / (replicas - 1)
    return per_survivor * cost("handshake_live_ms", costs) / 1000 / (1 - policy.max_cpu)


SCENARIOS: list[tuple[str, Workload, list[int]]] = [
    ("W1: 10k conns, 500 events/s, F 100", Workload(10_000, 500, 100, 100, zipf=0.0), [1]),
    ("1M conns, 1,000 events/s, F 100", Workload(1_000_000, 1_000, 100, 10_000), [1, 8]),
    ("1M conns, 1,000 events/s, F 1,000", Workload(1_000_000, 1_000, 1_000, 10_000), [1, 8]),
    ("1M conns, 4,000 events/s, F 100", Workload(1_000_000, 4_000, 100, 10_000), [1, 8, 32]),
    ("1M conns, 10,000 events/s, F 100", Workload(1_000_000, 10_000, 100, 10_000), [1, 8, 32]),
    ("1M conns, 20,000 events/s, F 100", Workload(1_000_000, 20_000, 100, 10_000), [1, 8, 32]),
    (
        "1M conns, 4,000 events/s, F 100, 1 % broadcast",
        Workload(1_000_000, 4_000, 100, 10_000, broadcast_share=0.01),
        [1, 32],
    ),
    ("10M conns, 20,000 events/s, F 100", Workload(10_000_000, 20_000, 100, 100_000), [1, 64]),
]


def table(rows: list[tuple[str, Workload, list[int]]], policy: Policy) -> str:
    lines = [
        "| workload | placement (groups) | deliveries/s | replicas (= cores) | set by "
        "| busiest replica CPU | RSS per replica | Kafka egress | hottest group events/s "
        "| a lost replica's clients re-handshaken in |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for label, load, groups_list in rows:
        deliveries = sum(p.deliveries_per_s for p in slices(load, 1))
        for groups in groups_list:
            result = plan(load, groups, policy)
            if not result.feasible:
                lines.append(
                    f"| {label} | {result.placement} ({groups}) | {deliveries:,.0f} "
                    f"| - | ceiling: {result.hottest_group_events_per_s:,.0f} events/s > "
                    f"{result.ceiling_events_per_s:,.0f} | - | - | - | - | - |"
                )
                continue
            rss = max(s.rss_mib_per_replica for s in result.sizings)
            storm = storm_seconds(load, result.replicas, policy)
            lines.append(
                f"| {label} | {result.placement} ({groups}) | {deliveries:,.0f} "
                f"| {result.replicas:,} | {result.bounds} | {100 * result.max_cpu:.0f} % "
                f"| {rss:,.0f} MiB | {result.kafka_bytes_per_s / 1e6:,.1f} MB/s "
                f"| {result.hottest_group_events_per_s:,.0f} | {storm:,.1f} s |"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--connections", type=int)
    parser.add_argument("--events", type=float, help="events/s of the channel")
    parser.add_argument("--fanout", type=float, default=100, help="mean recipients per event")
    parser.add_argument("--orgs", type=int, default=10_000)
    parser.add_argument("--zipf", type=float, default=1.0)
    parser.add_argument("--broadcast", type=float, default=0.0, help="share of events to all")
    parser.add_argument("--groups", default="1,8,32", help="placements to compare")
    parser.add_argument("--max-cpu", type=float, default=Policy.max_cpu)
    parser.add_argument("--memory-mib", type=float, default=Policy.memory_limit_mib)
    parser.add_argument("--latency-ms", type=float, default=Policy.latency_budget_ms)
    parser.add_argument("--coalesced", action="store_true")
    args = parser.parse_args(argv)
    policy = replace(
        Policy(),
        max_cpu=args.max_cpu,
        memory_limit_mib=args.memory_mib,
        latency_budget_ms=args.latency_ms,
        coalesced=args.coalesced,
    )
    rows = SCENARIOS
    if args.connections and args.events:
        load = Workload(
            args.connections, args.events, args.fanout, args.orgs, args.zipf, args.broadcast
        )
        rows = [("given", load, [int(g) for g in args.groups.split(",")])]
    print(table(rows, policy))
    print()
    print("| unit cost | value | measured? | source |")
    print("|---|---|---|---|")
    for name, item in COSTS.items():
        kind = "measured" if item.measured else "modelled"
        print(f"| {name}: {item.unit} | {item.value:g} | {kind} | {item.source} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
