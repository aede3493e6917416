"""The channel's traffic entry through a real, maintained controller: Traefik v3 as a process
against the local stack (Kubernetes Ingress and Gateway API providers).

Without the real node (control plane only): the operator's Exposed condition and Event for
a missing IngressClass, Traefik picking up the rendered Ingress and the Service's
stickiness, and Traefik accepting the rendered HTTPRoute (its sessionPersistence kept by
the experimental-channel CRDs). Nothing is sent through Traefik there: KWOK's pods have
no real address.

With the real node: clients of several organizations through Traefik, a returning
client's cookie, a pod deleted and a rolling update; every delivery sequence-checked (0
lost, 0 duplicated). Idle streams past Traefik's default timeouts are
test_traffic_entry_idle.py's, run beside the rest of the suite.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import http.server
import json
import random
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from clarion_devstack.e2e import clients, deploy, pods, traefik
from clarion_devstack.e2e.clients import Viewer
from clarion_devstack.e2e.cluster import Deployment
from clarion_devstack.e2e.deploy import Kube, OperatorProcess
from clarion_devstack.e2e.events import FEW_ORGS, FEW_PEOPLE, Person, Traffic, UnionFlowProducer
from clarion_devstack.e2e.pods import PodChannel
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
class ControlPlaneChannel(deploy.Arrangement):
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
    with ControlPlaneChannel(kube, local_stack.env, tmp_path) as ch:
        yield ch


def test_missing_ingress_class_is_said_then_traefik_serves_the_ingress(
    controller: traefik.Traefik, cp_channel: ControlPlaneChannel, kube: Kube
) -> None:
    ch = cp_channel
    ch.apply({**TRAEFIK_EXPOSURE, "ingress": {"className": "no-such-class", "profile": "traefik"}})
    cond = ch.wait_exposed("False", "IngressClassNotFound")
    assert "IngressClass no-such-class (traefik profile) does not exist" in cond["message"]
    events: list[dict[str, Any]] = []

    def warned() -> bool:
        # The operator posts its Events after the status: wait for it, do not race it.
        events[:] = json.loads(
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
        return bool(events)

    pods.wait_for(warned, "an IngressClassNotFound Event", 30)
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


# --- through Traefik in front of real pods ------------------------------------------------


@dataclass
class ExposedPodChannel(PodChannel):
    """:class:`PodChannel` with ``spec.exposure`` instead of clients on the Service."""

    exposure: dict[str, Any] = field(default_factory=lambda: dict(TRAEFIK_EXPOSURE))

    def objects(self, **workers: Any) -> list[dict[str, Any]]:
        objects = super().objects(**workers)
        deploy.channel_of(objects)["spec"]["exposure"] = self.exposure
        return objects


@pytest.fixture(scope="module")
def exposed(
    make_pod_channel: Callable[..., PodChannel], controller: traefik.Traefik
) -> Iterator[ExposedPodChannel]:
    ch = make_pod_channel(ExposedPodChannel, "entry", replicas=2, drain_window_seconds=2)
    with ch:
        yield ch


def _service_key(ch: PodChannel) -> str:
    # Traefik names an Ingress backend "<namespace>-<service>-<port>".
    return f"{ch.namespace}-{ch.deployment_name}-"


@pytest.fixture
def routed(exposed: ExposedPodChannel, controller: traefik.Traefik) -> ExposedPodChannel:
    """Every replica Ready and in Traefik's rotation (a previous test may have rolled)."""
    exposed.wait_rolled_out()
    controller.wait_servers(_service_key(exposed), exposed.replicas)
    return exposed


def _ws_url(controller: traefik.Traefik, ch: PodChannel) -> str:
    assert ch.rendered is not None
    return controller.ws_base + ch.rendered.websocket_path


def _connect(
    controller: traefik.Traefik, ch: PodChannel, people: tuple[Person, ...] = FEW_PEOPLE
) -> list[Viewer]:
    return [clients.viewer(_ws_url(controller, ch), ch.token(p), p) for p in people]


