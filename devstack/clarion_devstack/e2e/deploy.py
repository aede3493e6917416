"""A channel deployed the way the operator renders it, with local processes for pods.

There is no container runtime, so the Deployment's pods (KWOK fakes them) cannot run.
Instead this module reads back what the operator wrote to the API server — the
ConfigMap's ``worker.json``, the Deployment's container arguments, environment and
projected volume (ConfigMap and Secret items under ``/etc/clarion``), and the names of
the pods KWOK marked Ready — and starts one ``python -m clarion_worker`` per pod with
exactly that configuration. The only rewrite: paths under the volume's mount point are
pointed at a local folder holding the same files.
"""

from __future__ import annotations

import base64
import copy
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self

import httpx
import jwt
import yaml

from clarion_devstack import kube
from clarion_devstack.crds import wait_established
from clarion_devstack.harness import WorkerProcess
from clarion_devstack.procs import free_port, stop_popen
from clarion_devstack.settings import CHECKOUT
from clarion_devstack.stack import StackEnv

if TYPE_CHECKING:
    from clarion_devstack.e2e.events import Person

CHANNEL_FILE = Path(__file__).with_name("unionflow.yaml")
CRD_FILE = CHECKOUT / "manifests" / "crd.yaml"
FIELD_MANAGER = "clarion-e2e"


class DeployError(RuntimeError):
    """Something the end-to-end setup waited for did not happen."""


class Arrangement:
    """Something a test brings up and takes down (a channel with its operator, workers
    and entry point): ``up`` takes down what it started if it fails midway, and a
    ``with`` block takes everything down whatever its body does."""

    def _up(self) -> None:
        raise NotImplementedError

    def down(self) -> None:
        raise NotImplementedError

    def up(self) -> None:
        try:
            self._up()
        except BaseException:
            self.down()
            raise

    def __enter__(self) -> Self:
        self.up()
        return self

    def __exit__(self, *exc: object) -> None:
        self.down()


@dataclass(frozen=True)
class Kube:
    """The pinned kubectl against the local stack."""

    kubectl: str
    kubeconfig: str

    @classmethod
    def of(cls, env: StackEnv) -> Kube:
        return cls(env["kubectl"], env["kubeconfig"])

    def run(self, *args: str, stdin: str | None = None) -> str:
        result = kube.run_kubectl(self.kubectl, self.kubeconfig, *args, stdin=stdin)
        if result.returncode != 0:
            raise DeployError(f"kubectl {' '.join(args)} failed:\n{result.stderr}")
        return result.stdout

    def get(self, kind: str, name: str, namespace: str) -> dict[str, Any]:
        body: dict[str, Any] = json.loads(
            self.run("get", kind, name, "-n", namespace, "-o", "json")
        )
        return body

    def apply(self, objects: Sequence[Mapping[str, Any]], namespace: str | None = None) -> None:
        """Server-side apply as the harness's field manager (``namespace`` for the
        objects that do not name theirs)."""
        text = yaml.safe_dump_all([dict(o) for o in objects])
        where = ["-n", namespace] if namespace else []
        self.run(
            "apply",
            "--server-side",
            "--force-conflicts",
            f"--field-manager={FIELD_MANAGER}",
            *where,
            "-f",
            "-",
            stdin=text,
        )


def install_crd(kube: Kube) -> None:
    kube.run(
        "apply",
        "--server-side",
        "--force-conflicts",
        f"--field-manager={FIELD_MANAGER}",
        "-f",
        str(CRD_FILE),
    )
    wait_established(kube.run, ["realtimechannels.realtime.clarion.dev"])


def ensure_namespace(kube: Kube, namespace: str) -> None:
    body = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}}
    kube.run(
        "apply",
        "--server-side",
        f"--field-manager={FIELD_MANAGER}",
        "-f",
        "-",
        stdin=json.dumps(body),
    )


