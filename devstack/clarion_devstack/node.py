"""The local stack's real node: containerd + runc, CNI bridge networking, a kubelet and
kube-proxy built from the pinned Kubernetes, all as processes of this machine.

Everything it touches outside its own folder is recorded when it comes up and put back
when it goes down: the sysctls the kubelet, the CNI bridge plugin and this module change
(their original values), the bridge ``clarion0`` (its address and routes go with it),
one firewall chain that keeps pod traffic inside the pod network, the iptables chains of
kube-proxy and the kubelet, the ``kubepods`` cgroups, the mounts under the node's folder
and the network namespaces of its pods.

Pods can reach only each other and the host's bridge address (where Kafka has a listener
for them); registry pulls go to a closed port on 127.0.0.1 (images are imported with
``ctr``, pods use ``imagePullPolicy: IfNotPresent``). The node is tainted and labelled
``clarion.dev/node=real``: only pods in namespaces annotated by :func:`namespace_annotations`
(the API server's PodNodeSelector and PodTolerationRestriction admission plugins add the
selector and toleration) run on it; everything else stays on KWOK's fake node.

The pure ``render_*`` functions decide every file's contents; the rest drives them.
"""

from __future__ import annotations

import datetime as dt
import gzip
import hashlib
import io
import ipaddress
import json
import os
import shutil
import subprocess
import tarfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypedDict

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from .components import ComponentRecord, Launch
from .pki import Pki
from .procs import StackError, alive, free_port, spawn, wait_until
from .procs import stop as stop_pid

NODE_NAME = "clarion-node-0"
BRIDGE = "clarion0"
POD_CIDR = "10.247.0.0/24"
GATEWAY = "10.247.0.1"
LABEL_KEY = "clarion.dev/node"
LABEL_VALUE = "real"
#: Chain of the filter table that keeps pod traffic inside the pod network.
FIREWALL_CHAIN = "CLARION-NODE"
#: Components of the node in start order; ``down`` stops them in reverse.
ORDER = ("containerd", "kubelet", "kube-proxy")
PAUSE_IMAGE = "localhost/clarion/pause:catatonit"
CATATONIT = Path("/usr/bin/catatonit")
CONTAINERD = Path("/usr/bin/containerd")
CTR = Path("/usr/bin/ctr")
RUNC = Path("/usr/sbin/runc")
CNI_BIN = Path("/usr/lib/cni")
IPTABLES = "iptables"
#: A closed port: any registry pull containerd would try goes nowhere, and fails at once.
NO_REGISTRY_PROXY = "http://127.0.0.1:9"
#: What the kubelet, the CNI bridge plugin, kube-proxy and this module may change.
SYSCTLS = (
    "kernel/panic",
    "kernel/panic_on_oops",
    "kernel/keys/root_maxkeys",
    "kernel/keys/root_maxbytes",
    "vm/overcommit_memory",
    "vm/panic_on_oom",
    "net/ipv4/ip_forward",
    "net/ipv4/conf/all/forwarding",
    "net/ipv4/conf/default/forwarding",
    "net/ipv4/conf/all/route_localnet",
    "net/ipv6/conf/all/forwarding",
    "net/bridge/bridge-nf-call-iptables",
    "net/bridge/bridge-nf-call-ip6tables",
    "net/netfilter/nf_conntrack_max",
    "net/netfilter/nf_conntrack_tcp_timeout_established",
    "net/netfilter/nf_conntrack_tcp_timeout_close_wait",
)
#: Set by this module at ``up`` (the rest are changed by the kubelet and the plugins).
_SET_AT_UP = {
    "net/bridge/bridge-nf-call-iptables": "1",
    "net/ipv4/ip_forward": "1",
}
#: Host folders the runtime and the CNI plugins create when missing; removed at ``down``
#: when they did not exist before ``up``.
HOST_DIRS = ("/run/containerd", "/var/lib/cni", "/run/netns", "/var/run/netns")
#: The longest node folder whose sockets (the kubelet's pod-resources and device-plugin
#: sockets, containerd's ``.ttrpc``) stay within a unix socket path's 104 usable bytes.
MAX_HOME_LENGTH = 60
_CGROUP_ROOT = Path("/sys/fs/cgroup")
_IPTABLES_TABLES = ("filter", "nat", "mangle")


