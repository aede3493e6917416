"""The whole end-to-end arrangement, up and down: what the tests and ``make demo`` share.

operator (real process) --reconciles--> RealtimeChannel (the UnionFlow example)
    -> Kafka topics, ConfigMap worker.json, Secret mount, Deployment
worker processes, one per (KWOK) pod, configured from what the API server holds;
  or, with ``real_pods``, the Deployment's own pods on the stack's real node
in front of them, on 127.0.0.1: with real pods, Traefik (a maintained ingress
  controller) serving the channel's own Ingress (``exposure.ingress.profile: traefik``,
  cookie stickiness from the Service's annotations); otherwise (worker processes, or no
  Traefik binary given) HAProxy, configured by hand (cookie stickiness, /readyz checks)
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from clarion_devstack.e2e import deploy, pods, traefik
from clarion_devstack.e2e.deploy import Arrangement, Kube, OperatorProcess, RenderedWorkers, Replica
from clarion_devstack.e2e.events import Person
from clarion_devstack.e2e.haproxy import LoadBalancer, Server
from clarion_devstack.progress import say, step
from clarion_devstack.stack import StackEnv


@dataclass
class Deployment(Arrangement):
    env: StackEnv
    workdir: Path
    namespace: str = "unionflow"
    replicas: int = 2
    drain_window_seconds: int | None = None
    site_port: int | None = None
    lb_port: int | None = None
    channel_file: Path = deploy.CHANNEL_FILE
    quiet: bool = False
    #: Run the workers as the Deployment's pods on the real node (the stack must have one).
    real_pods: bool = False
    #: With ``real_pods``: the pods behind the entry point (name -> pod IP and worker port).
    pod_ips: dict[str, tuple[str, int]] = field(default_factory=dict)
    #: Traefik's binary (``traefik.traefik_binary``): with ``real_pods``, Traefik serves
    #: the channel's Ingress in front of the pods; without it, HAProxy is the fallback.
    traefik_binary: Path | None = None
    controller: traefik.Traefik | None = None
    kube: Kube = field(init=False)
    operator: OperatorProcess | None = None
    rendered: RenderedWorkers | None = None
    workers: list[Replica] = field(default_factory=list)
    lb: LoadBalancer | None = None

    def __post_init__(self) -> None:
        self.kube = Kube.of(self.env)

    @property
    def log_dir(self) -> Path:
        return self.workdir / "logs"

    @property
    def channel(self) -> str:
        return str(deploy.channel_of(deploy.load_objects(self.channel_file))["metadata"]["name"])

    def _step(self, name: str) -> Any:
        return step(name) if not self.quiet else _Silent()

    def _pod_bootstrap(self) -> str:
        """Kafka's address for the real node's pods; a clear error when there is no node."""
        bootstrap = self.env.get("kafka_pod_bootstrap") or ""
        if not bootstrap:
            raise deploy.DeployError(pods.unavailable_reason(self.env) or "no real node")
        return bootstrap

    def _objects(self, bootstrap: str, origin: str) -> list[dict[str, Any]]:
        """The channel file's objects for this stack, its workers accepting ``origin``."""
        return deploy.for_local_stack(
            deploy.load_objects(self.channel_file),
            bootstrap=bootstrap,
            origins=[origin],
            replicas=self.replicas,
            drain_window_seconds=self.drain_window_seconds,
        )

    def _apply(self, objects: list[dict[str, Any]], how: str) -> RenderedWorkers:
        """Apply the objects, wait for the channel Ready and read what was rendered back."""
        with self._step(f"apply {self.channel_file.name}{how} and wait for Ready"):
            self.kube.apply(objects, self.namespace)
            deploy.wait_channel_ready(self.kube, self.namespace, self.channel)
        with self._step("read the rendered ConfigMap, Secret and pods back"):
            self.rendered = deploy.materialize(
                self.kube, self.namespace, self.channel, self.workdir / "rendered"
            )
        return self.rendered

    def _up(self) -> None:
        kube = self.kube
        with self._step(f"operator watching namespace {self.namespace}"):
            deploy.install_crd(kube)
            deploy.release_stale_channels(kube, self.namespace)
            if self.real_pods:
                pods.ensure_node_namespace(kube, self.namespace)
            else:
                deploy.ensure_namespace(kube, self.namespace)
            self.operator = OperatorProcess(
                self.env["kubeconfig"], self.namespace, self.log_dir / "operator.log"
            )
            self.operator.start()
        if self.real_pods and self.traefik_binary is not None:
            self._up_behind_traefik(self.traefik_binary)
            return
        lb = LoadBalancer(
            servers=[],
            cookie="",
            stream_paths=[],
            workdir=self.workdir,
            log=self.log_dir / "haproxy.log",
            site_port=self.site_port,
        )
        if self.lb_port is not None:
            lb.port = self.lb_port
        self.lb = lb
        bootstrap = self._pod_bootstrap() if self.real_pods else self.env["kafka_bootstrap"]
        objects = self._objects(bootstrap, lb.origin)
        if self.real_pods:
            # HAProxy on the host stands in for the ingress and reaches the pods by
            # their addresses: no Ingress object (no controller would serve it).
            deploy.channel_of(objects)["spec"]["ingress"] = {"enabled": False}
        rendered = self._apply(objects, "")
        if self.real_pods:
            with self._step(f"wait for {self.replicas} worker pods Ready on the real node"):
                self.pod_ips = _ready_pod_ips(kube, self.namespace, self.channel, self.replicas)
            servers = [Server(name, port, ip) for name, (ip, port) in self.pod_ips.items()]
        else:
            with self._step(f"start {self.replicas} worker processes as pods {rendered.pod_names}"):
                self.workers = deploy.start_replicas(rendered, self.log_dir, self.replicas)
            servers = [Server(w.replica_id, w.port) for w in self.workers]
        with self._step("start HAProxy (cookie stickiness, /readyz health checks)"):
            lb.servers = servers
            lb.cookie = rendered.cookie_name
            lb.stream_paths = [rendered.websocket_path, rendered.sse_path]
            lb.start()
            for server in servers:
                lb.wait_state(server.name, "UP", timeout=60)

    def _up_behind_traefik(self, binary: Path) -> None:
        """The channel's own Ingress, served by Traefik, in front of its real pods."""
        kube = self.kube
        bootstrap = self._pod_bootstrap()
        controller = traefik.Traefik(
            binary,
            self.env["kubeconfig"],
            self.log_dir / "traefik.log",
            gateway_api=False,
            site_port=self.site_port,
            namespaces=(self.namespace,),
        )
        if self.lb_port is not None:
            controller.port = self.lb_port
        self.controller = controller
        with self._step("start Traefik (Kubernetes Ingress provider) on 127.0.0.1"):
            traefik.ensure_ingress_class(kube)
            controller.start()
        objects = self._objects(bootstrap, controller.origin)
        spec = deploy.channel_of(objects)["spec"]
        cookie = (spec.get("ingress") or {}).get("stickyCookie") or {}
        spec["ingress"] = {"enabled": False}
        spec["exposure"] = {
            "type": "ingress",
            "stickyCookie": cookie,
            "ingress": {"className": traefik.INGRESS_CLASS, "profile": "traefik"},
        }
        self._apply(objects, " (exposure: Traefik)")
        with self._step(f"wait for {self.replicas} worker pods Ready and routed by Traefik"):
            self.pod_ips = _ready_pod_ips(kube, self.namespace, self.channel, self.replicas)
            controller.wait_servers(
                f"{self.namespace}-{self.channel}-worker-", self.replicas, timeout=120
            )

    @property
    def entry_url(self) -> str:
        """The entry point's base URL (Traefik or HAProxy)."""
        if self.controller is not None:
            return self.controller.url
        assert self.lb is not None
        return self.lb.url

    @property
    def entry_name(self) -> str:
        return "Traefik" if self.controller is not None else "HAProxy"

    @property
    def ws_url(self) -> str:
        assert self.rendered is not None
        if self.controller is not None:
            return self.controller.ws_base + self.rendered.websocket_path
        assert self.lb is not None
        return self.lb.ws_base + self.rendered.websocket_path

    def token(self, person: Person, ttl: float = 12 * 3600) -> str:
        """A token the identity provider would issue, signed with the channel's secret."""
        assert self.rendered is not None
        return self.rendered.token(person, ttl)

    def worker(self, replica_id: str) -> Replica:
        return next(w for w in self.workers if w.replica_id == replica_id)

    def restart(self, replica: Replica) -> None:
        """Bring a stopped replica back on its port and wait until HAProxy routes to it."""
        assert self.lb is not None
        replica.start()
        self.lb.wait_state(replica.replica_id, "UP")

    def ensure_all_up(self) -> None:
        for w in self.workers:
            if not w.ready():
                if w.proc is not None and w.proc.poll() is None:
                    w.stop()
                self.restart(w)

    def down(self) -> None:
        """Stop everything this deployment started; the channel is deleted first, while
        the operator still runs, so its finalizer never leaves the namespace hanging."""
        if self.lb is not None:
            self.lb.stop()
        if self.controller is not None:
            self.controller.stop()
        deploy.stop_all(self.workers)
        if self.operator is not None and self.operator.alive():
            try:
                deploy.delete_channel(self.kube, self.namespace, self.channel)
            except deploy.DeployError as error:
                say(f"could not delete the channel: {error}")
            self.operator.stop()
            try:
                self.kube.run(
                    "delete", "namespace", self.namespace, "--wait=false", "--ignore-not-found"
                )
            except deploy.DeployError as error:
                say(f"could not delete namespace {self.namespace}: {error}")
        self.operator = None


