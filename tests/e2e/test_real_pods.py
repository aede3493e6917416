"""End to end on the real node: the worker pods run from the worker image under containerd,
become Ready through the kubelet's readiness probe, read their settings and HMAC key from
the projected volume, consume Kafka through the broker's listener on the node's bridge,
and clients on the host reach them through the channel's Service (kube-proxy).

Every check is exact (each event numbered; every client gets each of its events once, in
order); every scenario prints its counts and its time to full recovery.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from clarion_devstack import node, stack
from clarion_devstack.e2e import clients, pods
from clarion_devstack.e2e.clients import Viewer
from clarion_devstack.e2e.cluster import replica_counts
from clarion_devstack.e2e.events import FEW_ORGS, FEW_PEOPLE, Traffic, UnionFlowProducer
from clarion_devstack.e2e.pods import PodChannel
from clarion_devstack.pytest_plugin import LocalStack

pytestmark = pytest.mark.integration

#: The ``make_pod_channel`` fixture (conftest.py).
MakePodChannel = Callable[..., PodChannel]


@pytest.fixture(scope="module")
def channel(make_pod_channel: MakePodChannel) -> Iterator[PodChannel]:
    ch = make_pod_channel(PodChannel, "real", replicas=2, drain_window_seconds=2)
    with ch:
        yield ch


@pytest.fixture
def healthy(channel: PodChannel) -> PodChannel:
    channel.wait_rolled_out()
    return channel


def _connect(ch: PodChannel) -> list[Viewer]:
    return [clients.viewer(ch.ws_url, ch.token(p), p) for p in FEW_PEOPLE]


def _pod_names(ch: PodChannel) -> set[str]:
    return {p["metadata"]["name"] for p in ch.ready_pods()}


async def test_worker_pods_run_on_the_real_node_and_serve_through_the_service(
    channel: PodChannel, producer: UnionFlowProducer
) -> None:
    listed = channel.pods()
    assert len(listed) == 2
    for pod in listed:
        assert pod["spec"]["nodeName"] == node.NODE_NAME
        assert pod["status"]["podIP"].startswith(node.POD_CIDR.rsplit(".", 2)[0])
        (status,) = pods.container_statuses(pod)
        assert status["ready"] is True, status
        assert status["started"] is True
        assert status["image"].endswith(pod["spec"]["containers"][0]["image"].split("/", 1)[1])
        assert status["imageID"], status  # containerd ran it from the imported image
    print("\n" + channel.kube.run("get", "nodes", "-o", "wide"))
    print(channel.describe())
    viewers = _connect(channel)
    try:
        await clients.all_welcomed(viewers, within=60)
        # The welcome names the pod: the replica id is the pod name (downward API).
        assert {v.replica for v in viewers} <= {p["metadata"]["name"] for p in listed}
        traffic = Traffic(FEW_ORGS, FEW_PEOPLE, random.Random(11))
        for _ in range(300):
            traffic.next(producer)
        totals, problems = await clients.settled_report(producer, viewers, within=90)
        # From `kubectl apply` of the channel to the first event a client received.
        to_first = min(t for v in viewers for t in v.arrivals[:1]) - channel.applied_at
        clients.print_totals(
            "real-pods", "through the Service", totals, f"; apply to first event {to_first:.1f}s"
        )
        assert not problems, problems
        assert totals["lost"] == 0
        assert totals["duplicated"] == 0
    finally:
        await clients.stop_all(viewers)


async def _scenario(
    ch: PodChannel,
    producer: UnionFlowProducer,
    title: str,
    disrupt: Callable[[str], None],
    seed: int,
    *,
    recover: Callable[[str], None] | None = None,
    moves: bool = True,
) -> list[Viewer]:
    """Clients connected (the Service's ClientIP affinity puts every client of this host
    on one pod: the victim), steady load, ``disrupt(victim)``, then full recovery: with
    ``moves``, every client reconnected; ``recover(victim)`` (default: the Deployment
    rolled out and the victim gone); every client served events produced after that.
    Exact accounting; returns the viewers for scenario-specific checks."""
    viewers = _connect(ch)
    stop = asyncio.Event()
    try:
        await clients.all_welcomed(viewers, within=60)
        victim = max(replica_counts(viewers).items(), key=lambda kv: kv[1])[0]
        load = asyncio.create_task(
            clients.produce_steadily(
                producer, Traffic(FEW_ORGS, FEW_PEOPLE, random.Random(seed)), stop, 100
            )
        )
        await asyncio.gather(*(v.wait(lambda x: len(x.events) >= 3, 60) for v in viewers))
        on_victim = [v for v in viewers if v.replica == victim]
        started = time.monotonic()
        await asyncio.to_thread(disrupt, victim)
        if moves:
            for v in on_victim:
                await v.wait(lambda x: x.welcomes[-1].at > started, 120)
        await asyncio.to_thread(recover or (lambda name: _replaced(ch, name)), victim)
        await clients.all_past(producer, viewers, 90)
        recovered = time.monotonic() - started
        stop.set()
        await load
        totals, problems = await clients.settled_report(producer, viewers, within=90)
        reconnected = [
            next(w.at for w in v.welcomes if w.at > started) - started
            for v in on_victim
            if v.welcomes[-1].at > started
        ]
        clients.print_totals(
            "real-pods",
            title,
            totals,
            f"; {len(on_victim)} clients on {victim}, {len(reconnected)} reconnected"
            + (f" (last after {max(reconnected):.1f}s)" if reconnected else "")
            + f"; full recovery (pods ready, every client served) {recovered:.1f}s",
        )
        assert not problems, problems
        assert totals["lost"] == 0
        assert totals["duplicated"] == 0
        if moves:
            assert len(reconnected) == len(on_victim) > 0
            # A container the kernel killed restarts in the same pod, and a client whose
            # retries outlast that restart may be served by it again; a pod that is gone
            # serves no one.
            if victim not in {p["metadata"]["name"] for p in ch.pods()}:
                assert all(v.replica != victim for v in on_victim)
        return viewers
    finally:
        stop.set()
        await clients.stop_all(viewers)


def _replaced(ch: PodChannel, victim: str) -> None:
    pods.wait_for(
        lambda: victim not in {p["metadata"]["name"] for p in ch.pods()}, f"{victim} gone", 120
    )
    ch.wait_rolled_out()


async def test_kubectl_delete_pod_drains_and_loses_nothing(
    healthy: PodChannel, producer: UnionFlowProducer
) -> None:
    def delete(victim: str) -> None:
        healthy.kube.run("delete", "pod", victim, "-n", healthy.namespace, "--wait=false")

    viewers = await _scenario(healthy, producer, "kubectl delete pod (graceful)", delete, 21)
    # Drained: the clients were told to reconnect (with jitter), not cut.
    moved = [v for v in viewers if len(v.welcomes) > 1]
    assert all(v.client.stats.reconnect_advice >= 1 for v in moved)


async def test_forced_delete_loses_nothing(
    healthy: PodChannel, producer: UnionFlowProducer
) -> None:
    def delete(victim: str) -> None:
        healthy.kube.run(
            "delete", "pod", victim, "-n", healthy.namespace, "--grace-period=0", "--force"
        )

    await _scenario(healthy, producer, "kubectl delete pod --grace-period=0 --force", delete, 22)


async def test_a_spec_change_rolls_a_new_replicaset_without_losing_anything(
    healthy: PodChannel, producer: UnionFlowProducer
) -> None:
    before = _pod_names(healthy)
    heartbeat = 20 if healthy.workers.get("heartbeatSeconds") != 20 else 21

    def change(victim: str) -> None:
        healthy.apply(heartbeatSeconds=heartbeat)

    def rolled(victim: str) -> None:
        pods.wait_for(
            lambda: not ({p["metadata"]["name"] for p in healthy.pods()} & before),
            "every pod replaced",
            240,
        )
        healthy.wait_rolled_out()

    await _scenario(healthy, producer, "spec change (new ReplicaSet)", change, 23, recover=rolled)
    dep = healthy.kube.get("deployment", healthy.deployment_name, healthy.namespace)
    assert dep["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0


async def test_kafka_broker_restart_loses_nothing(
    healthy: PodChannel, producer: UnionFlowProducer, own_stack: LocalStack
) -> None:
    def restart(victim: str) -> None:
        stack.stop_component(own_stack.env, "kafka")
        stack.start_component(own_stack.settings, own_stack.env, "kafka")

    def served(victim: str) -> None:
        healthy.wait_rolled_out()

    await _scenario(
        healthy, producer, "Kafka broker restarted", restart, 24, recover=served, moves=False
    )


def _memory_cgroup(pod: dict[str, Any]) -> Path:
    uid = pod["metadata"]["uid"]
    (status,) = pods.container_statuses(pod)
    container_id = status["containerID"].split("://", 1)[1]
    found = list(Path("/sys/fs/cgroup/memory/kubepods").rglob(f"pod{uid}/{container_id}"))
    assert found, f"no memory cgroup for {pod['metadata']['name']}"
    return found[0]


async def test_a_worker_killed_by_its_memory_limit_loses_nothing(
    healthy: PodChannel, producer: UnionFlowProducer
) -> None:
    restarts: dict[str, int] = {}

    def squeeze(victim: str) -> None:
        # The kernel enforces the container's memory limit (its memory cgroup): bring the
        # limit down to what the worker uses now; its next allocations under load exceed
        # it and the kernel's OOM killer ends it, as a too-low limit would.
        pod = healthy.kube.get("pod", victim, healthy.namespace)
        (status,) = pods.container_statuses(pod)
        restarts[victim] = int(status["restartCount"])
        cgroup = _memory_cgroup(pod)
        usage = int((cgroup / "memory.usage_in_bytes").read_text())
        (cgroup / "memory.limit_in_bytes").write_text(str(usage + (1 << 20)))

    def oom_killed(victim: str) -> None:
        def restarted() -> bool:
            pod = healthy.kube.get("pod", victim, healthy.namespace)
            (status,) = pods.container_statuses(pod)
            last = status.get("lastState", {}).get("terminated", {})
            return (
                int(status["restartCount"]) > restarts[victim]
                and last.get("reason") == "OOMKilled"
                and status.get("ready") is True
            )

        pods.wait_for(restarted, f"{victim} OOM-killed and ready again", 180)
        healthy.wait_rolled_out()

    await _scenario(
        healthy, producer, "worker killed by its memory limit", squeeze, 25, recover=oom_killed
    )


async def test_the_operator_as_a_pod_with_the_charts_rbac_serves_the_channel(
    make_pod_channel: MakePodChannel, producer: UnionFlowProducer
) -> None:
    ch = make_pod_channel(PodChannel, "real-op", replicas=1, operator_pod=True)
    await asyncio.to_thread(ch.up)
    viewers: list[Viewer] = []
    try:
        (op,) = json.loads(
            ch.kube.run(
                "get", "pods", "-n", ch.namespace, "-l",
                "app.kubernetes.io/component=operator", "-o", "json",
            )
        )["items"]  # fmt: skip
        assert op["spec"]["nodeName"] == node.NODE_NAME
        assert op["spec"]["serviceAccountName"] == "clarion"
        (status,) = pods.container_statuses(op)
        assert status["ready"] is True
        assert status["image"].endswith("clarion/operator:0.1.0")
        print("\n" + ch.describe())
        viewers = _connect(ch)
        await clients.all_welcomed(viewers, within=60)
        traffic = Traffic(FEW_ORGS, FEW_PEOPLE, random.Random(31))
        for _ in range(100):
            traffic.next(producer)
        totals, problems = await clients.settled_report(producer, viewers, within=90)
        clients.print_totals("real-pods", "operator as a pod", totals)
        assert not problems, problems
    finally:
        await clients.stop_all(viewers)
        await asyncio.to_thread(ch.down)


def test_a_crash_looping_worker_shows_in_the_channels_conditions_with_its_own_words(
    make_pod_channel: MakePodChannel,
) -> None:
    # A plausible mistake: the operator's image given as the workers' image. The kubelet
    # starts it with the worker's arguments; it refuses them and exits, again and again.
    ch = make_pod_channel(
        PodChannel,
        "real-crash",
        replicas=1,
        workers={"image": "ghcr.io/clarion/operator:0.1.0"},
        wait_ready=False,
    )
    with ch:
        found: dict[str, dict[str, Any]] = {}

        def failing() -> bool:
            found.update(ch.conditions())
            return found.get("WorkersReady", {}).get("reason") == "WorkersFailing"

        pods.wait_for(failing, "WorkersReady=False WorkersFailing", 180, interval=1)
        workers, ready = found["WorkersReady"], ch.conditions()["Ready"]
        print(f"\n[real-pods] crash loop: Ready={ready['status']} ({ready['reason']}): "
              f"{ready['message']}")  # fmt: skip
        assert workers["status"] == "False"
        assert ready["status"] == "False"
        # The container's own last words (terminationMessagePolicy FallbackToLogsOnError).
        assert "unrecognized arguments: --config" in workers["message"], workers
        (pod,) = ch.pods()
        assert pod["spec"]["nodeName"] == node.NODE_NAME
        (status,) = pods.container_statuses(pod)
        # Terminated now (before its first restart) or last time (restarting, in back-off).
        terminated = status.get("state", {}).get("terminated") or status.get("lastState", {}).get(
            "terminated"
        )
        assert terminated is not None, status
        assert terminated["exitCode"] != 0, status