class NodeRecord(TypedDict):
    """The real node as written to ``env.json`` (under ``node``)."""

    name: str
    home: str
    bridge: str
    pod_cidr: str
    gateway: str
    containerd_socket: str
    ctr: str
    crictl: str
    kube_proxy: str
    kubelet_port: int
    #: Original values of :data:`SYSCTLS` (those the kernel has), restored at ``down``.
    sysctls: dict[str, str]
    #: KUBE-* chains that existed before ``up`` (left alone at ``down``), per table.
    kube_chains_before: dict[str, list[str]]
    #: Host folders that did not exist before ``up``.
    host_dirs_created: list[str]
    images: list[str]


@dataclass(frozen=True)
class NodePlan:
    """Where the node keeps its state, and its ports."""

    home: Path
    kubelet_port: int
    kubelet_healthz_port: int
    proxy_healthz_port: int
    proxy_metrics_port: int

    @property
    def containerd_root(self) -> Path:
        return self.home / "containerd" / "root"

    @property
    def containerd_state(self) -> Path:
        return self.home / "containerd" / "state"

    @property
    def containerd_socket(self) -> Path:
        return self.home / "containerd" / "containerd.sock"

    @property
    def containerd_config(self) -> Path:
        return self.home / "containerd" / "config.toml"

    @property
    def runc_root(self) -> Path:
        return self.home / "runc"

    @property
    def cni_conf_dir(self) -> Path:
        return self.home / "cni" / "net.d"

    @property
    def ipam_dir(self) -> Path:
        return self.home / "cni" / "ipam"

    @property
    def kubelet_root(self) -> Path:
        return self.home / "kubelet"

    @property
    def kubelet_config(self) -> Path:
        return self.home / "kubelet-config.json"

    @property
    def kubelet_kubeconfig(self) -> Path:
        return self.home / "kubelet.kubeconfig"

    @property
    def pod_logs(self) -> Path:
        return self.home / "pod-logs"

    @property
    def proxy_config(self) -> Path:
        return self.home / "kube-proxy-config.json"

    @property
    def proxy_kubeconfig(self) -> Path:
        return self.home / "kube-proxy.kubeconfig"


def plan(home: Path) -> NodePlan:
    return NodePlan(home, *(free_port() for _ in range(4)))


# ---- pure: what the files say ----------------------------------------------------------


def render_containerd_config(p: NodePlan) -> str:
    """containerd 1.6's config: its own root, state and socket; runc with cgroupfs."""
    cri = 'plugins."io.containerd.grpc.v1.cri"'
    lines = [
        "version = 2",
        f'root = "{p.containerd_root}"',
        f'state = "{p.containerd_state}"',
        # Snapshotters this machine has no use for: they only log errors at start.
        'disabled_plugins = ["io.containerd.snapshotter.v1.aufs", '
        '"io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", '
        '"io.containerd.snapshotter.v1.devmapper"]',
        "",
        "[grpc]",
        f'  address = "{p.containerd_socket}"',
        "",
        '[plugins."io.containerd.internal.v1.opt"]',
        f'  path = "{p.home / "containerd" / "opt"}"',
        "",
        f"[{cri}]",
        f'  sandbox_image = "{PAUSE_IMAGE}"',
        # CAP_SYS_RESOURCE is withheld here: no negative oom_score_adj for containers.
        "  restrict_oom_score_adj = true",
        "  enable_selinux = false",
        "",
        f"[{cri}.containerd]",
        '  snapshotter = "overlayfs"',
        '  default_runtime_name = "runc"',
        "",
        f"[{cri}.containerd.runtimes.runc]",
        '  runtime_type = "io.containerd.runc.v2"',
        "",
        f"[{cri}.containerd.runtimes.runc.options]",
        f'  BinaryName = "{RUNC}"',
        f'  Root = "{p.runc_root}"',
        "  SystemdCgroup = false",
        "",
        f"[{cri}.cni]",
        f'  bin_dir = "{CNI_BIN}"',
        f'  conf_dir = "{p.cni_conf_dir}"',
        "  max_conf_num = 1",
        "",
    ]
    return "\n".join(lines)


def render_cni_config(p: NodePlan) -> str:
    """bridge + host-local on ``clarion0``, no masquerade: pods talk to pods and the host."""
    network = ipaddress.ip_network(POD_CIDR)
    conf = {
        "cniVersion": "0.4.0",
        "name": "clarion-pods",
        "plugins": [
            {
                "type": "bridge",
                "bridge": BRIDGE,
                "isGateway": True,
                "ipMasq": False,
                "hairpinMode": True,
                "ipam": {
                    "type": "host-local",
                    "dataDir": str(p.ipam_dir),
                    "ranges": [
                        [
                            {
                                "subnet": str(network),
                                "rangeStart": str(network.network_address + 10),
                                "rangeEnd": str(network.broadcast_address - 1),
                                "gateway": GATEWAY,
                            }
                        ]
                    ],
                    "routes": [{"dst": "0.0.0.0/0"}],
                },
            },
            {"type": "portmap", "capabilities": {"portMappings": True}},
        ],
    }
    return json.dumps(conf, indent=2)