def _ready_pod_ips(
    kube: Kube, namespace: str, channel: str, replicas: int
) -> dict[str, tuple[str, int]]:
    """The worker pods once the Deployment's rollout is complete: every replica updated,
    ready and of the current ReplicaSet, no old or terminating pod left (a channel can be
    Ready while a second rollout still replaces its first pods)."""
    found: dict[str, tuple[str, int]] = {}

    def ready() -> bool:
        deployment = json.loads(
            kube.run("get", "deployment", f"{channel}-worker", "-n", namespace, "-o", "json")
        )
        status = deployment.get("status", {})
        settled = (
            status.get("observedGeneration") == deployment["metadata"]["generation"]
            and status.get("replicas") == replicas
            and status.get("updatedReplicas") == replicas
            and status.get("readyReplicas") == replicas
        )
        if not settled:
            return False
        listed = json.loads(
            kube.run(
                "get", "pods", "-n", namespace, "-l",
                f"app.kubernetes.io/instance={channel}", "-o", "json",
            )
        )  # fmt: skip
        hashes = {p["metadata"].get("labels", {}).get("pod-template-hash") for p in listed["items"]}
        found.clear()
        for pod in listed["items"]:
            if pod["metadata"].get("deletionTimestamp"):
                return False
            conditions = pod.get("status", {}).get("conditions", [])
            if any(c["type"] == "Ready" and c["status"] == "True" for c in conditions):
                port = int(pod["spec"]["containers"][0]["ports"][0]["containerPort"])
                found[pod["metadata"]["name"]] = (pod["status"]["podIP"], port)
        return len(hashes) == 1 and len(found) == replicas

    pods.wait_for(ready, f"{replicas} worker pods Ready, rollout complete", 240)
    return dict(found)


class _Silent:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


def replica_counts(viewers: Sequence[Any]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for v in viewers:
        if v.replica is not None:
            counts[v.replica] = counts.get(v.replica, 0) + 1
    return counts