def load_objects(path: Path = CHANNEL_FILE) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def channel_of(objects: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    for obj in objects:
        if obj.get("kind") == "RealtimeChannel":
            return dict(obj)
    raise DeployError("no RealtimeChannel in the example file")


def for_local_stack(
    objects: Sequence[Mapping[str, Any]],
    *,
    bootstrap: str,
    origins: Sequence[str] = (),
    replicas: int | None = None,
    drain_window_seconds: int | None = None,
) -> list[dict[str, Any]]:
    """The example with the facts only a deployment knows: broker address, LB origin."""
    out = [copy.deepcopy(dict(o)) for o in objects]
    spec = channel_of(out)["spec"]
    spec["kafka"]["bootstrapServers"] = bootstrap
    allowed = spec["auth"].setdefault("allowedOrigins", [])
    allowed.extend(o for o in origins if o not in allowed)
    if replicas is not None:
        spec.setdefault("workers", {})["replicas"] = replicas
    if drain_window_seconds is not None:
        spec.setdefault("workers", {})["drainWindowSeconds"] = drain_window_seconds
    return out


# ---- the operator ------------------------------------------------------------------


@dataclass
class OperatorProcess:
    """``python -m clarion_operator`` watching one namespace, as in production.

    The end-to-end harness and the operator's integration tests both run it through this
    class; its log (kopf's JSON lines) is ``log``.
    """

    kubeconfig: str
    namespace: str
    log: Path
    metrics_port: int = field(default_factory=free_port)
    liveness_port: int = field(default_factory=free_port)
    #: ``--drift-interval``; None keeps the operator's default.
    drift_interval: float | None = None
    kafka_request_timeout_ms: int = 5000
    proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 60) -> None:
        for attempt in range(3):
            try:
                self._start(timeout)
                return
            except DeployError:
                # Free ports are picked before binding: another process may win the race.
                if attempt == 2 or "already in use" not in self.log.read_text().lower():
                    raise
                self.metrics_port, self.liveness_port = free_port(), free_port()
                self.log.write_text("")

    def _start(self, timeout: float) -> None:
        env = {**os.environ, "KUBECONFIG": self.kubeconfig}  # noqa: TID251 - child env
        argv = [
            sys.executable,
            "-m",
            "clarion_operator",
            "--standalone",
            "--namespace",
            self.namespace,
            "--metrics-port",
            str(self.metrics_port),
            "--liveness-port",
            str(self.liveness_port),
            "--kafka-request-timeout-ms",
            str(self.kafka_request_timeout_ms),
        ]
        if self.drift_interval is not None:
            argv += ["--drift-interval", str(self.drift_interval)]
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                argv, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True
            )
        _wait(self.healthy, f"the operator to be live (log {self.log})", timeout, self)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def healthy(self) -> bool:
        try:
            url = f"http://127.0.0.1:{self.liveness_port}/healthz"
            with urllib.request.urlopen(url, timeout=1) as response:
                return int(response.status) == 200
        except OSError:
            return False

    def metrics(self) -> str:
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=2) as response:
            return bytes(response.read()).decode()

    def log_lines(self) -> list[dict[str, Any]]:
        """The JSON log lines written so far (kopf's JSON format, the default)."""
        lines = []
        for raw in self.log.read_text().splitlines():
            try:
                lines.append(dict(json.loads(raw)))
            except ValueError:
                continue  # a traceback, or the line being written right now
        return lines

    def stop(self) -> None:
        stop_popen(self.proc, signal.SIGTERM, 15)
        self.proc = None


def _wait(ready: Any, what: str, timeout: float, process: OperatorProcess | None = None) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        if process is not None and not process.alive():
            raise DeployError(f"process exited while waiting for {what}")
        if time.monotonic() > deadline:
            raise DeployError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.1)


def wait_channel_ready(kube: Kube, namespace: str, name: str, timeout: int = 120) -> None:
    kube.run(
        "wait", f"rtc/{name}", "-n", namespace, "--for=condition=Ready", f"--timeout={timeout}s"
    )


def release_stale_channels(kube: Kube, namespace: str) -> None:
    """Channels left by an earlier run that died before tearing down (their operator is
    gone, so their finalizers would never be released) would claim the example's topics
    (the older channel wins): release and delete those of the same prefix."""
    prefix = namespace.rsplit("-", 1)[0] if "-" in namespace else namespace
    listed = json.loads(kube.run("get", "rtc", "--all-namespaces", "-o", "json"))
    for item in listed["items"]:
        meta = item["metadata"]
        ns = meta["namespace"]
        if ns == namespace or not ns.startswith(prefix):
            continue
        patch = json.dumps({"metadata": {"finalizers": []}})
        kube.run("patch", "rtc", meta["name"], "-n", ns, "--type=merge", "-p", patch)
        kube.run("delete", "namespace", ns, "--wait=false", "--ignore-not-found")


