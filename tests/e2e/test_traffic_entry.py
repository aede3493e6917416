"""The channel's traffic entry through a real, maintained controller: Traefik v3 as a process
against the local stack (Kubernetes Ingress and Gateway API providers).

Control plane only: the operator's Exposed condition and Event for a missing
IngressClass, Traefik picking up the rendered Ingress and the Service's stickiness, and
Traefik accepting the rendered HTTPRoute (its sessionPersistence kept by the
experimental-channel CRDs). Nothing is sent through Traefik here: KWOK's pods have no
real address, and an EndpointSlice cannot point at 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from clarion_devstack.e2e import deploy, pods, traefik
from clarion_devstack.e2e.deploy import Kube, OperatorProcess
from clarion_devstack.pytest_plugin import LocalStack

pytestmark = pytest.mark.integration

COOKIE = "clarion-affinity"
TRAEFIK_EXPOSURE: dict[str, Any] = {
    "type": "ingress",
    "stickyCookie": {"name": COOKIE},
    "ingress": {"className": traefik.INGRESS_CLASS, "profile": "traefik"},
}


# --- Traefik and the Gateway API, once per module ---------------------------------------


@pytest.fixture(scope="module")
def kube(local_stack: LocalStack) -> Kube:
    return Kube.of(local_stack.env)


@pytest.fixture(scope="module")
def controller(
    local_stack: LocalStack, kube: Kube, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[traefik.Traefik]:
    traefik.install_gateway_api(kube, local_stack.settings)
    traefik.ensure_ingress_class(kube)
    proc = traefik.Traefik(
        traefik.traefik_binary(local_stack.settings),
        local_stack.env["kubeconfig"],
        tmp_path_factory.mktemp("traefik") / "traefik.log",
    )
    proc.start()
    try:
        yield proc
    finally:
        proc.stop()


def _rtc(kube: Kube, namespace: str, name: str) -> dict[str, Any]:
    return kube.get("realtimechannel", name, namespace)


def _condition(body: dict[str, Any], type_: str) -> dict[str, Any] | None:
    for cond in (body.get("status") or {}).get("conditions") or []:
        if cond.get("type") == type_:
            return dict(cond)
    return None


def _channel_objects(bootstrap: str, exposure: dict[str, Any]) -> list[dict[str, Any]]:
    objects = deploy.for_local_stack(deploy.load_objects(), bootstrap=bootstrap, replicas=1)
    spec = deploy.channel_of(objects)["spec"]
    spec["ingress"] = {"enabled": False}
    spec["exposure"] = exposure
    return objects


@dataclass
class ControlPlaneChannel:
    """The UnionFlow channel and an operator process, on KWOK's fake node."""

    kube: Kube
    env: Any
    workdir: Path
    namespace: str = field(default_factory=lambda: f"entry-{uuid.uuid4().hex[:8]}")
    operator: OperatorProcess | None = None

    @property
    def name(self) -> str:
        return str(deploy.channel_of(deploy.load_objects())["metadata"]["name"])

    def up(self) -> None:
        deploy.install_crd(self.kube)
        deploy.ensure_namespace(self.kube, self.namespace)
        self.operator = OperatorProcess(
            self.env["kubeconfig"], self.namespace, self.workdir / "operator.log"
        )
        self.operator.start()

    def apply(self, exposure: dict[str, Any]) -> None:
        self.kube.apply(_channel_objects(self.env["kafka_bootstrap"], exposure), self.namespace)

    def wait_exposed(self, status: str, reason: str, timeout: float = 90) -> dict[str, Any]:
        found: dict[str, Any] = {}

        def done() -> bool:
            cond = _condition(_rtc(self.kube, self.namespace, self.name), "Exposed")
            if cond is not None and (cond["status"], cond["reason"]) == (status, reason):
                found.update(cond)
                return True
            return False

        pods.wait_for(done, f"Exposed={status} {reason}", timeout)
        return found

    def down(self) -> None:
        if self.operator is not None and self.operator.alive():
            with contextlib.suppress(deploy.DeployError):
                deploy.delete_channel(self.kube, self.namespace, self.name)
            self.operator.stop()
        with contextlib.suppress(deploy.DeployError):
            self.kube.run("delete", "namespace", self.namespace, "--wait=false")