def render_kubelet_config(p: NodePlan, ca_cert: Path) -> str:
    """KubeletConfiguration for this machine: cgroupfs on cgroup v1, no negative OOM
    score, fewer open files than the hard limit, no swap check, no cluster DNS."""
    config: dict[str, Any] = {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        "address": GATEWAY,
        "port": p.kubelet_port,
        "readOnlyPort": 0,
        "healthzBindAddress": "127.0.0.1",
        "healthzPort": p.kubelet_healthz_port,
        "authentication": {
            "anonymous": {"enabled": False},
            "webhook": {"enabled": False},
            "x509": {"clientCAFile": str(ca_cert)},
        },
        "authorization": {"mode": "AlwaysAllow"},
        "containerRuntimeEndpoint": f"unix://{p.containerd_socket}",
        "imageServiceEndpoint": f"unix://{p.containerd_socket}",
        "cgroupDriver": "cgroupfs",
        # Kubernetes 1.35 refuses cgroup v1 unless told; 1.34 only warns. Say it.
        "failCgroupV1": False,
        "oomScoreAdj": 0,
        "maxOpenFiles": 16384,
        "failSwapOn": False,
        "clusterDomain": "cluster.local",
        # No cluster DNS and no host resolver inside pods: they use addresses only.
        "resolvConf": "",
        "podLogsDir": str(p.pod_logs),
        "volumePluginDir": str(p.home / "volume-plugins"),
        "registerWithTaints": [{"key": LABEL_KEY, "value": LABEL_VALUE, "effect": "NoSchedule"}],
        "serializeImagePulls": False,
        # This machine's disk is shared: never evict or collect images for disk space.
        "evictionHard": {
            "memory.available": "100Mi",
            "nodefs.available": "1%",
            "imagefs.available": "1%",
            "nodefs.inodesFree": "1%",
        },
        "imageGCHighThresholdPercent": 100,
        "imageGCLowThresholdPercent": 99,
        "maxPods": 32,
        "nodeStatusReportFrequency": "10s",
        "nodeStatusUpdateFrequency": "5s",
        "syncFrequency": "10s",
        "fileCheckFrequency": "5s",
        "shutdownGracePeriod": "0s",
    }
    return json.dumps(config, indent=2)


def render_kube_proxy_config(p: NodePlan) -> str:
    """kube-proxy in iptables mode; it leaves conntrack sysctls and loopback alone."""
    config = {
        "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
        "kind": "KubeProxyConfiguration",
        "clientConnection": {"kubeconfig": str(p.proxy_kubeconfig)},
        "mode": "iptables",
        "clusterCIDR": POD_CIDR,
        "hostnameOverride": NODE_NAME,
        "bindAddress": GATEWAY,
        "healthzBindAddress": f"127.0.0.1:{p.proxy_healthz_port}",
        "metricsBindAddress": f"127.0.0.1:{p.proxy_metrics_port}",
        "nodePortAddresses": [f"{GATEWAY}/32"],
        "iptables": {"localhostNodePorts": False, "masqueradeAll": False, "syncPeriod": "10s"},
        # 0: keep the kernel's conntrack table size and timeouts.
        "conntrack": {
            "maxPerCore": 0,
            "min": 0,
            "tcpEstablishedTimeout": "0s",
            "tcpCloseWaitTimeout": "0s",
        },
    }
    return json.dumps(config, indent=2)


def render_kubeconfig(api_url: str, ca: bytes, cert: bytes, key: bytes, user: str) -> str:
    import base64

    def b64(data: bytes) -> str:
        return base64.b64encode(data).decode()

    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "clarion-local",
                "cluster": {"server": api_url, "certificate-authority-data": b64(ca)},
            }
        ],
        "users": [
            {
                "name": user,
                "user": {"client-certificate-data": b64(cert), "client-key-data": b64(key)},
            }
        ],
        "contexts": [{"name": "default", "context": {"cluster": "clarion-local", "user": user}}],
        "current-context": "default",
    }
    return json.dumps(config, indent=2)


