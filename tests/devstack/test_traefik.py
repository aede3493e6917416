"""Traefik and the Gateway API CRDs in the local stack: pins, build recipe, process flags."""

from __future__ import annotations

import re
from pathlib import Path

from clarion_devstack import install, versions
from clarion_devstack.e2e import traefik

GO_MOD = Path(__file__).resolve().parents[2] / "devstack" / "go" / "traefik" / "go.mod"


def _require(dependency: str) -> str:
    match = re.search(
        rf"^\s*(?:require\s+)?{re.escape(dependency)} (v\S+)", GO_MOD.read_text(), re.M
    )
    assert match, f"{dependency} missing from devstack/go/traefik/go.mod"
    return match.group(1)


def test_traefik_is_pinned_once_and_stamped() -> None:
    assert _require("github.com/traefik/traefik/v3") == f"v{versions.TRAEFIK}"
    assert install.TRAEFIK.packages == ("github.com/traefik/traefik/v3/cmd/traefik",)
    assert f"pkg/version.Version={versions.TRAEFIK}" in install.TRAEFIK.ldflags
    assert install.TRAEFIK.binaries == ("traefik",)


def test_gateway_api_crds_match_the_release_traefik_is_built_against() -> None:
    # Same minor as the gateway-api module Traefik's own go.mod selects.
    built = _require("sigs.k8s.io/gateway-api").lstrip("v").rsplit(".", 1)[0]
    assert versions.GATEWAY_API.rsplit(".", 1)[0] == built


def test_traefik_listens_on_loopback_only_and_phones_nowhere(tmp_path: Path) -> None:
    proc = traefik.Traefik(
        Path("/bin/traefik"), "/kubeconfig", tmp_path / "t.log", port=1, api_port=2
    )
    argv = proc.argv()
    assert "--global.checkNewVersion=false" in argv
    assert "--global.sendAnonymousUsage=false" in argv
    addresses = [a.split("=", 1)[1] for a in argv if ".address=" in a]
    assert addresses == ["127.0.0.1:1", "127.0.0.1:2"]
    assert "--providers.kubernetesIngress=true" in argv
    assert "--providers.kubernetesGateway=true" in argv
    no_gateway = traefik.Traefik(Path("/t"), "/k", tmp_path / "t.log", gateway_api=False)
    assert "--providers.kubernetesGateway=true" not in no_gateway.argv()


def test_gateway_listener_is_bound_to_traefiks_web_port() -> None:
    gateway_class, gateway = traefik.gateway_objects("ns", "public", 8123)
    assert gateway_class["spec"]["controllerName"] == traefik.GATEWAY_CONTROLLER
    assert gateway["spec"]["gatewayClassName"] == gateway_class["metadata"]["name"]
    (listener,) = gateway["spec"]["listeners"]
    assert (listener["protocol"], listener["port"]) == ("HTTP", 8123)
    assert traefik.ingress_class()["spec"]["controller"] == traefik.INGRESS_CONTROLLER
