"""What the worker's /metrics shows before anything happened, and which series a
delivery lands in (issue 12 item 13, issue 19 item 3)."""

from __future__ import annotations

from typing import Any, get_args

from prometheus_client import CollectorRegistry, generate_latest

from clarion_worker.consumer import ChannelConsumer
from clarion_worker.core.auth import AuthFailureReason
from clarion_worker.core.events import BAD_RECORD_REASONS
from clarion_worker.core.hub import Hub
from clarion_worker.core.protocol import CloseCode
from clarion_worker.core.settings import load_settings
from clarion_worker.metrics import WorkerMetrics


def _value(registry: CollectorRegistry, name: str, **labels: str) -> float | None:
    return registry.get_sample_value(name, labels)


def test_labelled_counters_start_at_zero_for_every_known_label_value() -> None:
    registry = CollectorRegistry()
    WorkerMetrics.create(registry)
    assert _value(registry, "clarion_worker_drops_total", reason="slow_consumer") == 0
    for code in CloseCode:
        for transport in ("websocket", "sse"):
            got = _value(
                registry, "clarion_worker_disconnects_total", transport=transport, code=str(code)
            )
            assert got == 0, (transport, code)
    for outcome in ("window", "kafka", "reset", "failed"):
        assert _value(registry, "clarion_worker_resumes_total", outcome=outcome) == 0
    for reason in get_args(AuthFailureReason):
        assert _value(registry, "clarion_worker_auth_failures_total", reason=reason) == 0
    assert _value(registry, "clarion_worker_deliveries_total", transport="sse") == 0
    count = "clarion_worker_delivery_latency_seconds_count"
    assert _value(registry, count, transport="websocket") == 0


def test_bad_records_start_at_zero_per_topic_and_reason() -> None:
    doc: dict[str, Any] = {
        "apiVersion": "clarion.dev/worker-config/v1",
        "channel": "m",
        "kafka": {"bootstrapServers": "127.0.0.1:9"},
        "topics": [{"name": "m.orgs", "audience": "organization"}],
        "auth": {"mode": "none"},
    }
    settings = load_settings(doc, {}, hostname="h", edge_env_names=())
    registry = CollectorRegistry()
    metrics = WorkerMetrics.create(registry)
    ChannelConsumer(settings, Hub(), metrics, lambda _connection: None)
    for reason in BAD_RECORD_REASONS:
        got = _value(registry, "clarion_worker_bad_records_total", topic="m.orgs", reason=reason)
        assert got == 0, reason


def test_process_metrics_are_exported() -> None:
    registry = CollectorRegistry()
    WorkerMetrics.create(registry)
    text = generate_latest(registry).decode()
    for name in ("process_resident_memory_bytes", "process_open_fds", "process_cpu_seconds_total"):
        assert f"\n{name} " in text, name
    assert (_value(registry, "process_resident_memory_bytes") or 0) > 1 << 20
    assert (_value(registry, "process_open_fds") or 0) >= 3