def namespace_annotations() -> dict[str, str]:
    """Annotations that put every pod of a namespace on the real node (and only there)."""
    toleration = [
        {"key": LABEL_KEY, "operator": "Equal", "value": LABEL_VALUE, "effect": "NoSchedule"}
    ]
    return {
        "scheduler.alpha.kubernetes.io/node-selector": f"{LABEL_KEY}={LABEL_VALUE}",
        "scheduler.alpha.kubernetes.io/defaultTolerations": json.dumps(toleration),
    }


def firewall_rules() -> list[list[str]]:
    """The chain's rules: pod to pod, and pod to the host, only."""
    return [
        ["-s", POD_CIDR, "-d", POD_CIDR, "-j", "ACCEPT"],
        ["-s", POD_CIDR, "-j", "DROP"],
    ]


def pause_image_layout(catatonit: bytes, created: str = "1970-01-01T00:00:00Z") -> dict[str, bytes]:
    """An OCI image layout (file name -> bytes) whose only file is a static catatonit,
    run in pause mode: the pod sandbox image, made without a registry."""
    layer_buf = io.BytesIO()
    with tarfile.open(fileobj=layer_buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo("catatonit")
        info.size = len(catatonit)
        info.mode = 0o755
        info.mtime = 0
        tar.addfile(info, io.BytesIO(catatonit))
    layer = layer_buf.getvalue()
    diff_id = "sha256:" + hashlib.sha256(layer).hexdigest()
    blob = gzip.compress(layer, mtime=0)
    config = json.dumps(
        {
            "architecture": "amd64",
            "os": "linux",
            "created": created,
            "config": {"Entrypoint": ["/catatonit", "-P"], "User": "65535:65535"},
            "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        },
        sort_keys=True,
    ).encode()

    def desc(media: str, data: bytes) -> dict[str, Any]:
        return {
            "mediaType": media,
            "digest": "sha256:" + hashlib.sha256(data).hexdigest(),
            "size": len(data),
        }

    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": desc("application/vnd.oci.image.config.v1+json", config),
            "layers": [desc("application/vnd.oci.image.layer.v1.tar+gzip", blob)],
        },
        sort_keys=True,
    ).encode()
    mdesc = desc("application/vnd.oci.image.manifest.v1+json", manifest)
    mdesc["annotations"] = {
        "io.containerd.image.name": PAUSE_IMAGE,
        "org.opencontainers.image.ref.name": PAUSE_IMAGE.rsplit(":", 1)[1],
    }
    index = json.dumps({"schemaVersion": 2, "manifests": [mdesc]}, sort_keys=True).encode()
    files = {"oci-layout": b'{"imageLayoutVersion":"1.0.0"}', "index.json": index}
    for data in (blob, config, manifest):
        files[f"blobs/sha256/{hashlib.sha256(data).hexdigest()}"] = data
    return files


def write_tar(files: Mapping[str, bytes], dest: Path) -> Path:
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(dest, "w") as tar:
        for name in sorted(files):
            info = tarfile.TarInfo(name)
            info.size = len(files[name])
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(files[name]))
    return dest


# ---- what the machine offers ------------------------------------------------------------


def preflight(home: Path | None = None) -> list[str]:
    """Why this machine cannot run the node in ``home`` (empty: it can)."""
    reasons = []
    if home is not None and len(str(home)) > MAX_HOME_LENGTH:
        reasons.append(
            f"the node folder {home} is longer than {MAX_HOME_LENGTH} characters: its unix "
            "sockets would not fit (use a shorter CLARION_STATE_DIR)"
        )
    if os.geteuid() != 0:
        reasons.append("not root (the kubelet, containerd and the bridge need root)")
    for path, package in (
        (CONTAINERD, "containerd"),
        (CTR, "containerd"),
        (RUNC, "runc"),
        (CATATONIT, "catatonit"),
        (CNI_BIN / "bridge", "containernetworking-plugins"),
        (CNI_BIN / "host-local", "containernetworking-plugins"),
        (CNI_BIN / "loopback", "containernetworking-plugins"),
    ):
        if not path.exists():
            reasons.append(f"{path} missing (Debian package {package}; make sysdeps)")
    if shutil.which(IPTABLES) is None:
        reasons.append("iptables missing (Debian package iptables; make sysdeps)")
    try:
        filesystems = Path("/proc/filesystems").read_text()
    except OSError:
        filesystems = ""
    if "overlay" not in filesystems:
        reasons.append("the kernel has no overlay filesystem (modprobe overlay)")
    if not Path("/proc/sys/net/bridge/bridge-nf-call-iptables").exists():
        reasons.append("the kernel has no bridge netfilter (modprobe br_netfilter)")
    if (
        not (_CGROUP_ROOT / "memory").is_dir()
        and not (_CGROUP_ROOT / "cgroup.controllers").exists()
    ):
        reasons.append("no cgroup memory controller")
    if _link_exists(BRIDGE):
        reasons.append(
            f"the bridge {BRIDGE} exists: another Clarion stack's real node is running "
            "(one node per machine)"
        )
    return reasons