async def test_organizations_get_exactly_their_events_through_traefik(
    routed: ExposedPodChannel,
    controller: traefik.Traefik,
    producer: UnionFlowProducer,
    exact_and_isolated: Callable[[Sequence[Viewer], str, str], Awaitable[None]],
) -> None:
    viewers = _connect(controller, routed)
    try:
        await clients.all_welcomed(viewers)
        traffic = Traffic(FEW_ORGS, FEW_PEOPLE, random.Random(11))
        for _ in range(300):
            traffic.next(producer)
        await exact_and_isolated(viewers, "traffic-entry", "organizations through Traefik")
    finally:
        await clients.stop_all(viewers)


async def test_a_returning_client_with_its_cookie_lands_on_the_same_pod(
    routed: ExposedPodChannel, controller: traefik.Traefik
) -> None:
    assert routed.rendered is not None
    # What curl -i shows: Traefik's Set-Cookie on the SSE response.
    sse = f"{controller.url}{routed.rendered.sse_path}"
    token = routed.token(FEW_PEOPLE[0])
    async with (
        httpx.AsyncClient(timeout=10) as http,
        http.stream("GET", sse, params={"access_token": token}) as resp,
    ):
        head = f"HTTP/1.1 {resp.status_code}\n" + "\n".join(
            f"{k}: {v}" for k, v in resp.headers.items()
        )
        print(f"\n[traffic-entry] GET {routed.rendered.sse_path} through Traefik:\n{head}")
        assert resp.status_code == 200
        assert COOKIE in resp.headers.get("set-cookie", "")
    first = _connect(controller, routed)
    try:
        await clients.all_welcomed(first)
        for v in first:
            assert COOKIE in v.client.cookies, v.client.cookies
        assert len({v.replica for v in first}) == 2, [v.replica for v in first]
    finally:
        await clients.stop_all(first)
    again = [
        clients.viewer(
            _ws_url(controller, routed),
            routed.token(v.person),
            v.person,
            cookies=dict(v.client.cookies),
        )
        for v in first
    ]
    try:
        await clients.all_welcomed(again)
        assert [v.replica for v in again] == [v.replica for v in first]
        print(f"\n[traffic-entry] cookie: {len(again)}/{len(again)} returned to their pod")
    finally:
        await clients.stop_all(again)


