"""The capacity model's arithmetic (bench/capacity.py, docs/scaling.md) on round numbers."""

from __future__ import annotations

import math
from collections.abc import Callable
from types import ModuleType

import pytest


@pytest.fixture(scope="module")
def cap(bench_script: Callable[[str], ModuleType]) -> ModuleType:
    return bench_script("capacity")


def round_costs(cap: ModuleType) -> dict[str, object]:
    values = {
        "event_us": 100.0,  # 10,000 events/s fill a core
        "event_fixed": 0.0,
        "delivery_us": 20.0,  # 50,000 deliveries/s fill a core
        "coalesced_delivery_us": 4.0,
        "handshake_ms": 1.0,
        "handshake_live_ms": 2.0,
        "idle_us_per_s": 10.0,
        "conn_kib": 20.0,
        "base_mib": 24.0,
        "event_bytes": 500.0,
    }
    return {name: cap.Cost(value, "", "test", True) for name, value in values.items()}


def test_shared_placement_sizes_by_cpu_and_pays_every_event_on_every_replica(
    cap: ModuleType,
) -> None:
    costs = round_costs(cap)
    policy = cap.Policy(max_cpu=0.6, memory_limit_mib=1024, min_replicas=2,
                        latency_budget_ms=10_000)  # fmt: skip
    load = cap.Workload(connections=100_000, events_per_s=1_000, fanout=200, organizations=10,
                        zipf=0.0)  # fmt: skip
    result = cap.plan(load, 1, policy, costs)
    (sizing,) = result.sizings
    # Per replica: 1,000 x 100 us = 0.1 (fixed); spread: 200,000 deliveries x 20 us = 4.0
    # plus 100,000 x 10 us = 1.0, over R: (4.0 + 1.0) / (0.6 - 0.1) = 10 replicas.
    assert sizing.replicas == 10
    assert sizing.bound == "cpu"
    assert sizing.cpu_per_replica == pytest.approx(0.6)
    # Every replica reads the whole channel: 10 x 1,000 events x 500 bytes.
    assert result.kafka_bytes_per_s == pytest.approx(5_000_000)
    assert sizing.rss_mib_per_replica == pytest.approx(24 + 10_000 * 20 / 1024)
    # The design's ceiling: one core's decode rate at the CPU target, whatever R.
    assert result.ceiling_events_per_s == pytest.approx(6_000)


def test_the_fixed_consume_cost_counts_once_events_flow(cap: ModuleType) -> None:
    costs = {**round_costs(cap), "event_fixed": cap.Cost(0.1, "", "test", True)}
    policy = cap.Policy(max_cpu=0.6, latency_budget_ms=10_000)
    busy = cap.plan(cap.Workload(100_000, 1_000, 200, 10, zipf=0.0), 1, policy, costs)
    # 0.1 + 0.1 fixed: (4.0 + 1.0) / (0.6 - 0.2) = 12.5 -> 13 replicas.
    assert busy.sizings[0].replicas == 13
    assert busy.ceiling_events_per_s == pytest.approx(5_000)
    idle = cap.plan(cap.Workload(100_000, 0, 0, 10, zipf=0.0), 1, policy, costs)
    assert idle.sizings[0].cpu_per_replica == pytest.approx(100_000 * 10e-6 / 2)


def test_past_the_ceiling_no_replica_count_helps(cap: ModuleType) -> None:
    costs = round_costs(cap)
    load = cap.Workload(1_000, 6_000, 10, 10, zipf=0.0)
    result = cap.plan(load, 1, cap.Policy(max_cpu=0.6), costs)
    assert not result.feasible
    assert result.sizings[0].bound == "ceiling"