@pytest.fixture
def cp_channel(
    local_stack: LocalStack, kube: Kube, tmp_path: Path
) -> Iterator[ControlPlaneChannel]:
    ch = ControlPlaneChannel(kube, local_stack.env, tmp_path)
    ch.up()
    try:
        yield ch
    finally:
        ch.down()


def test_missing_ingress_class_is_said_then_traefik_serves_the_ingress(
    controller: traefik.Traefik, cp_channel: ControlPlaneChannel, kube: Kube
) -> None:
    ch = cp_channel
    ch.apply({**TRAEFIK_EXPOSURE, "ingress": {"className": "no-such-class", "profile": "traefik"}})
    cond = ch.wait_exposed("False", "IngressClassNotFound")
    assert "IngressClass no-such-class (traefik profile) does not exist" in cond["message"]
    events = json.loads(
        kube.run(
            "get",
            "events",
            "-n",
            ch.namespace,
            "--field-selector",
            "reason=IngressClassNotFound",
            "-o",
            "json",
        )
    )["items"]
    assert [e["type"] for e in events][:1] == ["Warning"], events
    # The Ingress is written anyway; naming the class that exists is enough.
    ch.apply(TRAEFIK_EXPOSURE)
    cond = ch.wait_exposed("True", "Exposed")
    assert cond["message"] == "Ingress attached to IngressClass traefik (traefik profile)"
    ingress = kube.get("ingress", f"{ch.name}-worker", ch.namespace)
    assert ingress["spec"]["ingressClassName"] == "traefik"
    service = kube.get("service", f"{ch.name}-worker", ch.namespace)
    sticky = "traefik.ingress.kubernetes.io/service.sticky.cookie"
    assert service["metadata"]["annotations"][sticky] == "true"
    assert service["metadata"]["annotations"][f"{sticky}.name"] == COOKIE
    # Traefik read it: a router for the channel's WebSocket path, from the Ingress provider.
    controller.wait(
        lambda: any(
            ch.namespace in str(r.get("name")) and "/ws/dashboard" in str(r.get("rule"))
            for r in controller.routers()
        ),
        "Traefik's router for the channel's Ingress",
    )


def test_gateway_exposure_is_accepted_by_traefik_with_session_persistence(
    controller: traefik.Traefik, cp_channel: ControlPlaneChannel, kube: Kube
) -> None:
    ch = cp_channel
    traefik.ensure_gateway(kube, ch.namespace, "public", controller.port)
    ch.apply({"type": "gateway", "gateway": {"name": "public"}, "stickyCookie": {"name": COOKIE}})
    cond = ch.wait_exposed("True", "Exposed")
    # The experimental-channel CRDs kept sessionPersistence (nothing pruned, nothing said).
    assert cond["message"] == f"HTTPRoute attached to Gateway {ch.namespace}/public"
    route = kube.get("httproute", f"{ch.name}-worker", ch.namespace)
    (rule,) = route["spec"]["rules"]
    assert rule["sessionPersistence"]["sessionName"] == COOKIE
    assert rule["timeouts"] == {"request": "0s"}
    ingresses = json.loads(kube.run("get", "ingress", "-n", ch.namespace, "-o", "json"))
    assert ingresses["items"] == []

    def accepted() -> bool:
        body = kube.get("httproute", f"{ch.name}-worker", ch.namespace)
        for parent in (body.get("status") or {}).get("parents") or []:
            if parent.get("controllerName") != traefik.GATEWAY_CONTROLLER:
                continue
            conds = {c["type"]: c["status"] for c in parent.get("conditions") or []}
            return conds.get("Accepted") == "True"
        return False

    pods.wait_for(accepted, "Traefik accepting the HTTPRoute", 60)
    controller.wait(
        lambda: any("/sse/dashboard" in str(r.get("rule")) for r in controller.routers()),
        "Traefik's router for the HTTPRoute",
    )
