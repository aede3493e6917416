"""The UnionFlow channel with its workers as real pods on the stack's real node.

operator (a process, or a pod from its image) --reconciles--> RealtimeChannel
    -> Kafka topics, ConfigMap, Secret, Deployment -> worker pods on the real node
       (started from the worker image by containerd, Ready through the kubelet's probes,
       configuration and HMAC key through the projected volume, Kafka through the
       broker's listener on the node's bridge)
clients on the host -> the channel's Service (ClusterIP, kube-proxy's iptables rules)

The namespace carries the annotations that pin its pods to the real node
(:func:`clarion_devstack.node.namespace_annotations`).
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from clarion_devstack import node
from clarion_devstack.e2e import deploy
from clarion_devstack.e2e.deploy import (
    Arrangement,
    DeployError,
    Kube,
    OperatorProcess,
    RenderedWorkers,
)
from clarion_devstack.e2e.events import Person
from clarion_devstack.procs import free_port
from clarion_devstack.settings import CHECKOUT
from clarion_devstack.stack import StackEnv

SERVICE_PORT_NAME = "http"


def unavailable_reason(env: StackEnv) -> str | None:
    """Why this stack has no real node (None: it has one)."""
    if env.get("node") is None:
        return env.get("node_unavailable") or "the stack was started without a real node"
    if not env.get("kafka_pod_bootstrap"):
        return "Kafka has no listener for the real node's pods"
    return None


def ensure_node_namespace(kube: Kube, namespace: str) -> None:
    """A namespace whose pods go to the real node (and tolerate its taint)."""
    body = {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": namespace, "annotations": node.namespace_annotations()},
    }
    kube.run(
        "apply",
        "--server-side",
        "--force-conflicts",
        f"--field-manager={deploy.FIELD_MANAGER}",
        "-f",
        "-",
        stdin=json.dumps(body),
    )


def wait_for(ready: Callable[[], bool], what: str, timeout: float, interval: float = 0.2) -> float:
    """Poll ``ready`` until it holds; return how long that took."""
    started = time.monotonic()
    while not ready():
        if time.monotonic() - started > timeout:
            raise DeployError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)
    return time.monotonic() - started


@dataclass
class PodChannel(Arrangement):
    """The UnionFlow channel applied by an operator process; its workers are real pods."""

    env: StackEnv
    workdir: Path
    namespace: str
    replicas: int = 2
    drain_window_seconds: int | None = None
    #: Extra fields merged into ``spec.workers`` (resources, limits...).
    workers: dict[str, Any] = field(default_factory=dict)
    #: The operator as a process on the host, or as a pod from its image (the chart's
    #: RBAC; :func:`operator_pod_objects`).
    operator_pod: bool = False
    #: Wait for the channel to be Ready at ``up`` (a test of a failing channel does not).
    wait_ready: bool = True
    kube: Kube = field(init=False)
    operator: OperatorProcess | None = None
    rendered: RenderedWorkers | None = None
    applied_at: float = 0.0

    def __post_init__(self) -> None:
        self.kube = Kube.of(self.env)

    @property
    def channel(self) -> str:
        return str(deploy.channel_of(deploy.load_objects())["metadata"]["name"])

    @property
    def deployment_name(self) -> str:
        return f"{self.channel}-worker"

    def objects(self, **workers: Any) -> list[dict[str, Any]]:
        bootstrap = self.env.get("kafka_pod_bootstrap")
        if not bootstrap:
            raise DeployError(unavailable_reason(self.env) or "no real node")
        objects = deploy.for_local_stack(
            deploy.load_objects(),
            bootstrap=bootstrap,
            replicas=self.replicas,
            drain_window_seconds=self.drain_window_seconds,
        )
        spec = deploy.channel_of(objects)["spec"]
        spec.setdefault("workers", {}).update({**self.workers, **workers})
        spec["workers"]["imagePullPolicy"] = "IfNotPresent"
        # Clients reach the workers through the Service here, not through an ingress.
        spec["ingress"] = {"enabled": False}
        return objects

    def _up(self) -> None:
        deploy.install_crd(self.kube)
        ensure_node_namespace(self.kube, self.namespace)
        if self.operator_pod:
            objects = operator_pod_objects(
                self.namespace, self.env["api_server"], free_port(), free_port()
            )
            self.kube.apply(objects, self.namespace)
            wait_for(
                lambda: self._operator_ready(),
                f"the operator pod Ready in {self.namespace}",
                180,
            )
        else:
            self.operator = OperatorProcess(
                self.env["kubeconfig"], self.namespace, self.workdir / "logs" / "operator.log"
            )
            self.operator.start()
        self.applied_at = time.monotonic()
        self.kube.apply(self.objects(), self.namespace)
        if not self.wait_ready:
            return
        deploy.wait_channel_ready(self.kube, self.namespace, self.channel, timeout=240)
        self.rendered = deploy.materialize(
            self.kube, self.namespace, self.channel, self.workdir / "rendered"
        )

    def _operator_ready(self) -> bool:
        """Ready, or a DeployError with the container's own last words if it crashed."""
        listed = json.loads(
            self.kube.run(
                "get", "pods", "-n", self.namespace, "-l",
                "app.kubernetes.io/component=operator", "-o", "json",
            )
        )  # fmt: skip
        for pod in listed["items"]:
            for status in container_statuses(pod):
                if status.get("lastState", {}).get("terminated"):
                    name = pod["metadata"]["name"]
                    logs = self.kube.run(
                        "logs", "-n", self.namespace, name, "--previous", "--tail=5"
                    )
                    raise DeployError(f"the operator pod {name} crashed:\n{logs}")
            if _ready(pod):
                return True
        return False

    def apply(self, **workers: Any) -> None:
        """Apply the channel again with changed ``spec.workers`` fields."""
        self.workers.update(workers)
        self.kube.apply(self.objects(), self.namespace)

    def down(self) -> None:
        # The channel goes first, while its operator still runs to release the finalizer.
        if self.operator_pod or (self.operator is not None and self.operator.alive()):
            with contextlib.suppress(DeployError):
                deploy.delete_channel(self.kube, self.namespace, self.channel)
        if self.operator is not None:
            self.operator.stop()
        self.operator = None
        if self.operator_pod:
            for kind in ("clusterrolebinding", "clusterrole"):
                with contextlib.suppress(DeployError):
                    self.kube.run("delete", kind, f"clarion-{self.namespace}", "--ignore-not-found")
        with contextlib.suppress(DeployError):
            self.kube.run(
                "delete", "namespace", self.namespace, "--wait=false", "--ignore-not-found"
            )

    # ---- what tests look at --------------------------------------------------------

    def pods(self) -> list[dict[str, Any]]:
        listed = json.loads(
            self.kube.run(
                "get",
                "pods",
                "-n",
                self.namespace,
                "-l",
                f"app.kubernetes.io/instance={self.channel}",
                "-o",
                "json",
            )
        )
        items: list[dict[str, Any]] = listed["items"]
        return items

    def ready_pods(self) -> list[dict[str, Any]]:
        return [p for p in self.pods() if _ready(p) and not p["metadata"].get("deletionTimestamp")]

    def service(self) -> tuple[str, int]:
        svc = self.kube.get("service", self.deployment_name, self.namespace)
        port = next(
            int(p["port"]) for p in svc["spec"]["ports"] if p.get("name") == SERVICE_PORT_NAME
        )
        return str(svc["spec"]["clusterIP"]), port

    @property
    def ws_url(self) -> str:
        assert self.rendered is not None
        ip, port = self.service()
        return f"ws://{ip}:{port}{self.rendered.websocket_path}"

    def token(self, person: Person, ttl: float = 12 * 3600) -> str:
        assert self.rendered is not None
        return self.rendered.token(person, ttl)

    def wait_rolled_out(self, timeout: float = 240) -> float:
        """Wait until the Deployment has every replica updated and ready; return the time."""

        def done() -> bool:
            dep = self.kube.get("deployment", self.deployment_name, self.namespace)
            status, want = dep.get("status", {}), dep["spec"]["replicas"]
            return bool(
                status.get("observedGeneration") == dep["metadata"]["generation"]
                and status.get("updatedReplicas") == want
                and status.get("readyReplicas") == want
                and status.get("replicas") == want
            )

        return wait_for(done, f"{self.deployment_name} rolled out", timeout)

    def conditions(self) -> dict[str, dict[str, Any]]:
        """The channel's status conditions by type."""
        body = self.kube.get("rtc", self.channel, self.namespace)
        found = body.get("status", {}).get("conditions", [])
        return {str(c["type"]): c for c in found}

    def describe(self) -> str:
        return self.kube.run("get", "pods", "-n", self.namespace, "-o", "wide")