def delete_channel(kube: Kube, namespace: str, name: str, timeout: int = 60) -> None:
    """Delete the channel while the operator still runs, so its finalizer is released."""
    kube.run(
        "delete",
        "rtc",
        name,
        "-n",
        namespace,
        "--ignore-not-found",
        "--wait=true",
        f"--timeout={timeout}s",
    )


# ---- what the operator rendered, as local files ---------------------------------------


@dataclass(frozen=True)
class RenderedWorkers:
    """The operator's rendering of one channel, materialized for local processes."""

    channel: str
    namespace: str
    #: ``worker.json`` exactly as stored in the ConfigMap.
    worker_json: str
    #: The local copy the processes read (mounted paths pointed at ``root``).
    config_path: Path
    #: Local stand-in for the projected volume's mount point.
    root: Path
    mount_path: str
    argv: tuple[str, ...]
    env: Mapping[str, str]
    #: Names of the Deployment's pods (KWOK keeps them Ready): the replica ids.
    pod_names: tuple[str, ...]
    cookie_name: str

    @property
    def doc(self) -> dict[str, Any]:
        doc: dict[str, Any] = json.loads(self.config_path.read_text())
        return doc

    @property
    def websocket_path(self) -> str:
        return str(self.doc.get("server", {}).get("websocketPath", "/ws/dashboard"))

    @property
    def sse_path(self) -> str:
        return str(self.doc.get("server", {}).get("ssePath", "/sse/dashboard"))

    def hmac_secret(self) -> bytes:
        path = self.doc["auth"].get("hmacSecretFile")
        if not path:
            raise DeployError("the channel does not use an HMAC secret")
        return Path(path).read_bytes()

    def token(self, person: Person, ttl: float = 12 * 3600) -> str:
        """A token the identity provider would issue, signed with the channel's secret."""
        auth = self.doc["auth"]
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
        return jwt.encode(claims, self.hmac_secret(), algorithm="HS256")


def _rewrite(value: Any, mount: str, root: Path) -> Any:
    if isinstance(value, str) and (value == mount or value.startswith(mount + "/")):
        return str(root / value[len(mount) :].lstrip("/"))
    if isinstance(value, dict):
        return {k: _rewrite(v, mount, root) for k, v in value.items()}
    if isinstance(value, list):
        return [_rewrite(v, mount, root) for v in value]
    return value


def materialize(
    kube: Kube, namespace: str, channel: str, workdir: Path, timeout: float = 60
) -> RenderedWorkers:
    """Read the rendered objects back from the API server and lay them out locally."""
    name = f"{channel}-worker"
    deployment = kube.get("deployment", name, namespace)
    pod_spec = deployment["spec"]["template"]["spec"]
    container = pod_spec["containers"][0]
    mounts = {m["name"]: m["mountPath"] for m in container.get("volumeMounts", [])}
    volume = next(v for v in pod_spec["volumes"] if "projected" in v)
    mount = mounts[volume["name"]]
    root = workdir / "mount" / mount.strip("/").replace("/", "_")
    root.mkdir(parents=True, exist_ok=True)
    worker_json = ""
    for source in volume["projected"]["sources"]:
        if "configMap" in source:
            ref = source["configMap"]
            data = kube.get("configmap", ref["name"], namespace)["data"]
            for item in ref["items"]:
                text = data[item["key"]]
                if item["path"].endswith(".json"):
                    worker_json = text
                    text = json.dumps(_rewrite(json.loads(text), mount, root), indent=2)
                _write(root / item["path"], text.encode())
        elif "secret" in source:
            ref = source["secret"]
            data = kube.get("secret", ref["name"], namespace)["data"]
            for item in ref["items"]:
                _write(root / item["path"], base64.b64decode(data[item["key"]]), private=True)
    if not worker_json:
        raise DeployError(f"no worker.json in the projected volume of {name}")
    argv = tuple(_rewrite(list(container.get("args", [])), mount, root))
    config_path = Path(argv[argv.index("--config") + 1])
    env = {e["name"]: e["value"] for e in container.get("env", []) if "value" in e}
    replicas = int(deployment["spec"].get("replicas", 1))
    selector = ",".join(
        f"{k}={v}" for k, v in deployment["spec"]["selector"]["matchLabels"].items()
    )
    pods: list[str] = []

    def enough_pods() -> bool:
        nonlocal pods
        listed = json.loads(kube.run("get", "pods", "-n", namespace, "-l", selector, "-o", "json"))
        pods = sorted(
            p["metadata"]["name"]
            for p in listed["items"]
            if not p["metadata"].get("deletionTimestamp")
        )
        return len(pods) >= replicas

    _wait(enough_pods, f"{replicas} pods of {name}", timeout)
    cookie = "clarion-affinity"
    ingress = _get_optional(kube, "ingress", name, namespace)
    if ingress is not None:
        annotations = ingress["metadata"].get("annotations", {})
        cookie = annotations.get("nginx.ingress.kubernetes.io/session-cookie-name", cookie)
    return RenderedWorkers(
        channel=channel,
        namespace=namespace,
        worker_json=worker_json,
        config_path=config_path,
        root=root,
        mount_path=mount,
        argv=argv,
        env=env,
        pod_names=tuple(pods),
        cookie_name=cookie,
    )


