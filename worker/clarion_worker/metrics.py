"""The worker's Prometheus metrics, shaped after Centrifugo's in Prometheus conventions.

Every metric lives in a registry the caller passes in (one per process; tests build
their own and read values back). Labels are per topic, transport, code or reason,
never per connection. docs/operations.md lists them; a test keeps that list honest.
"""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_FANOUT_BUCKETS = (0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1)
_PASS_BUCKETS = (0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)


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
    broadcast_duration: Histogram
    write_pass_duration: Histogram
    consumer_lag: Gauge
    paused_partitions: Gauge
    resumes: Counter
    auth_failures: Counter
    draining: Gauge

    @classmethod
    def create(cls, registry: CollectorRegistry) -> WorkerMetrics:
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
                "(direct writes: of each distinct frame sequence in a write pass).",
                ["transport"],
                buckets=_LATENCY_BUCKETS,
                registry=registry,
            ),
            broadcast_duration=Histogram(
                f"{ns}_broadcast_duration_seconds",
                "Time to route one event and queue it for all its recipients.",
                buckets=_FANOUT_BUCKETS,
                registry=registry,
            ),
            write_pass_duration=Histogram(
                f"{ns}_write_pass_duration_seconds",
                "Time of one write pass: encoding and writing every client's queued frames.",
                buckets=_PASS_BUCKETS,
                registry=registry,
            ),
            consumer_lag=Gauge(
                f"{ns}_consumer_lag",
                "Records between the partition's end and this worker's position.",
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
            auth_failures=Counter(
                f"{ns}_auth_failures_total",
                "Rejected connection attempts by reason.",
                ["reason"],
                registry=registry,
            ),
            draining=Gauge(
                f"{ns}_draining", "1 while the worker drains its clients.", registry=registry
            ),
        )