async def test_pod_deleted_and_rolling_update_lose_nothing_through_traefik(
    routed: ExposedPodChannel, controller: traefik.Traefik, producer: UnionFlowProducer
) -> None:
    viewers = _connect(controller, routed, FEW_PEOPLE * 2)
    stop = asyncio.Event()
    traffic = Traffic(FEW_ORGS, FEW_PEOPLE, random.Random(7))
    load: asyncio.Task[None] | None = None
    try:
        await clients.all_welcomed(viewers)
        # Produced only once every client is welcomed: the accounting expects every event
        # of a client's organizations, and one produced before its welcome is not its to get
        # (a fresh client joins live; a run lost event 1 that way).
        load = asyncio.create_task(clients.produce_steadily(producer, traffic, stop, rate=60))
        await asyncio.gather(*(v.wait(lambda x: len(x.events) >= 3) for v in viewers))
        # 1. kubectl delete pod (graceful: the worker drains, Traefik drops it).
        victim = routed.ready_pods()[0]["metadata"]["name"]
        on_victim = [v for v in viewers if v.replica == victim]
        deleted_at = time.monotonic()
        routed.kube.run("delete", "pod", victim, "-n", routed.namespace, "--wait=false")
        for v in on_victim:
            await v.wait(lambda x: x.replica not in (None, victim), within=60)
        moved = time.monotonic() - deleted_at
        # The waits below poll the API and Traefik for minutes: in a thread, so that the
        # clients on this loop keep reading (and answering pings) meanwhile.
        await asyncio.to_thread(routed.wait_rolled_out)
        await asyncio.to_thread(controller.wait_servers, _service_key(routed), routed.replicas)
        # 2. A rolling update (maxUnavailable 0): every client ends on a new pod.
        before = {p["metadata"]["name"] for p in routed.ready_pods()}
        rolled_at = time.monotonic()
        drain = 3 if routed.workers.get("drainWindowSeconds") != 3 else 4  # a real change
        routed.apply(drainWindowSeconds=drain)
        # The operator updates the Deployment a moment after the channel: until then the
        # old one reads as rolled out, so wait for the pods to be replaced first.
        await asyncio.to_thread(
            pods.wait_for,
            lambda: not ({p["metadata"]["name"] for p in routed.pods()} & before),
            "every pod replaced",
            300,
        )
        await asyncio.to_thread(routed.wait_rolled_out, 300)
        after = {p["metadata"]["name"] for p in routed.ready_pods()}
        assert not before & after, (before, after)

        def on_new_pod(x: Viewer) -> bool:
            return x.replica in after

        for v in viewers:
            await v.wait(on_new_pod, within=120)
        rolled = time.monotonic() - rolled_at
        stop.set()
        await load
        totals, problems = await clients.settled_report(producer, viewers, within=120)
        clients.print_totals(
            "traffic-entry",
            "pod deleted + rolling update through Traefik",
            totals,
            f"; {len(on_victim)} clients moved off the deleted pod in {moved:.1f}s, "
            f"all {len(viewers)} on new pods {rolled:.1f}s after the update",
        )
        assert not problems, problems
        assert totals["lost"] == 0
        assert totals["duplicated"] == 0
    finally:
        stop.set()
        if load is not None:
            with contextlib.suppress(Exception):
                await load
        await clients.stop_all(viewers)


async def test_the_harness_and_demo_put_traefik_in_front_of_real_pods(
    local_stack: LocalStack, tmp_path: Path
) -> None:
    """``cluster.Deployment`` (what ``make demo`` runs) with the real node: Traefik serves the
    channel's own Ingress, and the dashboard page shares its origin (file provider)."""
    if pods.unavailable_reason(local_stack.env) is not None:
        pytest.skip("no real node in this stack")
    page = tmp_path / "site"
    page.mkdir()
    (page / "index.html").write_text("dashboard page")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(page))
    site = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    serving = threading.Thread(target=site.serve_forever, daemon=True)
    serving.start()
    dep = Deployment(
        local_stack.env,
        tmp_path / "dep",
        namespace=f"harness-{uuid.uuid4().hex[:8]}",
        replicas=2,
        real_pods=True,
        traefik_binary=traefik.traefik_binary(local_stack.settings),
        site_port=site.server_address[1],
        quiet=True,
    )
    try:
        dep.up()
        assert dep.entry_name == "Traefik"
        assert dep.lb is None  # no hand-configured HAProxy
        ingress = dep.kube.get("ingress", f"{dep.channel}-worker", dep.namespace)
        assert ingress["spec"]["ingressClassName"] == traefik.INGRESS_CLASS
        viewers = [clients.viewer(dep.ws_url, dep.token(p), p) for p in FEW_PEOPLE]
        try:
            await clients.all_welcomed(viewers)
            listed = json.loads(dep.kube.run("get", "pods", "-n", dep.namespace, "-o", "json"))[
                "items"
            ]
            running = {p["metadata"]["name"] for p in listed}
            # Spread over both replicas, each a pod of the real node.
            assert len({v.replica for v in viewers}) == 2
            assert {v.replica for v in viewers} <= running
            assert all(COOKIE in v.client.cookies for v in viewers)
        finally:
            await clients.stop_all(viewers)
        async with httpx.AsyncClient(timeout=10) as http_client:
            resp = await http_client.get(dep.entry_url + "/")
        assert (resp.status_code, resp.text) == (200, "dashboard page")
    finally:
        dep.down()
        site.shutdown()
        site.server_close()
