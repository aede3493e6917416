"""What the worker's /metrics shows before anything happened, and which series a
delivery lands in (issue 12 item 13, issue 19 item 3)."""

from __future__ import annotations

import asyncio
import time
from typing import Any, get_args

from prometheus_client import CollectorRegistry, generate_latest

from clarion_worker.consumer import ChannelConsumer
from clarion_worker.core.auth import AuthFailureReason
from clarion_worker.core.events import BAD_RECORD_REASONS
from clarion_worker.core.hub import Connection, Hub
from clarion_worker.core.outbox import Outbox
from clarion_worker.core.principal import Principal
from clarion_worker.core.protocol import CloseCode
from clarion_worker.core.settings import LimitsSettings, load_settings
from clarion_worker.direct import WRITABLE
from clarion_worker.flusher import Flusher
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


class _Sink:
    def __init__(self) -> None:
        self.written: list[bytes] = []

    def state(self) -> int:
        return WRITABLE

    def write(self, data: bytes) -> None:
        self.written.append(data)

    def close(self, code: int, reason: str, *, handshake_seconds: float) -> None:
        raise AssertionError("not closing")


class _Session:
    def __init__(self, replaying: bool) -> None:
        self.sink = _Sink()
        self.marked = False
        self.outbox = Outbox(max_events=100, max_bytes=10**6)
        self.connection = Connection("c", Principal(frozenset({"o"}), None), self.outbox)
        self.close_code: CloseCode | None = None
        self.pending_close: CloseCode | None = None
        self.close_reason = ""
        self.resume_task: Any = None
        self.frames_written = 0
        self.events_written = False
        self.replaying = replaying
        self.replay_done = False


def _event(kafka_ms: int) -> str:
    return f'{{"type":"event","id":"x","kafkaTs":{kafka_ms},"data":1}}'


async def test_replayed_frames_are_kept_out_of_live_delivery_latency() -> None:
    registry = CollectorRegistry()
    flusher = Flusher(LimitsSettings(), WorkerMetrics.create(registry))
    hour_old = int(time.time() * 1000) - 3_600_000
    resuming = _Session(replaying=True)
    frame = _event(hour_old)
    resuming.outbox.offer_replay(frame, len(frame))
    flusher.mark(resuming)  # type: ignore[arg-type]
    await asyncio.sleep(0)
    live_count = "clarion_worker_delivery_latency_seconds_count"
    replay_sum = "clarion_worker_replay_delivery_latency_seconds_sum"
    assert _value(registry, live_count, transport="websocket") == 0
    assert (_value(registry, replay_sum, transport="websocket") or 0) >= 3599
    # The write that hands over to live is the last one counted as replay.
    resuming.replay_done = True
    resuming.outbox.offer_replay(frame, len(frame))
    flusher.mark(resuming)  # type: ignore[arg-type]
    await asyncio.sleep(0)
    assert not resuming.replaying
    assert _value(registry, live_count, transport="websocket") == 0
    recent = _event(int(time.time() * 1000))
    resuming.outbox.offer(recent, len(recent))
    flusher.mark(resuming)  # type: ignore[arg-type]
    await asyncio.sleep(0)
    assert _value(registry, live_count, transport="websocket") == 1
    live_sum = "clarion_worker_delivery_latency_seconds_sum"
    assert (_value(registry, live_sum, transport="websocket") or 0) < 60
