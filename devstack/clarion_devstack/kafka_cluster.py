"""Kafka as production runs it: three KRaft nodes, replication, TLS and SCRAM.

Each node is one JVM in combined mode (broker and controller), the three controllers
form the quorum. Every node has three listeners on 127.0.0.1:

* ``PLAINTEXT``: clients without credentials, and replication between the brokers;
* ``SASL_SSL``: TLS with a serving certificate from a CA made here (the same kind of
  CA as the control plane's, from :mod:`.pki`), and SCRAM-SHA-512 users written into
  the storage at format time (as Strimzi's ``KafkaUser`` would create them);
* ``CONTROLLER``: the quorum's own.

Internal topics are replicated three times with ``min.insync.replicas=2``, and new
topics default to the same, so that one broker may be lost without losing writes
(producers with ``acks=all``). Failure detection keeps Kafka's defaults
(``broker.session.timeout.ms`` 9 s), so a measured pause is what a default cluster
shows. Records up to 8 MiB are accepted (``message.max.bytes``, Confluent Cloud's
default; Kafka's own is 1 MiB), so that a topic's ``max.message.bytes`` set by the
operator is what refuses a bigger one. Jars and cache are the single broker's
(:func:`.install.ensure_kafka`).
"""

from __future__ import annotations

import ipaddress
import os
import secrets
import signal
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ExtendedKeyUsageOID

from . import kafka, pki
from .procs import StackError, free_port, spawn, stop, wait_until

#: Three JVMs share two cores with everything else: small heaps, one GC thread.
_HEAP = ("-Xms128m", "-Xmx384m", "-XX:+UseSerialGC")
SCRAM = "SCRAM-SHA-512"
SIZE = 3


@dataclass(frozen=True)
class ScramUser:
    name: str
    password: str


@dataclass(frozen=True)
class ClusterNode(kafka.KafkaHome):
    node_id: int
    port: int
    secure_port: int
    controller_port: int
    home: Path

    @property
    def log(self) -> Path:
        return self.home / "kafka.log"


@dataclass
class KafkaCluster:
    """A running three-node cluster; nodes are stopped, killed and started by id."""

    java: str
    libs: Path
    nodes: dict[int, ClusterNode]
    directory: Path
    #: PEM of the CA that signed every broker's serving certificate.
    ca_file: Path
    #: SCRAM-SHA-512 users known to every broker.
    users: dict[str, ScramUser]
    pids: dict[int, int] = field(default_factory=dict)

    @property
    def bootstrap(self) -> str:
        return ",".join(f"127.0.0.1:{n.port}" for n in self.nodes.values())

    @property
    def secure_bootstrap(self) -> str:
        """SASL_SSL bootstrap; ``localhost`` so that hostname verification has a name."""
        return ",".join(f"localhost:{n.secure_port}" for n in self.nodes.values())

    def start(self, node_id: int, timeout: float = 180.0) -> None:
        """Start one node and wait until it reports it started."""
        self._wait_started(node_id, self._spawn(node_id), timeout)

    def start_all(self, timeout: float = 300.0) -> None:
        """Start every node at once (a quorum needs two voters up before any is ready)."""
        offsets = {node_id: self._spawn(node_id) for node_id in self.nodes}
        for node_id, offset in offsets.items():
            self._wait_started(node_id, offset, timeout)

    def _spawn(self, node_id: int) -> int:
        """Start the node's JVM; return the size its log had, where "started" is looked for."""
        node = self.nodes[node_id]
        offset = node.log.stat().st_size if node.log.exists() else 0
        self.pids[node_id] = spawn(_argv(self.java, self.libs, node), node.log).pid
        return offset

    def _wait_started(self, node_id: int, offset: int, timeout: float) -> None:
        node = self.nodes[node_id]
        wait_until(
            lambda: kafka.ready(node.port, node.log, offset),
            what=f"Kafka node {node_id}",
            timeout=timeout,
            pid=self.pids[node_id],
            log=node.log,
        )

    def kill(self, node_id: int) -> None:
        """SIGKILL one node, as a lost machine would go: no controlled shutdown."""
        pid = self.pids.pop(node_id)
        os.killpg(pid, signal.SIGKILL)
        stop(pid, grace=0)

    def stop(self, node_id: int) -> None:
        """SIGTERM one node (a controlled shutdown that hands its leaders over)."""
        stop(self.pids.pop(node_id), grace=60.0)

    def close(self) -> None:
        """Stop every node at once: the cluster goes with its folder, so there is nothing
        to hand over. (One after another, the last of them, its quorum gone, sat out its
        whole 10 s grace: 16 s at the end of every run that used the cluster.)"""
        for node_id in list(self.pids):
            self.kill(node_id)


