"""The whole end-to-end arrangement, up and down: what the tests and ``make demo`` share.

operator (real process) --reconciles--> RealtimeChannel (the UnionFlow example)
    -> Kafka topics, ConfigMap worker.json, Secret mount, Deployment (KWOK pods)
worker processes, one per pod, configured from what the API server holds
HAProxy (cookie stickiness, /readyz checks) on 127.0.0.1 in front of them
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jwt

from clarion_devstack.e2e import deploy
from clarion_devstack.e2e.deploy import Kube, OperatorProcess, RenderedWorkers, Replica
from clarion_devstack.e2e.events import Person
from clarion_devstack.e2e.haproxy import LoadBalancer, Server
from clarion_devstack.progress import say, step
from clarion_devstack.stack import StackEnv


@dataclass
class Deployment:
    env: StackEnv
    workdir: Path
    namespace: str = "unionflow"
    replicas: int = 2
    drain_window_seconds: int | None = None
    site_port: int | None = None
    lb_port: int | None = None
    channel_file: Path = deploy.CHANNEL_FILE
    quiet: bool = False
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

    def up(self) -> None:
        try:
            self._up()
        except BaseException:
            self.down()
            raise

    def _up(self) -> None:
        kube = self.kube
        with self._step(f"operator watching namespace {self.namespace}"):
            deploy.install_crd(kube)
            deploy.release_stale_channels(kube, self.namespace)
            deploy.ensure_namespace(kube, self.namespace)
            self.operator = OperatorProcess(
                self.env["kubeconfig"], self.namespace, self.log_dir / "operator.log"
            )
            self.operator.start()
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
        objects = deploy.for_local_stack(
            deploy.load_objects(self.channel_file),
            bootstrap=self.env["kafka_bootstrap"],
            origins=[lb.origin],
            replicas=self.replicas,
            drain_window_seconds=self.drain_window_seconds,
        )
        with self._step(f"apply {self.channel_file.name} and wait for Ready"):
            kube.apply(objects, self.namespace)
            deploy.wait_channel_ready(kube, self.namespace, self.channel)
        with self._step("read the rendered ConfigMap, Secret and pods back"):
            self.rendered = deploy.materialize(
                kube, self.namespace, self.channel, self.workdir / "rendered"
            )
        with self._step(
            f"start {self.replicas} worker processes as pods {self.rendered.pod_names}"
        ):
            self.workers = deploy.start_replicas(self.rendered, self.log_dir, self.replicas)
        with self._step("start HAProxy (cookie stickiness, /readyz health checks)"):
            lb.servers = [Server(w.replica_id, w.port) for w in self.workers]
            lb.cookie = self.rendered.cookie_name
            lb.stream_paths = [self.rendered.websocket_path, self.rendered.sse_path]
            lb.start()
            for w in self.workers:
                lb.wait_state(w.replica_id, "UP")

    @property
    def ws_url(self) -> str:
        assert self.lb is not None
        assert self.rendered is not None
        return self.lb.ws_base + self.rendered.websocket_path

    def token(self, person: Person, ttl: float = 12 * 3600) -> str:
        """A token the identity provider would issue, signed with the channel's secret."""
        assert self.rendered is not None
        auth = self.rendered.doc["auth"]
        now = int(time.time())
        claims: dict[str, Any] = {
            auth.get("organizationsClaim", "organizations"): list(person.organizations),
            auth.get("userClaim", "sub"): person.user,
            "iat": now,
            "exp": now + int(ttl),
        }
        if auth.get("issuer"):
            claims["iss"] = auth["issuer"]
        if auth.get("audience"):
            claims["aud"] = auth["audience"]
        return jwt.encode(claims, self.rendered.hmac_secret(), algorithm="HS256")

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