def test_memory_and_minimum_bounds(cap: ModuleType) -> None:
    costs = round_costs(cap)
    policy = cap.Policy(max_cpu=0.6, memory_limit_mib=24 + 1000 * 20 / 1024,
                        latency_budget_ms=10_000)  # fmt: skip
    idle = cap.Workload(connections=5_500, events_per_s=0, fanout=0, organizations=1)
    sizing = cap.plan(idle, 1, policy, costs).sizings[0]
    assert (sizing.replicas, sizing.bound) == (6, "memory")  # 1,000 connections per pod
    tiny = cap.Workload(connections=10, events_per_s=1, fanout=1, organizations=1)
    assert cap.plan(tiny, 1, policy, costs).sizings[0].replicas == 2


def test_latency_bound_limits_recipients_per_replica_and_pass(cap: ModuleType) -> None:
    costs = round_costs(cap)
    policy = cap.Policy(max_cpu=0.6, latency_budget_ms=300)
    # An event to 50,000 clients: 50,000 x 20 us x 1.5 = 1.5 s of passes, 0.3 s allowed.
    load = cap.Workload(connections=50_000, events_per_s=0.001, fanout=50_000, organizations=1)
    sizing = cap.plan(load, 1, policy, costs).sizings[0]
    assert (sizing.replicas, sizing.bound) == (5, "latency")


def test_affine_placement_splits_events_and_egress_by_group(cap: ModuleType) -> None:
    costs = round_costs(cap)
    policy = cap.Policy(max_cpu=0.6, latency_budget_ms=10_000)
    load = cap.Workload(100_000, 8_000, 100, organizations=64, zipf=0.0)
    shared = cap.plan(load, 1, policy, costs)
    affine = cap.plan(load, 4, policy, costs)
    assert not shared.feasible  # 8,000 events/s > 6,000 per replica
    assert affine.feasible
    parts = cap.slices(load, 4)
    assert sum(p.events_per_s for p in parts) == pytest.approx(8_000)
    assert sum(p.connections for p in parts) == pytest.approx(100_000)
    assert affine.hottest_group_events_per_s == max(p.events_per_s for p in parts)
    assert affine.kafka_bytes_per_s == pytest.approx(
        sum(s.replicas * p.events_per_s * 500 for s, p in zip(affine.sizings, parts, strict=True))
    )
    # Placement is a stable hash: the same organizations land in the same groups.
    assert [cap.group_of(f"org-{i:06d}", 4) for i in range(8)] == [
        cap.group_of(f"org-{i:06d}", 4) for i in range(8)
    ]


def test_broadcasts_reach_every_group(cap: ModuleType) -> None:
    load = cap.Workload(1_000, 100, 10, organizations=16, zipf=0.0, broadcast_share=0.5)
    parts = cap.slices(load, 4)
    for part in parts:
        share = part.connections / 1_000
        assert part.events_per_s == pytest.approx(50 + 50 * share)
        assert part.deliveries_per_s == pytest.approx(50 * share * 10 + 50 * part.connections)


def test_zipf_sizes_and_storm(cap: ModuleType) -> None:
    orgs = cap.organizations(cap.Workload(1_000, 100, 10, organizations=4, zipf=1.0))
    weights = [1, 1 / 2, 1 / 3, 1 / 4]
    assert [o.connections for o in orgs] == pytest.approx(
        [1_000 * w / sum(weights) for w in weights]
    )
    costs = round_costs(cap)
    load = cap.Workload(10_000, 0, 0, organizations=1)
    # 10,000 / 5 replicas = 2,000 clients over 4 survivors, 2 ms each, on 40 % headroom.
    assert cap.storm_seconds(load, 5, cap.Policy(max_cpu=0.6), costs) == pytest.approx(2.5)
    assert math.isinf(cap.storm_seconds(load, 1, cap.Policy(), costs))


def test_scenarios_print(cap: ModuleType, capsys: pytest.CaptureFixture[str]) -> None:
    assert cap.main([]) == 0
    out = capsys.readouterr().out
    assert "| unit cost | value | measured? | source |" in out
    assert "ceiling" in out
