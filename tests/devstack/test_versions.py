"""The pinned versions in versions.py agree with the Go modules and the Maven pom."""

import re
from pathlib import Path

import pytest

from clarion_devstack import install, versions

ROOT = Path(__file__).resolve().parents[2]
GO = ROOT / "devstack" / "go"


def _require(module: str, dependency: str) -> str:
    text = (GO / module / "go.mod").read_text()
    match = re.search(rf"^\s*(?:require\s+)?{re.escape(dependency)} (v\S+)", text, re.M)
    assert match, f"{dependency} missing from devstack/go/{module}/go.mod"
    return match.group(1)


def test_kubernetes_pin_matches_go_mod() -> None:
    assert _require("kube", "k8s.io/kubernetes") == f"v{versions.KUBERNETES}"


def test_every_staging_module_is_replaced_at_the_matching_version() -> None:
    text = (GO / "kube" / "go.mod").read_text()
    replaces = dict(re.findall(r"^replace (k8s\.io/\S+) => k8s\.io/\S+ (v\S+)$", text, re.M))
    assert len(replaces) >= 30
    assert set(replaces.values()) == {f"v{versions.KUBERNETES_STAGING}"}


def test_etcd_and_kwok_pins_match_go_mod() -> None:
    assert _require("etcd", "go.etcd.io/etcd/server/v3") == f"v{versions.ETCD}"
    assert _require("kwok", "sigs.k8s.io/kwok") == f"v{versions.KWOK}"


def test_etcd_minor_matches_what_kubernetes_pins() -> None:
    etcd_client = _require("kube", "go.etcd.io/etcd/client/v3")
    assert etcd_client.rsplit(".", 1)[0] == f"v{versions.ETCD}".rsplit(".", 1)[0]


def test_kafka_pin_matches_pom_default() -> None:
    pom = (ROOT / "devstack" / "kafka" / "pom.xml").read_text()
    assert f"<kafka.version>{versions.KAFKA}</kafka.version>" in pom


@pytest.mark.parametrize("pkg", ["k8s.io/component-base/version", "k8s.io/client-go/pkg/version"])
def test_kubernetes_binaries_are_stamped_with_the_pinned_version(pkg: str) -> None:
    assert f"-X {pkg}.gitVersion=v{versions.KUBERNETES}" in install.KUBE.ldflags


def test_helm_pin_matches_go_mod() -> None:
    assert _require("helm", "helm.sh/helm/v3") == f"v{versions.HELM}"
    assert _require("helm", "k8s.io/client-go") == f"v{versions.HELM_CLIENT_GO}"


def test_helm_is_built_with_the_other_go_components_and_stamped() -> None:
    assert install.HELM in install.GO_BUILDS
    assert f"internal/version.version=v{versions.HELM}" in install.HELM.ldflags


def test_cri_tools_pin_matches_go_mod_and_kubernetes_minor() -> None:
    assert _require("critools", "sigs.k8s.io/cri-tools") == f"v{versions.CRI_TOOLS}"
    assert versions.CRI_TOOLS.split(".")[:2] == versions.KUBERNETES.split(".")[:2]
