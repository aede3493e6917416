"""The operator's own Prometheus metrics, on a registry of its own, and its HTTP endpoint.

A private registry (not prometheus_client's global one) keeps the exposition to what the
operator means, and lets tests build as many as they like without "duplicated timeseries".
It also carries the process collectors (``process_*``: CPU, memory, open file
descriptors; ``python_info``; ``python_gc_*``), which the global registry would have had.

:meth:`Metrics.serve` answers ``/metrics`` and ``/readyz`` on one port. Readiness is not
liveness: kopf's ``/healthz`` (another port) says the event loop runs; ``/readyz`` says
the operator has finished starting (kopf's startup handlers ran) and is not shutting down.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Final
from urllib.parse import urlsplit

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector

RESULTS: Final = ("success", "retry", "permanent", "waiting")
METRICS_PATH: Final = "/metrics"
READY_PATH: Final = "/readyz"


@dataclass
class Metrics:
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)
    #: Set once the operator has started, cleared when it begins to stop (``/readyz``).
    ready: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        # prometheus_client registers these on its global registry only; ours needs its own.
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        GCCollector(registry=self.registry)
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

    def serve(self, port: int, host: str = "0.0.0.0") -> ThreadingHTTPServer | None:
        """Serve /metrics and /readyz on ``port`` from a daemon thread (0: do not serve)."""
        if not port:
            return None
        metrics = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                path = urlsplit(self.path).path
                if path == METRICS_PATH:
                    self._answer(200, generate_latest(metrics.registry), CONTENT_TYPE_LATEST)
                elif path == READY_PATH:
                    ok = metrics.ready.is_set()
                    body = b"ok\n" if ok else b"not ready: starting or stopping\n"
                    self._answer(200 if ok else 503, body, "text/plain; charset=utf-8")
                else:
                    self._answer(404, b"not found\n", "text/plain; charset=utf-8")

            def _answer(self, status: int, body: bytes, content_type: str) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                pass  # probes and scrapes every few seconds: no access log

        server = ThreadingHTTPServer((host, port), Handler)
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, name="metrics-http", daemon=True).start()
        return server
