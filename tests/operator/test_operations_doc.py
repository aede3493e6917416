"""docs/operations.md names every metric the operator exports."""

from pathlib import Path

from clarion_operator.metrics import Metrics

DOC = Path(__file__).resolve().parents[2] / "docs" / "operations.md"


def test_every_operator_metric_is_documented() -> None:
    text = DOC.read_text()
    names = set()
    for family in Metrics().registry.collect():
        names.add(family.name + ("_total" if family.type == "counter" else ""))
    missing = sorted(name for name in names if f"`{name}`" not in text)
    assert not missing, f"undocumented in docs/operations.md: {missing}"