def _link_exists(name: str) -> bool:
    return Path(f"/sys/class/net/{name}").exists()


# ---- host changes, recorded and undone ----------------------------------------------------


def _sysctl_path(key: str) -> Path:
    return Path("/proc/sys") / key


def read_sysctls(keys: Sequence[str] = SYSCTLS) -> dict[str, str]:
    values = {}
    for key in keys:
        try:
            values[key] = _sysctl_path(key).read_text().strip()
        except OSError:
            continue
    return values


def write_sysctl(key: str, value: str) -> None:
    _sysctl_path(key).write_text(value + "\n")


def _run(argv: Sequence[str], check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(list(argv), capture_output=True, text=True)
    if check and result.returncode != 0:
        raise StackError(f"{' '.join(argv)} failed: {result.stderr.strip()}")
    return result


def kube_chains() -> dict[str, list[str]]:
    """KUBE-* chains per table, as iptables lists them."""
    chains: dict[str, list[str]] = {}
    for table in _IPTABLES_TABLES:
        out = _run([IPTABLES, "-t", table, "-S"], check=False).stdout
        chains[table] = sorted(
            line.split()[1]
            for line in out.splitlines()
            if line.startswith(("-N KUBE-", "-N CLARION-"))
        )
    return chains


def new_record(p: NodePlan, crictl_bin: Path, kube_proxy_bin: Path) -> NodeRecord:
    """What ``down`` needs, with the machine's state as it is before anything changes."""
    return {
        "name": NODE_NAME,
        "home": str(p.home),
        "bridge": BRIDGE,
        "pod_cidr": POD_CIDR,
        "gateway": GATEWAY,
        "containerd_socket": str(p.containerd_socket),
        "ctr": str(CTR),
        "crictl": str(crictl_bin),
        "kube_proxy": str(kube_proxy_bin),
        "kubelet_port": p.kubelet_port,
        "sysctls": read_sysctls(),
        "kube_chains_before": kube_chains(),
        "host_dirs_created": [d for d in HOST_DIRS if not os.path.lexists(d)],
        "images": [],
    }


def prepare_host(p: NodePlan, record: NodeRecord) -> None:
    """Create the bridge (its address brings the pod network's route) and the firewall
    chain; switch on what bridged pod traffic through kube-proxy's rules needs."""
    originals = record["sysctls"]
    _run(["ip", "link", "add", BRIDGE, "type", "bridge"])
    prefix = ipaddress.ip_network(POD_CIDR).prefixlen
    _run(["ip", "addr", "add", f"{GATEWAY}/{prefix}", "dev", BRIDGE])
    _run(["ip", "link", "set", BRIDGE, "up"])
    for key, value in _SET_AT_UP.items():
        if key in originals:
            write_sysctl(key, value)
    _run([IPTABLES, "-N", FIREWALL_CHAIN])
    for rule in firewall_rules():
        _run([IPTABLES, "-A", FIREWALL_CHAIN, *rule])
    _run([IPTABLES, "-I", "FORWARD", "1", "-j", FIREWALL_CHAIN])


def write_files(p: NodePlan, pki: Pki, api_url: str) -> None:
    for d in (p.containerd_root, p.containerd_state, p.cni_conf_dir, p.ipam_dir, p.pod_logs):
        d.mkdir(parents=True, exist_ok=True)
    p.containerd_config.write_text(render_containerd_config(p))
    (p.cni_conf_dir / "10-clarion.conflist").write_text(render_cni_config(p))
    p.kubelet_config.write_text(render_kubelet_config(p, pki.ca_cert))
    p.proxy_config.write_text(render_kube_proxy_config(p))
    ca = pki.ca_cert.read_bytes()
    for path, common, org, user in (
        (p.kubelet_kubeconfig, f"system:node:{NODE_NAME}", "system:nodes", "kubelet"),
        (p.proxy_kubeconfig, "system:kube-proxy", None, "kube-proxy"),
    ):
        cert, key = _client_cert(pki, common, org)
        path.write_text(render_kubeconfig(api_url, ca, cert, key, user))
        path.chmod(0o600)


def _client_cert(pki: Pki, common: str, org: str | None) -> tuple[bytes, bytes]:
    ca_key = serialization.load_pem_private_key(pki.ca_key.read_bytes(), password=None)
    ca = x509.load_pem_x509_certificate(pki.ca_cert.read_bytes())
    if not isinstance(ca_key, ec.EllipticCurvePrivateKey):
        raise StackError("the stack's CA key is not an EC key")
    key = ec.generate_private_key(ec.SECP256R1())
    attrs = [x509.NameAttribute(NameOID.COMMON_NAME, common)]
    if org:
        attrs.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, org))
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name(attrs))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return cert.public_bytes(serialization.Encoding.PEM), key_pem


