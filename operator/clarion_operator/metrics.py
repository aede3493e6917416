"""The operator's own Prometheus metrics, on a registry of its own.

A private registry (not prometheus_client's global one) keeps the exposition to what the
operator means, and lets tests build as many as they like without "duplicated timeseries".
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

RESULTS: Final = ("success", "retry", "permanent", "waiting")


@dataclass
class Metrics:
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        self.reconciles = Counter(
            "clarion_operator_reconciles",
            "Reconciles of a RealtimeChannel by result (success, retry, permanent, waiting).",
            ["result", "trigger"],
            registry=self.registry,
        )
        self.duration = Histogram(
            "clarion_operator_reconcile_duration_seconds",
            "Wall time of one reconcile, Kafka and API calls included.",
            ["trigger"],
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
            registry=self.registry,
        )
        self.topics_managed = Gauge(
            "clarion_operator_topics_managed",
            "Kafka topics owned by RealtimeChannels this operator reconciles.",
            registry=self.registry,
        )
        self.kafka_errors = Counter(
            "clarion_operator_kafka_errors",
            "Kafka failures by condition reason (KafkaUnreachable, KafkaError, ...).",
            ["reason"],
            registry=self.registry,
        )
        self._topics: dict[str, int] = {}

    def set_topics(self, channel_uid: str, count: int | None) -> None:
        """Record how many topics one channel owns (None: the channel is gone)."""
        if count is None:
            self._topics.pop(channel_uid, None)
        else:
            self._topics[channel_uid] = count
        self.topics_managed.set(sum(self._topics.values()))

    def serve(self, port: int) -> None:
        """Serve /metrics on ``port`` from a daemon thread (0: do not serve)."""
        if port:
            start_http_server(port, registry=self.registry)
