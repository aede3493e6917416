"""The Kubernetes control plane: etcd, kube-apiserver, kube-controller-manager,
kube-scheduler, and KWOK with one fake node so that Pods become Ready without a
container runtime."""

from __future__ import annotations

import base64
import json
import ssl
import subprocess
import sys
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from .components import Launch
from .pki import Pki
from .procs import StackError, free_port

SERVICE_CIDR = "10.0.0.0/24"
SERVICE_IP = "10.0.0.1"
FAKE_NODE = "kwok-node-0"
_FAKE_NODE_MANIFEST = {
    "apiVersion": "v1",
    "kind": "Node",
    "metadata": {
        "name": FAKE_NODE,
        "annotations": {"kwok.x-k8s.io/node": "fake", "node.alpha.kubernetes.io/ttl": "0"},
        "labels": {
            "type": "kwok",
            "kubernetes.io/hostname": FAKE_NODE,
            "kubernetes.io/os": "linux",
            "kubernetes.io/arch": "amd64",
        },
    },
}


@dataclass(frozen=True)
class ControlPlane:
    home: Path
    pki: Pki
    etcd_port: int
    etcd_peer_port: int
    api_port: int
    cm_port: int
    scheduler_port: int
    kwok_port: int

    @property
    def api_url(self) -> str:
        return f"https://127.0.0.1:{self.api_port}"

    @property
    def kubeconfig(self) -> Path:
        return self.home / "admin.kubeconfig"


def plan(home: Path, pki: Pki) -> ControlPlane:
    return ControlPlane(home, pki, *(free_port() for _ in range(6)))


def write_kubeconfig(cp: ControlPlane) -> Path:
    def b64(path: Path) -> str:
        return base64.b64encode(path.read_bytes()).decode()

    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "clarion-local",
                "cluster": {
                    "server": cp.api_url,
                    "certificate-authority-data": b64(cp.pki.ca_cert),
                },
            }
        ],
        "users": [
            {
                "name": "clarion-admin",
                "user": {
                    "client-certificate-data": b64(cp.pki.admin_cert),
                    "client-key-data": b64(cp.pki.admin_key),
                },
            }
        ],
        "contexts": [
            {
                "name": "clarion-local",
                "context": {"cluster": "clarion-local", "user": "clarion-admin"},
            }
        ],
        "current-context": "clarion-local",
    }
    # JSON is valid YAML, and every kubeconfig reader accepts it.
    cp.kubeconfig.write_text(json.dumps(config, indent=2))
    cp.kubeconfig.chmod(0o600)
    return cp.kubeconfig


def etcd(binary: Path, cp: ControlPlane, log: Path) -> Launch:
    client = f"http://127.0.0.1:{cp.etcd_port}"
    peer = f"http://127.0.0.1:{cp.etcd_peer_port}"
    return Launch(
        "etcd",
        (
            str(binary),
            "--name=clarion",
            f"--data-dir={cp.home / 'etcd'}",
            f"--listen-client-urls={client}",
            f"--advertise-client-urls={client}",
            f"--listen-peer-urls={peer}",
            f"--initial-advertise-peer-urls={peer}",
            f"--initial-cluster=clarion={peer}",
            # A throwaway test store: durability buys nothing and fsync costs seconds.
            "--unsafe-no-fsync",
            "--log-level=warn",
        ),
        log,
    )


def apiserver(binary: Path, cp: ControlPlane, log: Path) -> Launch:
    p = cp.pki
    return Launch(
        "kube-apiserver",
        (
            str(binary),
            f"--etcd-servers=http://127.0.0.1:{cp.etcd_port}",
            f"--cert-dir={cp.home / 'apiserver-certs'}",
            f"--tls-cert-file={p.serving_cert}",
            f"--tls-private-key-file={p.serving_key}",
            f"--client-ca-file={p.ca_cert}",
            "--bind-address=127.0.0.1",
            "--advertise-address=127.0.0.1",
            f"--secure-port={cp.api_port}",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            # Node: what a real kubelet may read and write (its pods, their secrets).
            "--authorization-mode=Node,RBAC",
            # A namespace's annotations may pin its pods to the real node (node.py).
            "--enable-admission-plugins=PodNodeSelector,PodTolerationRestriction",
            # The API server's client certificate towards kubelets (logs, exec).
            f"--kubelet-client-certificate={p.admin_cert}",
            f"--kubelet-client-key={p.admin_key}",
            # By address: the node's name resolves nowhere, and must not be looked up.
            "--kubelet-preferred-address-types=InternalIP",
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            f"--service-account-key-file={p.sa_pub}",
            f"--service-account-signing-key-file={p.sa_key}",
            "--allow-privileged=true",
            "--enable-priority-and-fairness=false",
            "--v=1",
        ),
        log,
    )


def supervised(name: str, cp: ControlPlane, argv: tuple[str, ...]) -> tuple[str, ...]:
    """``argv`` run by ``supervise``, which restarts it whenever it exits (as the kubelet
    restarts a real control plane's static pods), once the API server is ready, and is
    the PID the stack records."""
    return (
        sys.executable,
        "-m",
        "clarion_devstack.supervise",
        f"--name={name}",
        f"--wait-for={cp.api_url}/readyz",
        f"--ca-file={cp.pki.ca_cert}",
        "--",
        *argv,
    )


