"""The chart without a cluster: lint, render every scenario, least-privilege RBAC, generated
files in sync, documented values, and images that install only their own dependencies."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from clarion_devstack import charts, versions
from clarion_devstack.charts import Helm
from clarion_operator import kube as operator_kube
from clarion_operator.core import crd

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "clarion"
CI_VALUES = sorted((CHART / "ci").glob("*-values.yaml"))


def ci_id(path: Path) -> str:
    return path.name.removesuffix("-values.yaml")


def test_helm_is_the_pinned_version(helm: Helm) -> None:
    out = helm.run("version", "--template={{.Version}}").stdout
    assert out == f"v{versions.HELM}"


@pytest.mark.parametrize("values", [None, *CI_VALUES], ids=["defaults", *map(ci_id, CI_VALUES)])
def test_helm_lint_strict(helm: Helm, values: Path | None) -> None:
    args = [] if values is None else [f"--values={values}"]
    result = helm.run("lint", "--strict", str(CHART), *args)
    assert "0 chart(s) failed" in result.stdout


@pytest.mark.parametrize(
    "bad",
    [
        ["--set", "replicaCount=2"],
        ["--set", "watch.allNamespaces=true", "--set", "watch.namespaces={a}"],
        ["--set", "operator.logFormat=xml"],
        ["--set", "unknownKey=1"],
        ["--set", "metrics.port=0"],
    ],
    ids=["replicas-without-peering", "all-and-list", "log-format", "unknown-key", "port"],
)
def test_schema_refuses_bad_values(helm: Helm, bad: list[str]) -> None:
    result = helm.run("template", "clarion", str(CHART), *bad, check=False)
    assert result.returncode != 0
    assert "values don't meet the specifications of the schema" in result.stderr


def _kinds(objs: list[dict[str, Any]]) -> list[str]:
    return sorted(o["kind"] for o in objs)


def test_defaults_render_a_namespaced_operator_and_nothing_optional(helm: Helm) -> None:
    objs = helm.objects("--skip-tests", namespace="team-a")
    assert _kinds(objs) == [
        "Deployment",
        "Role",
        "RoleBinding",
        "Service",
        "ServiceAccount",
    ]
    deployment = next(o for o in objs if o["kind"] == "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert "--namespace=team-a" in container["args"]
    assert "--standalone" in container["args"]
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "healthz"}
    assert {p["name"]: p["containerPort"] for p in container["ports"]} == {
        "metrics": 8082,
        "healthz": 8081,
    }
    assert container["resources"]["limits"]["memory"] == "256Mi"
    role = next(o for o in objs if o["kind"] == "Role")
    assert role["metadata"]["namespace"] == "team-a"


def test_a_namespace_list_gets_a_role_in_each(helm: Helm) -> None:
    objs = helm.objects("--set", "watch.namespaces={a,b,a}", namespace="ops")
    roles = {(o["kind"], o["metadata"]["namespace"]) for o in objs if "Role" in o["kind"]}
    assert roles == {("Role", "a"), ("RoleBinding", "a"), ("Role", "b"), ("RoleBinding", "b")}
    binding = next(o for o in objs if o["kind"] == "RoleBinding")
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "clarion", "namespace": "ops"}
    ]
    args = next(o for o in objs if o["kind"] == "Deployment")["spec"]["template"]["spec"][
        "containers"
    ][0]["args"]
    assert [a for a in args if a.startswith("--namespace")] == ["--namespace=a", "--namespace=b"]


def test_cluster_wide_gets_a_cluster_role_and_no_role(helm: Helm) -> None:
    objs = helm.objects("--set", "watch.allNamespaces=true")
    kinds = _kinds(objs)
    assert "ClusterRole" in kinds
    assert "ClusterRoleBinding" in kinds
    assert "Role" not in kinds
    args = next(o for o in objs if o["kind"] == "Deployment")["spec"]["template"]["spec"][
        "containers"
    ][0]["args"]
    assert "--all-namespaces" in args


def _rules(objs: list[dict[str, Any]], kind: str) -> dict[tuple[str, str], set[str]]:
    out: dict[tuple[str, str], set[str]] = {}
    for obj in objs:
        if obj["kind"] == kind:
            for rule in obj["rules"]:
                for group in rule["apiGroups"]:
                    for resource in rule["resources"]:
                        out.setdefault((group, resource), set()).update(rule["verbs"])
    return out


def _children() -> Iterator[tuple[str, str]]:
    """(group, plural) of every child kind the operator applies (its own table)."""
    for (api_version, kind), plural in operator_kube.PLURALS.items():
        if kind in ("Secret", crd.KIND):
            continue
        yield (api_version.rpartition("/")[0], plural)


@pytest.mark.parametrize("scope", ["namespaced", "cluster"])
def test_rbac_is_exactly_what_the_operator_calls(helm: Helm, scope: str) -> None:
    cluster = scope == "cluster"
    args = ["--set", "watch.allNamespaces=true"] if cluster else []
    rules = _rules(helm.objects(*args), "ClusterRole" if cluster else "Role")
    expected = {
        (crd.GROUP, crd.PLURAL): {"get", "list", "watch", "patch"},
        (crd.GROUP, f"{crd.PLURAL}/status"): {"patch"},
        ("", "events"): {"create"},
        # Read, and watched: a changed Secret reconciles the channels naming it.
        ("", "secrets"): {"get", "list", "watch"},
        **{child: {"get", "create", "patch", "delete"} for child in _children()},
        # Watched too: Ready follows the worker Deployments and Pods.
        ("apps", "deployments"): {"get", "list", "watch", "create", "patch", "delete"},
        ("", "pods"): {"list", "watch"},
        # Only read: does an exposure's parent Gateway exist.
        ("gateway.networking.k8s.io", "gateways"): {"get"},
    }
    if cluster:
        expected[("apiextensions.k8s.io", "customresourcedefinitions")] = {"list", "watch"}
        # Cluster-scoped, so only a ClusterRole can read it: does the IngressClass exist.
        expected[("networking.k8s.io", "ingressclasses")] = {"get"}
    assert rules == expected
    no_secrets = _rules(
        helm.objects(*args, "--set", "rbac.kafkaSecrets=false"),
        "ClusterRole" if cluster else "Role",
    )
    assert ("", "secrets") not in no_secrets
    get_only = _rules(
        helm.objects(*args, "--set", "rbac.watchSecrets=false"),
        "ClusterRole" if cluster else "Role",
    )
    assert get_only[("", "secrets")] == {"get"}


@pytest.mark.parametrize(
    ("values", "watching"),
    [
        ((), True),
        (("--set", "rbac.watchSecrets=false"), False),
        (("--set", "rbac.kafkaSecrets=false"), False),
    ],
)
def test_the_operator_watches_secrets_only_where_the_chart_lets_it(
    helm: Helm, values: tuple[str, ...], watching: bool
) -> None:
    deployment = next(o for o in helm.objects(*values) if o["kind"] == "Deployment")
    args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    assert ("--no-watch-secrets" not in args) is watching


def test_peering_adds_its_objects_and_permissions(helm: Helm) -> None:
    objs = helm.objects("--set", "peering.enabled=true", "--set", "replicaCount=2")
    assert ("kopf.dev", "kopfpeerings") in _rules(objs, "Role")
    peering = next(o for o in objs if o["kind"] == "KopfPeering")
    deployment = next(o for o in objs if o["kind"] == "Deployment")
    args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    assert f"--peering-name={peering['metadata']['name']}" in args
    assert "strategy" not in deployment["spec"]
    cluster = helm.objects("--set", "peering.enabled=true", "--set", "watch.allNamespaces=true")
    assert any(o["kind"] == "ClusterKopfPeering" for o in cluster)


@pytest.mark.parametrize("values", CI_VALUES, ids=map(ci_id, CI_VALUES))
def test_every_scenario_renders_names_within_63_and_standard_labels(
    helm: Helm, values: Path
) -> None:
    for obj in helm.objects(values=[values]):
        meta = obj["metadata"]
        assert len(meta["name"]) <= 63, meta["name"]
        if obj["kind"] == "CustomResourceDefinition":
            continue
        labels = meta["labels"]
        assert labels["app.kubernetes.io/name"] == "clarion"
        assert labels["app.kubernetes.io/instance"] == "clarion"
        assert labels["app.kubernetes.io/managed-by"] == "Helm"
        assert labels["helm.sh/chart"] == "clarion-0.1.0"


def test_monitoring_objects_are_off_by_default_and_complete_when_on(helm: Helm) -> None:
    assert not {"ServiceMonitor", "PrometheusRule", "ConfigMap"} & set(_kinds(helm.objects()))
    objs = helm.objects(values=[CHART / "ci" / "monitoring-on-values.yaml"])
    rule = next(o for o in objs if o["kind"] == "PrometheusRule")
    alerts = {r["alert"]: r["expr"] for g in rule["spec"]["groups"] for r in g["rules"]}
    assert set(alerts) == {
        "ClarionWorkerDown",
        "ClarionConsumerLagHigh",
        "ClarionSlowClientDisconnects",
        "ClarionWorkerEventLoopLag",
        "ClarionWorkerMemoryHigh",
        "ClarionWorkerConsumerStale",
        "ClarionReconcileErrors",
    }
    assert "clarion_worker_event_loop_lag_seconds_bucket" in alerts["ClarionWorkerEventLoopLag"]
    assert "process_resident_memory_bytes" in alerts["ClarionWorkerMemoryHigh"]
    assert "clarion_worker_consumer_fetch_age_seconds" in alerts["ClarionWorkerConsumerStale"]
    assert "clarion_worker_consumer_lag" in alerts["ClarionConsumerLagHigh"]
    assert 'clarion_worker_disconnects_total{code="4008"}' in alerts["ClarionSlowClientDisconnects"]
    assert "clarion_operator_reconciles_total" in alerts["ClarionReconcileErrors"]
    monitor = next(o for o in objs if o["kind"] == "ServiceMonitor")
    assert monitor["spec"]["endpoints"][0]["port"] == "metrics"
    dashboard = next(o for o in objs if o["kind"] == "ConfigMap")
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    panels = json.loads(dashboard["data"]["clarion.json"])["panels"]
    assert len(panels) >= 8


def test_alerts_and_dashboard_use_metrics_the_code_exports() -> None:
    """Every clarion_* name in the rule and the dashboard is one the worker or operator
    defines (Counters gain _total, Histograms _bucket, Infos _info)."""
    defined: set[str] = set()
    for source in [
        ROOT / "worker/clarion_worker/metrics.py",
        ROOT / "operator/clarion_operator/metrics.py",
    ]:
        text = source.read_text()
        for name in re.findall(r'"(clarion_(?:operator|worker)_[a-z_]+)"', text):
            defined |= {name, f"{name}_total", f"{name}_bucket"}
        for suffix in re.findall(r'f"\{ns\}(_[a-z_]+)"', text):
            defined |= {f"clarion_worker{suffix}{end}" for end in ("", "_bucket", "_info")}
    used = set(
        re.findall(
            r"clarion_(?:operator|worker)_[a-z_]+",
            (
                (CHART / "templates" / "prometheusrule.yaml").read_text()
                + (CHART / "files" / "dashboard.json").read_text()
            ),
        )
    )
    assert used
    assert used <= defined, used - defined


def test_the_helm_test_hook_runs_the_checked_in_script(helm: Helm) -> None:
    hook = next(o for o in helm.objects() if o["kind"] == "Pod")
    assert hook["metadata"]["annotations"]["helm.sh/hook"] == "test"
    container = hook["spec"]["containers"][0]
    assert container["args"] == [(CHART / "files" / "helm_test.py").read_text()]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True


def test_install_yaml_and_values_reference_are_generated_from_the_chart(helm: Helm) -> None:
    for path, text in charts.generated(helm.binary, ROOT).items():
        assert (ROOT / path).read_text() == text, f"{path} is stale: run `make manifests`"


def test_install_yaml_is_cluster_wide_with_the_crd_and_no_helm_hooks() -> None:
    objs = [d for d in yaml.safe_load_all((ROOT / "manifests" / "install.yaml").read_text()) if d]
    kinds = _kinds(objs)
    for kind in ("Namespace", "CustomResourceDefinition", "ClusterRole", "Deployment"):
        assert kind in kinds
    assert "Pod" not in kinds
    assert all(
        o["metadata"].get("labels", {}).get("app.kubernetes.io/managed-by") != "Helm" for o in objs
    )


def test_every_value_has_a_doc_comment() -> None:
    assert charts.undocumented((CHART / "values.yaml").read_text()) == []


def test_values_docs_parse_nested_keys_and_continuations() -> None:
    text = "# -- a\n# b\nx:\n  # -- c\n  y: 1\n  z:\n    # -- d\n    w: [1]\n"
    docs = charts.values_docs(text)
    assert [(d.key, d.type, d.default, d.description) for d in docs] == [
        ("x", "object", '{"y":1,"z":{"w":[1]}}', "a b"),
        ("x.y", "int", "1", "c"),
        ("x.z.w", "list", "[1]", "d"),
    ]
    assert charts.undocumented("a:\n  b: 1\n# -- c\nc: 2\n") == ["a.b"]


# --- images -----------------------------------------------------------------------------


@pytest.mark.parametrize("image", ["operator", "worker"])
def test_each_image_installs_its_own_distribution(image: str) -> None:
    """Each image installs its distribution and the contract's, nothing listed by hand.

    That the distributions declare every module they import, and hold nothing of the
    other part or of the development stack, is tests/test_distributions.py's.
    """
    text = (ROOT / "Dockerfile").read_text()  # one Dockerfile, a target per image
    assert "--wheel-dir /wheels ./contract ./${COMPONENT}\n" in text
    assert f"FROM runtime AS {image}\n" in text
    assert "pip install -c /tmp/constraints.txt -r /tmp/requirements.txt" in text
    assert "--no-deps /tmp/wheels/*.whl" in text
    assert "USER 65532:65532" in text
    assert re.search(r"^FROM python:3\.11\.\d+-slim-\w+ AS runtime$", text, re.M)
