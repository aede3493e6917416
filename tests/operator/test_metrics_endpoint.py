"""The operator's HTTP endpoint: process metrics on its own registry, and a readiness probe
that is not the liveness probe (issue 12, items 13 and 14)."""

from __future__ import annotations

import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest

from clarion_contract.worker_config import WORKER_PORT
from clarion_devstack.procs import free_port
from clarion_operator.metrics import Metrics
from clarion_operator.settings import ProcessSettings


def test_process_metrics_are_on_the_operators_registry() -> None:
    names = {family.name for family in Metrics().registry.collect()}
    for name in ("process_cpu_seconds", "process_resident_memory_bytes", "process_open_fds"):
        assert name in names
    assert "python_info" in names


@pytest.fixture
def served() -> Iterator[tuple[Metrics, int]]:
    metrics = Metrics()
    port = free_port()
    server = metrics.serve(port, host="127.0.0.1")
    assert server is not None
    try:
        yield metrics, port
    finally:
        server.shutdown()
        server.server_close()


def _get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as answer:
            return int(answer.status), answer.read().decode()
    except urllib.error.HTTPError as err:
        with err:
            return err.code, err.read().decode()


def test_readyz_follows_start_and_stop(served: tuple[Metrics, int]) -> None:
    metrics, port = served
    assert _get(port, "/readyz")[0] == 503
    metrics.ready.set()
    assert _get(port, "/readyz") == (200, "ok\n")
    metrics.ready.clear()
    assert _get(port, "/readyz")[0] == 503


def test_metrics_are_served_with_process_metrics(served: tuple[Metrics, int]) -> None:
    metrics, port = served
    metrics.reconciles.labels("success", "handler").inc()
    status, text = _get(port, "/metrics")
    assert status == 200
    assert 'clarion_operator_reconciles_total{result="success",trigger="handler"} 1.0' in text
    assert "process_open_fds " in text
    assert _get(port, "/elsewhere")[0] == 404


def test_port_zero_serves_nothing() -> None:
    assert Metrics().serve(0) is None


def test_default_ports_do_not_clash_with_the_worker() -> None:
    settings = ProcessSettings(namespaces=("a",))
    ports = {settings.metrics_port, settings.liveness_port, WORKER_PORT}
    assert len(ports) == 3