#: Leader election as in production (the Lease in kube-system): an API server or etcd gone
#: for longer than the renew deadline makes the component exit, and its supervisor starts a
#: fresh one, which lists everything when the API server is back instead of waiting out
#: client-go's list/watch backoff. Shorter than the defaults (lease 15 s, renew deadline
#: 10 s, retry 2 s): a new process waits out its predecessor's lease from the moment it
#: first reads it, which with 15 s alone put Ready 17-21 s after the API server's return,
#: past the operator's 10 s target (7-9 s with these; docs/operator.md, "Recovery"). The
#: stack has one candidate, so the lease guards against nobody; 4 s without a renewal
#: means an API server that does not answer.
LEADER_ELECTION = (
    "--leader-elect=true",
    "--leader-elect-resource-namespace=kube-system",
    "--leader-elect-lease-duration=5s",
    "--leader-elect-renew-deadline=4s",
    "--leader-elect-retry-period=1s",
)


def _leader_elected(
    name: str, binary: Path, cp: ControlPlane, port: int, certs: str, log: Path, *own: str
) -> Launch:
    """A controller-manager or scheduler: the flags both take (the stack's kubeconfig for
    every client, a loopback secure port with its own self-signed certificate folder,
    leader election), then its own, supervised."""
    argv = (
        str(binary),
        f"--kubeconfig={cp.kubeconfig}",
        f"--authentication-kubeconfig={cp.kubeconfig}",
        f"--authorization-kubeconfig={cp.kubeconfig}",
        "--bind-address=127.0.0.1",
        f"--secure-port={port}",
        f"--cert-dir={cp.home / certs}",
        *LEADER_ELECTION,
        *own,
        "--v=1",
    )
    return Launch(name, supervised(name, cp, argv), log)


def controller_manager(binary: Path, cp: ControlPlane, log: Path) -> Launch:
    return _leader_elected(
        "kube-controller-manager",
        binary,
        cp,
        cp.cm_port,
        "cm-certs",
        log,
        f"--service-account-private-key-file={cp.pki.sa_key}",
        f"--root-ca-file={cp.pki.ca_cert}",
        f"--cluster-signing-cert-file={cp.pki.ca_cert}",
        f"--cluster-signing-key-file={cp.pki.ca_key}",
        "--use-service-account-credentials=false",
        "--controllers=*,-nodeipam,-cloud-node-lifecycle",
    )


def scheduler(binary: Path, cp: ControlPlane, log: Path) -> Launch:
    return _leader_elected("kube-scheduler", binary, cp, cp.scheduler_port, "scheduler-certs", log)


def kwok(binary: Path, cp: ControlPlane, log: Path) -> Launch:
    return Launch(
        "kwok",
        (
            str(binary),
            f"--kubeconfig={cp.kubeconfig}",
            "--manage-all-nodes=false",
            "--manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake",
            "--node-ip=127.0.0.1",
            "--cidr=10.244.0.0/16",
            "--node-lease-duration-seconds=40",
            f"--server-address=127.0.0.1:{cp.kwok_port}",
        ),
        log,
    )


def _admin_tls(cp: ControlPlane) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(cp.pki.ca_cert))
    ctx.load_cert_chain(str(cp.pki.admin_cert), str(cp.pki.admin_key))
    return ctx


def _insecure_tls() -> ssl.SSLContext:
    # The controller-manager and scheduler serve /healthz with self-signed certificates.
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def _get(url: str, ctx: ssl.SSLContext | None = None) -> str | None:
    try:
        with urllib.request.urlopen(url, context=ctx, timeout=2) as resp:
            return str(resp.read().decode())
    except (urllib.error.URLError, OSError, ssl.SSLError):
        return None


def etcd_ready(cp: ControlPlane) -> bool:
    body = _get(f"http://127.0.0.1:{cp.etcd_port}/health")
    return body is not None and '"health":"true"' in body.replace(" ", "")


def apiserver_ready(cp: ControlPlane) -> bool:
    return _get(f"{cp.api_url}/readyz", _admin_tls(cp)) == "ok"


def healthz(port: int) -> bool:
    return _get(f"https://127.0.0.1:{port}/healthz", _insecure_tls()) == "ok"


def server_version(cp: ControlPlane) -> str:
    body = _get(f"{cp.api_url}/version", _admin_tls(cp))
    if body is None:
        raise StackError("the API server did not answer /version")
    return str(json.loads(body)["gitVersion"])


def run_kubectl(
    binary: str | Path, kubeconfig: str | Path, *args: str, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    """kubectl against ``kubeconfig``, its output captured as text; the caller judges the
    exit code (each harness raises its own error)."""
    argv = [str(binary), f"--kubeconfig={kubeconfig}", *args]
    return subprocess.run(argv, input=stdin, capture_output=True, text=True)


def kubectl(binary: Path, cp: ControlPlane, *args: str, stdin: str | None = None) -> str:
    result = run_kubectl(binary, cp.kubeconfig, *args, stdin=stdin)
    if result.returncode != 0:
        raise StackError(f"kubectl {' '.join(args)} failed: {result.stderr.strip()}")
    return result.stdout


def register_fake_node(kubectl_bin: Path, cp: ControlPlane) -> None:
    kubectl(
        kubectl_bin,
        cp,
        "apply",
        "--server-side",
        "--field-manager=clarion-devstack",
        "-f",
        "-",
        stdin=json.dumps(_FAKE_NODE_MANIFEST),
    )


def node_ready(kubectl_bin: Path, cp: ControlPlane) -> bool:
    try:
        out = kubectl(
            kubectl_bin,
            cp,
            "get",
            "node",
            FAKE_NODE,
            "-o",
            "jsonpath={.status.conditions[?(@.type=='Ready')].status}",
        )
    except StackError:
        return False
    return out.strip() == "True"


def default_service_account(kubectl_bin: Path, cp: ControlPlane) -> bool:
    try:
        kubectl(kubectl_bin, cp, "get", "serviceaccount", "default", "-n", "default")
    except StackError:
        return False
    return True