def _get_optional(kube: Kube, kind: str, name: str, namespace: str) -> dict[str, Any] | None:
    try:
        return kube.get(kind, name, namespace)
    except DeployError:
        return None


def _write(path: Path, data: bytes, private: bool = False) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    if private:
        path.chmod(0o600)


# ---- worker replicas ----------------------------------------------------------------


@dataclass
class Replica:
    """One pod of the Deployment, played by a local worker process on a fixed port."""

    rendered: RenderedWorkers
    replica_id: str
    log_dir: Path
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None
    starts: int = 0

    @property
    def log(self) -> Path:
        return self.log_dir / f"worker-{self.replica_id}.log"

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def worker(self) -> WorkerProcess:
        """The harness view (metrics, consumed counts) of the running process."""
        if self.proc is None:
            raise DeployError(f"replica {self.replica_id} is not running")
        return WorkerProcess(self.replica_id, self.port, self.proc, self.log)

    def spawn(self) -> None:
        # The container's environment, plus what Kubernetes would inject (the pod name).
        # A pod sees only its container's variables: none of ours named CLARION_*.
        env = {k: v for k, v in os.environ.items() if not k.startswith("CLARION_")}  # noqa: TID251
        env.update({**self.rendered.env, "CLARION_REPLICA_ID": self.replica_id})
        argv = [
            sys.executable,
            "-m",
            "clarion_worker",
            *self.rendered.argv,
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
        ]
        self.log_dir.mkdir(parents=True, exist_ok=True)
        with self.log.open("ab") as out:
            out.write(f"--- start {self.starts + 1}: {' '.join(argv)}\n".encode())
            out.flush()
            self.proc = subprocess.Popen(
                argv, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True
            )
        self.starts += 1

    def ready(self) -> bool:
        if self.proc is None or self.proc.poll() is not None:
            return False
        try:
            return httpx.get(f"{self.http}/readyz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while not self.ready():
            if self.proc is None or self.proc.poll() is not None:
                raise DeployError(f"replica {self.replica_id} exited; see {self.log}")
            if time.monotonic() > deadline:
                raise DeployError(f"replica {self.replica_id} not ready in {timeout}s: {self.log}")
            time.sleep(0.1)

    def start(self, timeout: float = 60) -> None:
        self.spawn()
        self.wait_ready(timeout)

    def kill(self) -> None:
        """SIGKILL: what a node failure or an OOM kill looks like to clients."""
        if self.proc is not None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)

    def terminate(self) -> None:
        """SIGTERM: what the kubelet sends at a rolling update (the worker drains)."""
        if self.proc is not None:
            self.proc.send_signal(signal.SIGTERM)

    def wait_exit(self, timeout: float = 60) -> int:
        if self.proc is None:
            return 0
        return self.proc.wait(timeout=timeout)

    def stop(self) -> None:
        """Stop at once (SIGINT skips the drain), for teardown."""
        stop_popen(self.proc, signal.SIGINT, 10)


def start_replicas(
    rendered: RenderedWorkers, log_dir: Path, count: int | None = None
) -> list[Replica]:
    """One replica per pod (or ``count``), started together and waited for together."""
    names = list(rendered.pod_names)
    count = len(names) if count is None else count
    while len(names) < count:
        names.append(f"{rendered.channel}-worker-extra-{len(names)}")
    replicas = [Replica(rendered, name, log_dir) for name in names[:count]]
    try:
        for replica in replicas:
            replica.spawn()
        for replica in replicas:
            replica.wait_ready()
    except BaseException:
        for replica in replicas:
            replica.stop()
        raise
    return replicas


def stop_all(replicas: Iterator[Replica] | Sequence[Replica]) -> None:
    for replica in replicas:
        replica.stop()