def _ready(pod: dict[str, Any]) -> bool:
    for cond in pod.get("status", {}).get("conditions", []):
        if cond["type"] == "Ready":
            return str(cond["status"]) == "True"
    return False


def container_statuses(pod: dict[str, Any]) -> Sequence[dict[str, Any]]:
    statuses: Sequence[dict[str, Any]] = pod.get("status", {}).get("containerStatuses", [])
    return statuses


INSTALL_FILE = CHECKOUT / "manifests" / "install.yaml"


def operator_pod_objects(
    namespace: str, api_server: str, metrics_port: int, liveness_port: int
) -> list[dict[str, Any]]:
    """The chart's operator (manifests/install.yaml: ServiceAccount, ClusterRole and its
    binding, Deployment from the operator image) moved into ``namespace`` and set up for
    this machine: it watches only ``namespace``, and it runs in the host's network
    namespace so that it reaches the API server on 127.0.0.1 (the local control plane
    listens only there; its certificate names 127.0.0.1)."""
    docs = [d for d in yaml.safe_load_all(INSTALL_FILE.read_text()) if d]
    suffix = f"-{namespace}"
    out: list[dict[str, Any]] = []
    for doc in docs:
        kind, meta = doc["kind"], doc["metadata"]
        if kind in ("Namespace", "CustomResourceDefinition", "Service"):
            continue
        if "namespace" in meta:
            meta["namespace"] = namespace
        if kind == "ClusterRole":
            meta["name"] += suffix
        elif kind == "ClusterRoleBinding":
            meta["name"] += suffix
            doc["roleRef"]["name"] += suffix
            for subject in doc["subjects"]:
                subject["namespace"] = namespace
        elif kind == "Deployment":
            pod = doc["spec"]["template"]["spec"]
            pod["hostNetwork"] = True
            pod["dnsPolicy"] = "ClusterFirstWithHostNet"
            (container,) = pod["containers"]
            args = [
                a
                for a in container["args"]
                if a != "--all-namespaces"
                and not a.startswith(("--metrics-port", "--liveness-port"))
            ]
            container["args"] = [
                *args,
                f"--namespace={namespace}",
                f"--metrics-port={metrics_port}",
                f"--liveness-port={liveness_port}",
            ]
            ports = {"metrics": metrics_port, "healthz": liveness_port}
            for port in container.get("ports", []):
                port["containerPort"] = ports[port["name"]]
            host, port_text = api_server.removeprefix("https://").rsplit(":", 1)
            container["env"] = [
                *container.get("env", []),
                {"name": "KUBERNETES_SERVICE_HOST", "value": host},
                {"name": "KUBERNETES_SERVICE_PORT", "value": port_text},
            ]
        elif kind != "ServiceAccount":
            continue
        out.append(doc)
    return out
