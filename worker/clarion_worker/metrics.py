"""The worker's Prometheus metrics, shaped after Centrifugo's in Prometheus conventions.

Every metric lives in a registry the caller passes in (one per process; tests build
their own and read values back). Labels are per topic, transport, code or reason,
never per connection. docs/operations.md lists them; a test keeps that list honest.

Labelled counters start at 0 for every label value known in advance (transports, close
codes, reasons; topics once the consumer knows them), so a dashboard shows 0 rather than
"no data" and ``rate()`` sees the first increment. The registry also carries the
standard ``process_*`` metrics (CPU, resident memory, open file descriptors).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, get_args

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    ProcessCollector,
)

from clarion_worker.core.auth import AuthFailureReason
from clarion_worker.core.protocol import CloseCode

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_FANOUT_BUCKETS = (0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1)
_PASS_BUCKETS = (0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)
_LOOP_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
_REPLAY_BUCKETS = (0.01, 0.1, 1.0, 5.0, 30.0, 60.0, 300.0, 900.0, 3600.0, 21600.0, 86400.0)

TRANSPORTS: Final = ("websocket", "sse")
FRAME_KINDS: Final = ("one", "batch")
DROP_REASONS: Final = ("slow_consumer",)
RESUME_OUTCOMES: Final = ("window", "kafka", "reset", "failed")


@dataclass(frozen=True)
class WorkerMetrics:
    info: Info
    connections: Gauge
    connects: Counter
    disconnects: Counter
    events_consumed: Counter
    bad_records: Counter
    deliveries: Counter
    frames_sent: Counter
    drops: Counter
    delivery_latency: Histogram
    replay_latency: Histogram
    broadcast_duration: Histogram
    write_pass_duration: Histogram
    loop_lag: Histogram
    gc_collection: Histogram
    gc_freezes: Counter
    consumer_lag: Gauge
    fetch_age: Gauge
    paused_partitions: Gauge
    resumes: Counter
    readbacks_open: Gauge
    auth_failures: Counter
    draining: Gauge
    pending_handshakes: Gauge
    handshake_refusals: Counter
    timestamps_ignored: Counter
    userless_events: Counter

    @classmethod
    def create(cls, registry: CollectorRegistry, *, process: bool = True) -> WorkerMetrics:
        """The worker's metrics in ``registry``; ``process``: add ``process_*`` as well."""
        metrics = cls._build(registry)
        metrics._initialise()
        if process:
            ProcessCollector(registry=registry)
        return metrics

    def _initialise(self) -> None:
        for transport in TRANSPORTS:
            self.connections.labels(transport)
            self.connects.labels(transport)
            self.deliveries.labels(transport)
            for kind in FRAME_KINDS:
                self.frames_sent.labels(transport, kind)
            for code in CloseCode:
                self.disconnects.labels(transport, str(int(code)))
        self.delivery_latency.labels("websocket")
        self.replay_latency.labels("websocket")
        for reason in DROP_REASONS:
            self.drops.labels(reason)
        for outcome in RESUME_OUTCOMES:
            self.resumes.labels(outcome)
        for auth_reason in get_args(AuthFailureReason):
            self.auth_failures.labels(auth_reason)

    @classmethod
    def _build(cls, registry: CollectorRegistry) -> WorkerMetrics:
        ns = "clarion_worker"
        return cls(
            info=Info(
                f"{ns}_build", "Channel, replica and version of this worker.", registry=registry
            ),
            connections=Gauge(
                f"{ns}_connections", "Open client connections.", ["transport"], registry=registry
            ),
            connects=Counter(
                f"{ns}_connects_total",
                "Accepted client connections.",
                ["transport"],
                registry=registry,
            ),
            disconnects=Counter(
                f"{ns}_disconnects_total",
                "Closed client connections by close code.",
                ["transport", "code"],
                registry=registry,
            ),
            events_consumed=Counter(
                f"{ns}_events_consumed_total",
                "Valid records read from Kafka.",
                ["topic"],
                registry=registry,
            ),
            bad_records=Counter(
                f"{ns}_bad_records_total",
                "Records skipped as undeliverable, by reason.",
                ["topic", "reason"],
                registry=registry,
            ),
            deliveries=Counter(
                f"{ns}_deliveries_total",
                "Events written to clients (an event in a batch frame counts once).",
                ["transport"],
                registry=registry,
            ),
            frames_sent=Counter(
                f"{ns}_frames_sent_total",
                "Frames written to clients.",
                ["transport", "kind"],
                registry=registry,
            ),
            drops=Counter(
                f"{ns}_drops_total",
                "Events not delivered to a connection, by reason.",
                ["reason"],
                registry=registry,
            ),
            delivery_latency=Histogram(
                f"{ns}_delivery_latency_seconds",
                "Kafka record timestamp to frame written, for the oldest event of each frame "
                "(direct writes: of each distinct frame sequence in a write pass, or of an "
                "event written by its dispatch).",
                ["transport"],
                buckets=_LATENCY_BUCKETS,
                registry=registry,
            ),
            replay_latency=Histogram(
                f"{ns}_replay_delivery_latency_seconds",
                "Like delivery_latency_seconds, for frames written while a client resumes "
                "(replayed events, and the write that hands over to live): their Kafka "
                "timestamps are as old as the client's cursor, so they are kept apart.",
                ["transport"],
                buckets=_REPLAY_BUCKETS,
                registry=registry,
            ),
            broadcast_duration=Histogram(
                f"{ns}_broadcast_duration_seconds",
                "Time to route one event and queue it for all its recipients (an event "
                "alone in its fetch: to write it to those whose queue is empty).",
                buckets=_FANOUT_BUCKETS,
                registry=registry,
            ),
            write_pass_duration=Histogram(
                f"{ns}_write_pass_duration_seconds",
                "Time of one write pass: encoding and writing every client's queued frames.",
                buckets=_PASS_BUCKETS,
                registry=registry,
            ),
            loop_lag=Histogram(
                f"{ns}_event_loop_lag_seconds",
                "How late the event loop ran a 100 ms timer: every client waits this long.",
                buckets=_LOOP_BUCKETS,
                registry=registry,
            ),
            gc_collection=Histogram(
                f"{ns}_gc_collection_seconds",
                "Full garbage collections the worker ran after connections closed.",
                buckets=_LOOP_BUCKETS,
                registry=registry,
            ),
            gc_freezes=Counter(
                f"{ns}_gc_freezes",
                "Times the worker moved what its garbage collector tracks out of automatic "
                "collections after a batch of new sessions (gc.freeze).",
                registry=registry,
            ),
            consumer_lag=Gauge(
                f"{ns}_consumer_lag",
                "Records between the partition's end and this worker's position, as of the "
                "last answer from Kafka (see consumer_fetch_age_seconds).",
                ["topic", "partition"],
                registry=registry,
            ),
            fetch_age=Gauge(
                f"{ns}_consumer_fetch_age_seconds",
                "Seconds since Kafka last answered a fetch for the partition (lag is as "
                "old as this).",
                ["topic", "partition"],
                registry=registry,
            ),
            paused_partitions=Gauge(
                f"{ns}_paused_partitions",
                "Partitions paused because clients cannot keep up.",
                registry=registry,
            ),
            resumes=Counter(
                f"{ns}_resumes_total", "Resume requests by outcome.", ["outcome"], registry=registry
            ),
            readbacks_open=Gauge(
                f"{ns}_readbacks_open",
                "Kafka read-backs (resumes older than the window) with a consumer open.",
                registry=registry,
            ),
            auth_failures=Counter(
                f"{ns}_auth_failures_total",
                "Rejected connection attempts by reason.",
                ["reason"],
                registry=registry,
            ),
            draining=Gauge(
                f"{ns}_draining", "1 while the worker drains its clients.", registry=registry
            ),
            pending_handshakes=Gauge(
                f"{ns}_pending_handshakes",
                "Connections whose request head has not fully arrived yet.",
                registry=registry,
            ),
            handshake_refusals=Counter(
                f"{ns}_handshake_refusals_total",
                "Connections answered before their request reached the app, by reason: "
                "url_too_long (414), headers_too_large (431), handshake_timeout (408), "
                "unavailable (503, too many pending).",
                ["reason"],
                registry=registry,
            ),
            timestamps_ignored=Counter(
                f"{ns}_timestamps_ignored_total",
                "Producer timestamps present but not used (the Kafka timestamp stood in), "
                "by reason: unparsable, wrong_type, implausible.",
                ["topic", "reason"],
                registry=registry,
            ),
            userless_events=Counter(
                f"{ns}_userless_events_total",
                "Events of user topics that named no user, delivered to the members of "
                "their organization (topics[].withoutUser: organization).",
                ["topic"],
                registry=registry,
            ),
        )
