"""Chart hardening (issue 12, item 14): no key written twice in any rendered object, an
opt-in NetworkPolicy for the operator and the workers, a readiness probe that is not the
liveness probe, and an operator port that does not clash with the workers' (item 15)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from clarion_contract.worker_config import WORKER_PORT
from clarion_devstack.charts import Helm

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "clarion"
CI_VALUES = sorted((CHART / "ci").glob("*-values.yaml"))


class _StrictLoader(yaml.SafeLoader):
    """A YAML loader that refuses a mapping key written twice, as yamllint's key-duplicates
    rule and kube-linter do (PyYAML and Go's parsers silently keep one of them)."""


def _no_duplicates(loader: _StrictLoader, node: yaml.MappingNode, deep: bool = False) -> Any:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", key_node.start_mark
            )
        seen.add(key)
    return yaml.SafeLoader.construct_mapping(loader, node, deep=deep)


_StrictLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG,
    _no_duplicates,  # type: ignore[arg-type]
)


def strict_load_all(text: str) -> list[Any]:
    return [d for d in yaml.load_all(text, Loader=_StrictLoader) if d]


def test_the_strict_loader_catches_a_duplicate_key() -> None:
    with pytest.raises(yaml.constructor.ConstructorError, match="duplicate key 'a'"):
        strict_load_all("x:\n  a: 1\n  b: 2\n  a: 3\n")


@pytest.mark.parametrize(
    "values", [None, *CI_VALUES], ids=["defaults", *(v.name for v in CI_VALUES)]
)
def test_no_rendered_object_repeats_a_key(helm: Helm, values: Path | None) -> None:
    # helm test hooks included: the test Pod repeated app.kubernetes.io/component.
    text = helm.template(
        "--set=prometheusRule.enabled=true",
        "--set=grafanaDashboard.enabled=true",
        values=[] if values is None else [values],
    )
    assert strict_load_all(text)


def _objects(helm: Helm, *args: str, namespace: str = "ops") -> list[dict[str, Any]]:
    return helm.objects(*args, namespace=namespace)


def _policies(objs: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    return {
        (o["metadata"]["namespace"], o["metadata"]["name"]): o
        for o in objs
        if o["kind"] == "NetworkPolicy"
    }


def test_network_policies_are_off_by_default(helm: Helm) -> None:
    assert _policies(_objects(helm)) == {}


def test_network_policies_for_the_operator_and_each_watched_namespace(helm: Helm) -> None:
    objs = _objects(
        helm,
        "--set=networkPolicy.enabled=true",
        "--set=watch.namespaces={a,b}",
        '--set-json=networkPolicy.operator.from=[{"podSelector":{"matchLabels":{"app":"prom"}}}]',
    )
    policies = _policies(objs)
    assert set(policies) == {("ops", "clarion"), ("a", "clarion-workers"), ("b", "clarion-workers")}
    operator = policies[("ops", "clarion")]["spec"]
    deployment = next(o for o in objs if o["kind"] == "Deployment")
    assert operator["podSelector"]["matchLabels"] == deployment["spec"]["selector"]["matchLabels"]
    assert operator["policyTypes"] == ["Ingress"]
    (rule,) = operator["ingress"]
    assert {p["port"] for p in rule["ports"]} == {"metrics", "healthz"}
    assert rule["from"] == [{"podSelector": {"matchLabels": {"app": "prom"}}}]
    workers = policies[("a", "clarion-workers")]["spec"]
    assert workers["podSelector"]["matchLabels"] == {"app.kubernetes.io/name": "clarion-worker"}
    (rule,) = workers["ingress"]
    assert rule["ports"] == [{"port": "http", "protocol": "TCP"}]
    assert "from" not in rule  # any source: clients come through the ingress or gateway


def test_worker_policy_switch_and_all_namespaces(helm: Helm) -> None:
    objs = _objects(
        helm, "--set=networkPolicy.enabled=true", "--set=networkPolicy.workers.enabled=false"
    )
    assert set(_policies(objs)) == {("ops", "clarion")}
    failed = helm.run(
        "template",
        "clarion",
        str(CHART),
        "--set=networkPolicy.enabled=true",
        "--set=watch.allNamespaces=true",
        check=False,
    )
    assert failed.returncode != 0
    assert "needs networkPolicy.workers.namespaces" in failed.stderr
    objs = _objects(
        helm,
        "--set=networkPolicy.enabled=true",
        "--set=watch.allNamespaces=true",
        "--set=networkPolicy.workers.namespaces={x}",
    )
    assert set(_policies(objs)) == {("ops", "clarion"), ("x", "clarion-workers")}


def test_readiness_is_its_own_endpoint_and_ports_do_not_clash(helm: Helm) -> None:
    deployment = next(o for o in _objects(helm) if o["kind"] == "Deployment")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "healthz"}
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"metrics": 8082, "healthz": 8081}
    assert WORKER_PORT not in ports.values()
    assert f"--metrics-port={ports['metrics']}" in container["args"]