# ---- processes ----------------------------------------------------------------------------


def containerd(p: NodePlan, log: Path) -> Launch:
    return Launch("containerd", (str(CONTAINERD), "--config", str(p.containerd_config)), log)


def containerd_env() -> dict[str, str]:
    """containerd's environment: every registry pull goes to a closed local port."""
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}  # noqa: TID251
    env.update({"HTTP_PROXY": NO_REGISTRY_PROXY, "HTTPS_PROXY": NO_REGISTRY_PROXY, "NO_PROXY": ""})
    return env


def kubelet(binary: Path, p: NodePlan, log: Path) -> Launch:
    return Launch(
        "kubelet",
        (
            str(binary),
            f"--config={p.kubelet_config}",
            f"--kubeconfig={p.kubelet_kubeconfig}",
            f"--root-dir={p.kubelet_root}",
            f"--cert-dir={p.kubelet_root / 'pki'}",
            f"--hostname-override={NODE_NAME}",
            f"--node-ip={GATEWAY}",
            f"--node-labels={LABEL_KEY}={LABEL_VALUE}",
            "--v=1",
        ),
        log,
    )


def kube_proxy(binary: Path, p: NodePlan, log: Path) -> Launch:
    return Launch("kube-proxy", (str(binary), f"--config={p.proxy_config}", "--v=1"), log)


def ctr(p: NodePlan, *args: str) -> str:
    return _run([str(CTR), "--address", str(p.containerd_socket), "-n", "k8s.io", *args]).stdout


def containerd_ready(p: NodePlan) -> bool:
    if not p.containerd_socket.exists():
        return False
    result = subprocess.run(
        [str(CTR), "--address", str(p.containerd_socket), "version"],
        capture_output=True,
        text=True,
    )
    return result.returncode == 0


def import_image(p: NodePlan, archive: Path) -> None:
    ctr(p, "images", "import", str(archive))


def ensure_pause_archive(cache_dir: Path) -> Path:
    """The pause image as an OCI archive in the cache, keyed by catatonit's contents."""
    binary = CATATONIT.read_bytes()
    digest = hashlib.sha256(binary).hexdigest()[:16]
    dest = cache_dir / "node-images" / f"pause-catatonit-{digest}.tar"
    if not dest.exists():
        partial = dest.with_suffix(".partial")
        write_tar(pause_image_layout(binary), partial)
        partial.rename(dest)
    return dest


def healthz(port: int, path: str = "/healthz") -> bool:
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as resp:
            return int(resp.status) == 200
    except (urllib.error.URLError, OSError):
        return False


# ---- teardown -------------------------------------------------------------------------------


def crictl(record: NodeRecord, *args: str, check: bool = False) -> str:
    sock = f"unix://{record['containerd_socket']}"
    result = _run(
        [
            record["crictl"],
            "--runtime-endpoint",
            sock,
            "--image-endpoint",
            sock,
            "--timeout",
            "30s",
            *args,
        ],
        check=check,
    )
    return result.stdout


def remove_pods(record: NodeRecord) -> None:
    """Stop and remove every pod sandbox through the CRI: containers die, the CNI plugins
    release their addresses and veths, containerd removes their network namespaces."""
    pods = crictl(record, "pods", "-q").split()
    for pod in pods:
        crictl(record, "stopp", pod)
    for pod in pods:
        crictl(record, "rmp", "-f", pod)


def mounts_under(root: Path) -> list[str]:
    """Mount points at or under ``root``, deepest first."""
    found = []
    prefix = str(root).rstrip("/") + "/"
    try:
        lines = Path("/proc/self/mountinfo").read_text().splitlines()
    except OSError:
        return []
    for line in lines:
        point = line.split()[4].replace("\\040", " ")
        if point == str(root) or point.startswith(prefix):
            found.append(point)
    return sorted(set(found), key=lambda m: (-m.count("/"), m))


def unmount_all(root: Path) -> None:
    for _ in range(3):
        points = mounts_under(root)
        if not points:
            return
        for point in points:
            _run(["umount", point], check=False)
    for point in mounts_under(root):
        _run(["umount", "-l", point], check=False)


