"""The real node's files, decided by pure functions: what containerd, the CNI plugins, the
kubelet and kube-proxy are told, the pause image, and how pods are pinned to the node."""

from __future__ import annotations

import gzip
import hashlib
import io
import ipaddress
import json
import tarfile
import tomllib
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import pytest

from clarion_devstack import install, kafka, kafka_cluster, node
from clarion_devstack.settings import DevstackSettings

PLAN = node.NodePlan(
    Path("/state/data/node"),
    kubelet_port=21001,
    kubelet_healthz_port=21002,
    proxy_healthz_port=21003,
    proxy_metrics_port=21004,
)


def test_containerd_keeps_everything_under_the_node_folder_and_restricts_oom_scores() -> None:
    config = tomllib.loads(node.render_containerd_config(PLAN))
    assert config["root"].startswith("/state/data/node/")
    assert config["state"].startswith("/state/data/node/")
    assert config["grpc"]["address"] == "/state/data/node/containerd/containerd.sock"
    cri = config["plugins"]["io.containerd.grpc.v1.cri"]
    # Without CAP_SYS_RESOURCE, a negative oom_score_adj fails every container start.
    assert cri["restrict_oom_score_adj"] is True
    assert cri["sandbox_image"] == node.PAUSE_IMAGE
    runc = cri["containerd"]["runtimes"]["runc"]
    assert runc["options"]["SystemdCgroup"] is False
    assert runc["options"]["Root"].startswith("/state/data/node/")
    assert cri["cni"]["conf_dir"].startswith("/state/data/node/")


def test_cni_bridge_uses_only_the_pod_network_without_masquerade() -> None:
    conf = json.loads(node.render_cni_config(PLAN))
    bridge = conf["plugins"][0]
    assert (bridge["type"], bridge["bridge"], bridge["ipMasq"]) == ("bridge", node.BRIDGE, False)
    (range_,) = bridge["ipam"]["ranges"][0:1]
    subnet = ipaddress.ip_network(range_[0]["subnet"])
    assert subnet == ipaddress.ip_network(node.POD_CIDR)
    assert ipaddress.ip_address(range_[0]["gateway"]) in subnet
    assert ipaddress.ip_address(range_[0]["rangeStart"]) in subnet
    assert bridge["ipam"]["dataDir"].startswith("/state/data/node/")


def test_kubelet_fits_this_machine() -> None:
    config = json.loads(node.render_kubelet_config(PLAN, Path("/pki/ca.crt")))
    assert config["cgroupDriver"] == "cgroupfs"
    assert config["oomScoreAdj"] == 0
    assert config["maxOpenFiles"] < 20000  # the hard limit here
    assert config["failSwapOn"] is False
    assert config["failCgroupV1"] is False
    assert config["containerRuntimeEndpoint"] == f"unix://{PLAN.containerd_socket}"
    assert config["authentication"]["anonymous"]["enabled"] is False
    assert config["resolvConf"] == ""  # pods get no resolver that points off the machine
    assert config["readOnlyPort"] == 0
    assert {"key": "clarion.dev/node", "value": "real", "effect": "NoSchedule"} in config[
        "registerWithTaints"
    ]
    for key in ("podLogsDir", "volumePluginDir"):
        assert config[key].startswith("/state/data/node/")


def test_kube_proxy_leaves_conntrack_and_loopback_alone() -> None:
    config = json.loads(node.render_kube_proxy_config(PLAN))
    assert config["mode"] == "iptables"
    assert config["clusterCIDR"] == node.POD_CIDR
    assert config["conntrack"]["maxPerCore"] == 0
    assert config["iptables"]["localhostNodePorts"] is False
    assert config["nodePortAddresses"] == [f"{node.GATEWAY}/32"]
    assert config["healthzBindAddress"].startswith("127.0.0.1:")


def test_namespace_annotations_select_and_tolerate_the_real_node() -> None:
    annotations = node.namespace_annotations()
    assert annotations["scheduler.alpha.kubernetes.io/node-selector"] == "clarion.dev/node=real"
    (toleration,) = json.loads(annotations["scheduler.alpha.kubernetes.io/defaultTolerations"])
    assert toleration == {
        "key": "clarion.dev/node",
        "operator": "Equal",
        "value": "real",
        "effect": "NoSchedule",
    }


def test_firewall_accepts_pod_to_pod_before_dropping_everything_else_from_pods() -> None:
    rules = node.firewall_rules()
    assert rules[0] == ["-s", node.POD_CIDR, "-d", node.POD_CIDR, "-j", "ACCEPT"]
    assert rules[-1] == ["-s", node.POD_CIDR, "-j", "DROP"]


def test_pause_image_is_a_consistent_oci_layout_running_catatonit_in_pause_mode() -> None:
    files = node.pause_image_layout(b"\x7fELF fake catatonit")
    index = json.loads(files["index.json"])
    (desc,) = index["manifests"]
    assert desc["annotations"]["io.containerd.image.name"] == node.PAUSE_IMAGE

    def blob(d: dict[str, object]) -> bytes:
        digest = str(d["digest"]).split(":", 1)[1]
        data = files[f"blobs/sha256/{digest}"]
        assert hashlib.sha256(data).hexdigest() == digest
        assert len(data) == d["size"]
        return data

    manifest = json.loads(blob(desc))
    config = json.loads(blob(manifest["config"]))
    assert config["config"]["Entrypoint"] == ["/catatonit", "-P"]
    (layer_desc,) = manifest["layers"]
    layer = gzip.decompress(blob(layer_desc))
    assert config["rootfs"]["diff_ids"] == ["sha256:" + hashlib.sha256(layer).hexdigest()]
    with tarfile.open(fileobj=io.BytesIO(layer)) as tar:
        member = tar.getmember("catatonit")
        assert member.mode == 0o755
        extracted = tar.extractfile(member)
        assert extracted is not None
        assert extracted.read() == b"\x7fELF fake catatonit"
    # Deterministic: the same binary gives the same image (cache keys, no re-import).
    assert node.pause_image_layout(b"\x7fELF fake catatonit") == files