def _argv(java: str, libs: Path, node: ClusterNode) -> tuple[str, ...]:
    return kafka.broker_argv(java, libs, node.config, node.log4j, _HEAP)


def _properties(node: ClusterNode, voters: str, tls: Path) -> str:
    listeners = {
        "PLAINTEXT": f"127.0.0.1:{node.port}",
        "SASL_SSL": f"localhost:{node.secure_port}",
    }
    props = {
        "process.roles": "broker,controller",
        "node.id": str(node.node_id),
        "controller.quorum.voters": voters,
        "listeners": ",".join(
            [f"{k}://{v}" for k, v in listeners.items()]
            + [f"CONTROLLER://127.0.0.1:{node.controller_port}"]
        ),
        "advertised.listeners": ",".join(f"{k}://{v}" for k, v in listeners.items()),
        "controller.listener.names": "CONTROLLER",
        "listener.security.protocol.map": (
            "PLAINTEXT:PLAINTEXT,SASL_SSL:SASL_SSL,CONTROLLER:PLAINTEXT"
        ),
        "inter.broker.listener.name": "PLAINTEXT",
        "log.dirs": str(node.home / "data"),
        "offsets.topic.replication.factor": "3",
        "transaction.state.log.replication.factor": "3",
        "transaction.state.log.min.isr": "2",
        "share.coordinator.state.topic.replication.factor": "3",
        "share.coordinator.state.topic.min.isr": "2",
        "default.replication.factor": "3",
        "min.insync.replicas": "2",
        "message.max.bytes": str(8 * 1024 * 1024),
        "group.initial.rebalance.delay.ms": "0",
        "auto.create.topics.enable": "false",
        "num.network.threads": "2",
        "num.io.threads": "2",
        # TLS from PEM files; the serving certificate names localhost and 127.0.0.1.
        "ssl.keystore.type": "PEM",
        "ssl.keystore.location": str(tls / "server.pem"),
        "ssl.truststore.type": "PEM",
        "ssl.truststore.location": str(tls / "ca.crt"),
        "sasl.enabled.mechanisms": SCRAM,
        "listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config": (
            "org.apache.kafka.common.security.scram.ScramLoginModule required;"
        ),
    }
    return "".join(f"{key}={value}\n" for key, value in props.items())


def _tls(directory: Path) -> Path:
    """A CA and one serving certificate (localhost, 127.0.0.1) shared by the brokers."""
    directory.mkdir(parents=True, exist_ok=True)
    ca_key = pki._key()
    ca_name = pki._name("clarion-kafka-ca")
    ca = pki._cert(ca_name, ca_key, ca_name, ca_key, ca=True)
    key = pki._key()
    serving = pki._cert(
        pki._name("kafka"),
        key,
        ca_name,
        ca_key,
        usage=[ExtendedKeyUsageOID.SERVER_AUTH],
        sans=[
            x509.DNSName("localhost"),
            x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
        ],
    )
    pem = serialization.Encoding.PEM
    (directory / "ca.crt").write_bytes(ca.public_bytes(pem))
    server = directory / "server.pem"
    server.write_bytes(pki._key_pem(key) + serving.public_bytes(pem))
    server.chmod(0o600)
    return directory


def prepare(java: str, libs: Path, directory: Path) -> KafkaCluster:
    """Write configs, TLS material and SCRAM users, and format three fresh storages."""
    tls = _tls(directory / "tls")
    nodes = {
        i: ClusterNode(i, free_port(), free_port(), free_port(), directory / f"node-{i}")
        for i in range(1, SIZE + 1)
    }
    voters = ",".join(f"{n.node_id}@127.0.0.1:{n.controller_port}" for n in nodes.values())
    users = {
        name: ScramUser(name, secrets.token_urlsafe(18)) for name in ("clarion-worker", "admin")
    }
    cluster_id = kafka._cluster_id()
    scram = [
        arg
        for user in users.values()
        for arg in ("-S", f"{SCRAM}=[name={user.name},password={user.password}]")
    ]
    formats = {}
    for node in nodes.values():
        node.home.mkdir(parents=True, exist_ok=True)
        node.config.write_text(_properties(node, voters, tls))
        node.log4j.write_text(kafka._LOG4J2)
        # Three formats at once: each is a JVM start, the slow part on two cores.
        formats[node.node_id] = subprocess.Popen(
            [*kafka.storage_format_argv(java, libs, cluster_id, node.config, _HEAP), *scram],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
    failed = []
    for node_id, proc in formats.items():
        output, _ = proc.communicate()
        if proc.returncode != 0:
            failed.append(f"node {node_id}: {output}")
    if failed:
        # The tool's output names the config, never the SCRAM passwords.
        raise StackError("formatting Kafka storage failed:\n" + "\n".join(failed))
    return KafkaCluster(java, libs, nodes, directory, tls / "ca.crt", users)