def remove_cgroups() -> None:
    """The kubelet's ``kubepods`` hierarchy in every controller (empty once pods are gone)."""
    if not _CGROUP_ROOT.is_dir():
        return
    for controller in _CGROUP_ROOT.iterdir():
        top = controller / "kubepods"
        if not top.is_dir():
            continue
        for path in sorted((d for d in top.rglob("*") if d.is_dir()), key=lambda d: -len(d.parts)):
            _rmdir(path)
        _rmdir(top)


def _rmdir(path: Path) -> None:
    for _ in range(50):
        try:
            path.rmdir()
            return
        except FileNotFoundError:
            return
        except OSError:
            time.sleep(0.1)


def remove_firewall(chains_before: Mapping[str, Sequence[str]]) -> None:
    while _run([IPTABLES, "-D", "FORWARD", "-j", FIREWALL_CHAIN], check=False).returncode == 0:
        pass
    _run([IPTABLES, "-F", FIREWALL_CHAIN], check=False)
    _run([IPTABLES, "-X", FIREWALL_CHAIN], check=False)
    # What kube-proxy --cleanup leaves (the kubelet's canary and hint chains): every
    # KUBE-* chain that was not there before the node came up.
    for _ in range(3):
        now = kube_chains()
        extra = {t: [c for c in now[t] if c not in chains_before.get(t, [])] for t in now}
        if not any(extra.values()):
            return
        for table, names in extra.items():
            rules = _run([IPTABLES, "-t", table, "-S"], check=False).stdout.splitlines()
            for rule in rules:
                parts = rule.split()
                if parts[:1] == ["-A"] and any(f"-j {c}" in rule + " " for c in names):
                    _run([IPTABLES, "-t", table, "-D", *parts[1:]], check=False)
            for name in names:
                _run([IPTABLES, "-t", table, "-F", name], check=False)
            for name in names:
                _run([IPTABLES, "-t", table, "-X", name], check=False)


def remove_bridge() -> None:
    if _link_exists(BRIDGE):
        _run(["ip", "link", "delete", BRIDGE], check=False)
    # Veths left by a pod whose CNI DEL never ran (a crash) are named veth* and hang off
    # the bridge; deleting the bridge detaches them, the namespaces' removal deletes them.


def restore_sysctls(originals: Mapping[str, str]) -> list[str]:
    """Write back every recorded value that differs now; return the keys restored.

    ``ip_forward`` first: writing it resets every interface's ``forwarding``."""
    restored = []
    keys = sorted(originals, key=lambda k: k != "net/ipv4/ip_forward")
    for key in keys:
        try:
            now = _sysctl_path(key).read_text().strip()
        except OSError:
            continue
        if now != originals[key]:
            try:
                write_sysctl(key, originals[key])
                restored.append(key)
            except OSError:
                continue
    return restored


def remove_host_dirs(created: Sequence[str]) -> None:
    """Remove the host folders the node created, with what is mounted in them: the CNI
    plugins bind-mount ``/run/netns`` onto itself (shared) before they put a pod's network
    namespace there, and that mount outlives the pods."""
    for d in created:
        path = Path(d)
        if path.is_symlink() or not path.is_dir():
            continue
        unmount_all(path)
        if not mounts_under(path):
            shutil.rmtree(path, ignore_errors=True)


# ---- up and down, driven by the stack ------------------------------------------------------


def node_ready(kubectl_bin: Path, kubeconfig: Path) -> bool:
    result = subprocess.run(
        [
            str(kubectl_bin),
            f"--kubeconfig={kubeconfig}",
            "get",
            "node",
            NODE_NAME,
            "-o",
            "jsonpath={.status.conditions[?(@.type=='Ready')].status}",
        ],
        capture_output=True,
        text=True,
    )
    return result.returncode == 0 and result.stdout.strip() == "True"


@dataclass(frozen=True)
class NodeTools:
    kubelet: Path
    kube_proxy: Path
    crictl: Path
    kubectl: Path


