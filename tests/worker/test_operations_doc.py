"""docs/operations.md names every metric the worker and the operator export."""

from pathlib import Path

from prometheus_client import CollectorRegistry

from clarion_worker.metrics import WorkerMetrics

DOC = Path(__file__).resolve().parents[2] / "docs" / "operations.md"


def _families(registry: CollectorRegistry) -> set[str]:
    names = set()
    for family in registry.collect():
        suffix = {"counter": "_total", "info": "_info"}.get(family.type, "")
        names.add(family.name + suffix)
    return names


def test_every_worker_metric_is_documented() -> None:
    registry = CollectorRegistry()
    WorkerMetrics.create(registry)
    text = DOC.read_text()
    missing = sorted(name for name in _families(registry) if f"`{name}`" not in text)
    assert not missing, f"undocumented in docs/operations.md: {missing}"