def test_kafka_gets_a_listener_for_pods_on_the_bridge_only_when_asked() -> None:
    plain = kafka._properties(kafka.KafkaNode(9092, 9093, Path("/k")))
    assert "PODS" not in plain
    with_pods = kafka._properties(
        kafka.KafkaNode(9092, 9093, Path("/k"), pods_address=node.GATEWAY, pods_port=9094)
    )
    props = dict(line.split("=", 1) for line in with_pods.splitlines())
    assert props["advertised.listeners"] == (
        f"PLAINTEXT://127.0.0.1:9092,PODS://{node.GATEWAY}:9094"
    )
    assert "CONTROLLER://127.0.0.1:9093" in props["listeners"]
    assert "PODS:PLAINTEXT" in props["listener.security.protocol.map"]


def test_real_node_can_be_switched_off() -> None:
    env = {"HOME": "/h", "PATH": ""}
    assert DevstackSettings.from_environ(env).real_node is True
    assert DevstackSettings.from_environ({**env, "CLARION_REAL_NODE": "0"}).real_node is False


def test_kubelet_kube_proxy_and_crictl_are_built_with_the_stack() -> None:
    assert "k8s.io/kubernetes/cmd/kubelet" in install.KUBE.packages
    assert "k8s.io/kubernetes/cmd/kube-proxy" in install.KUBE.packages
    assert install.CRI_TOOLS in install.GO_BUILDS
    assert "crictl" in install.CRI_TOOLS.binaries


def test_a_node_folder_too_deep_for_its_sockets_is_refused_with_the_reason() -> None:
    deep = Path("/tmp/" + "x" * 60) / "data" / "node"
    assert any("CLARION_STATE_DIR" in r for r in node.preflight(deep))
    ok = Path("/work/main/.clarion/data/node")
    assert not any("CLARION_STATE_DIR" in r for r in node.preflight(ok))
    longest = ok.parent / ("n" * (node.MAX_HOME_LENGTH - len(str(ok.parent)) - 1))
    plan = node.NodePlan(longest, 1, 2, 3, 4)
    for sock in (
        str(plan.containerd_socket) + ".ttrpc",
        str(plan.kubelet_root / "device-plugins" / "kubelet.sock"),
        str(plan.kubelet_root / "pod-resources" / "1234567890"),
    ):
        assert len(sock) < 104, sock


def test_the_single_broker_and_a_cluster_node_lay_out_their_home_alike() -> None:
    single = kafka.KafkaNode(9092, 9093, Path("/k"))
    member = kafka_cluster.ClusterNode(1, 9092, 9094, 9093, Path("/k"))
    assert (member.config, member.log4j) == (single.config, single.log4j)
    assert single.config == Path("/k/server.properties")
    assert single.log4j == Path("/k/log4j2.properties")
    argv = kafka_cluster._argv("java", Path("/libs"), member)
    assert argv[-1] == str(member.config)
    assert f"-Dlog4j2.configurationFile={member.log4j}" in argv


def test_a_cluster_starts_every_node_before_it_waits_for_any(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A quorum needs two voters up before any is ready; each waits on its own log, pid
    and the part of its log written after this start."""
    events: list[tuple[object, ...]] = []

    def spawn(argv: tuple[str, ...], log: Path) -> SimpleNamespace:
        events.append(("spawn", log))
        return SimpleNamespace(pid=100 + len(events))

    def wait_until(
        check: Callable[[], bool], *, what: str, timeout: float, pid: int, log: Path
    ) -> None:
        assert check()
        events.append(("wait", what, pid, log))

    def ready(port: int, log: Path, offset: int) -> bool:
        events.append(("ready", port, offset))
        return True

    monkeypatch.setattr(kafka_cluster, "spawn", spawn)
    monkeypatch.setattr(kafka_cluster, "wait_until", wait_until)
    monkeypatch.setattr(kafka, "ready", ready)
    nodes = {i: kafka_cluster.ClusterNode(i, 9090 + i, 0, 0, tmp_path / f"n{i}") for i in (1, 2)}
    nodes[2].home.mkdir()
    nodes[2].log.write_text("an earlier run\n")
    cluster = kafka_cluster.KafkaCluster("java", Path("/libs"), nodes, tmp_path, tmp_path, {})
    cluster.start_all()
    assert events == [
        ("spawn", nodes[1].log),
        ("spawn", nodes[2].log),
        ("ready", 9091, 0),
        ("wait", "Kafka node 1", 101, nodes[1].log),
        ("ready", 9092, len("an earlier run\n")),
        ("wait", "Kafka node 2", 102, nodes[2].log),
    ]
    assert cluster.pids == {1: 101, 2: 102}


def test_kafka_cluster_ids_never_look_like_an_option() -> None:
    # The storage tool failed with its usage on an id starting with "-" (1 in 64 ups).
    ids = [kafka._cluster_id() for _ in range(3000)]
    assert not [i for i in ids if i.startswith("-")]
    assert all(len(i) == 22 for i in ids)