def start(
    p: NodePlan,
    record: NodeRecord,
    *,
    tools: NodeTools,
    pki: Pki,
    api_url: str,
    kubeconfig: Path,
    logs: Path,
    archives: Sequence[Path],
    records: dict[str, ComponentRecord],
) -> None:
    """Start containerd, import the images, start the kubelet and kube-proxy; wait for the
    node to be Ready. ``records`` receives each process as soon as it runs."""
    write_files(p, pki, api_url)
    launch = containerd(p, logs / "containerd.log")
    proc = spawn(launch.argv, launch.log, env=containerd_env())
    records["containerd"] = launch.record(proc.pid)
    wait_until(
        lambda: containerd_ready(p), what="containerd", timeout=60, pid=proc.pid, log=launch.log
    )
    for archive in archives:
        before = set(ctr(p, "images", "ls", "-q").split())
        import_image(p, archive)
        record["images"] += sorted(set(ctr(p, "images", "ls", "-q").split()) - before)
    for launch in (
        kubelet(tools.kubelet, p, logs / "kubelet.log"),
        kube_proxy(tools.kube_proxy, p, logs / "kube-proxy.log"),
    ):
        proc = spawn(launch.argv, launch.log)
        records[launch.name] = launch.record(proc.pid)
    wait_until(
        lambda: node_ready(tools.kubectl, kubeconfig),
        what=f"the real node {NODE_NAME} Ready",
        timeout=180,
        pid=records["kubelet"]["pid"],
        log=logs / "kubelet.log",
    )
    wait_until(
        lambda: healthz(p.proxy_healthz_port),
        what="kube-proxy",
        timeout=60,
        pid=records["kube-proxy"]["pid"],
        log=logs / "kube-proxy.log",
    )


def stop(
    record: NodeRecord, records: Mapping[str, ComponentRecord], say: Callable[[str], None]
) -> None:
    """Take the node down and put back everything it changed on the machine."""
    if "kubelet" in records and alive(records["kubelet"]["pid"]):
        say(f"stopping kubelet (pid {records['kubelet']['pid']})")
        stop_pid(records["kubelet"]["pid"])
    if "containerd" in records and alive(records["containerd"]["pid"]):
        say("stopping and removing the real node's pods (crictl stopp / rmp)")
        remove_pods(record)
    if "kube-proxy" in records and alive(records["kube-proxy"]["pid"]):
        say(f"stopping kube-proxy (pid {records['kube-proxy']['pid']})")
        stop_pid(records["kube-proxy"]["pid"])
    _run([record["kube_proxy"], "--cleanup", "--v=0"], check=False)
    if "containerd" in records and alive(records["containerd"]["pid"]):
        say(f"stopping containerd (pid {records['containerd']['pid']})")
        stop_pid(records["containerd"]["pid"])
    home = Path(record["home"])
    # Shims outlive containerd (they are reparented); their command line names its socket.
    for pid in pids_naming(record["containerd_socket"]):
        say(f"stopping containerd shim {pid}")
        stop_pid(pid)
    unmount_all(home)
    remove_cgroups()
    remove_firewall(record["kube_chains_before"])
    remove_bridge()
    restored = restore_sysctls(record["sysctls"])
    if restored:
        say(f"restored sysctls: {', '.join(k.replace('/', '.') for k in restored)}")
    remove_host_dirs(record["host_dirs_created"])


def pids_naming(text: str) -> list[int]:
    marker = text.encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if marker in (entry / "cmdline").read_bytes():
                found.append(int(entry.name))
        except OSError:
            continue
    return found


def host_snapshot() -> dict[str, Any]:
    """What the node may change on the machine, as comparable values: sysctls, links,
    routes, policy rules, its iptables chains and rules, mounts, cgroups, host folders."""

    def lines(argv: Sequence[str]) -> list[str]:
        return sorted(_run(argv, check=False).stdout.splitlines())

    rules = []
    for table in _IPTABLES_TABLES:
        for line in _run([IPTABLES, "-t", table, "-S"], check=False).stdout.splitlines():
            if any(m in line for m in ("KUBE-", "CLARION-", POD_CIDR, BRIDGE)):
                rules.append(f"{table}: {line}")
    mounts = sorted(
        point
        for point in (line.split()[4] for line in _mountinfo())
        if any(m in point for m in ("/run/netns", "kubelet", "containerd", "/var/lib/cni"))
    )
    return {
        "sysctls": read_sysctls(),
        "links": sorted(n for n in os.listdir("/sys/class/net") if n.startswith(("veth", BRIDGE))),
        "routes": lines(["ip", "route", "show", "table", "all"]),
        "policy_rules": lines(["ip", "rule"]),
        "iptables": sorted(rules),
        "mounts": mounts,
        "kubepods_cgroups": sorted(str(c) for c in _CGROUP_ROOT.glob("*/kubepods") if c.is_dir()),
        "host_dirs": sorted(d for d in HOST_DIRS if os.path.lexists(d)),
    }


def _mountinfo() -> list[str]:
    try:
        return Path("/proc/self/mountinfo").read_text().splitlines()
    except OSError:
        return []
