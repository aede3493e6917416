"""A single-node Apache Kafka in KRaft combined mode (broker and controller in one JVM)."""

from __future__ import annotations

import base64
import re
import subprocess
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from .components import Launch
from .procs import StackError, free_port, port_open, tail

_HEAP = ("-Xms256m", "-Xmx512m")
_STARTED = "Kafka Server started"
_VERSION = re.compile(r"Kafka version: (\S+)")

_LOG4J2 = """\
rootLogger.level = INFO
rootLogger.appenderRef.stdout.ref = STDOUT
appender.stdout.type = Console
appender.stdout.name = STDOUT
appender.stdout.layout.type = PatternLayout
appender.stdout.layout.pattern = [%d] %p %m (%c)%n
logger.apache.name = org.apache.kafka
logger.apache.level = WARN
logger.appinfo.name = org.apache.kafka.common.utils.AppInfoParser
logger.appinfo.level = INFO
"""


class KafkaHome:
    """Where a Kafka node keeps its files, under ``home`` (the class mixing it in has it):
    the single broker's and each node of :mod:`.kafka_cluster` alike."""

    home: Path

    @property
    def config(self) -> Path:
        return self.home / "server.properties"

    @property
    def log4j(self) -> Path:
        return self.home / "log4j2.properties"


@dataclass(frozen=True)
class KafkaNode(KafkaHome):
    port: int
    controller_port: int
    home: Path
    #: The real node's bridge address: a second listener there serves its pods.
    pods_address: str | None = None
    pods_port: int | None = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def pods_bootstrap(self) -> str | None:
        if self.pods_address is None or self.pods_port is None:
            return None
        return f"{self.pods_address}:{self.pods_port}"


def _properties(node: KafkaNode) -> str:
    listeners = [f"PLAINTEXT://127.0.0.1:{node.port}"]
    protocols = ["PLAINTEXT:PLAINTEXT", "CONTROLLER:PLAINTEXT"]
    if node.pods_bootstrap is not None:
        # Pods of the real node reach the host on its bridge address, and must be told
        # that address (not 127.0.0.1, which is their own loopback) in metadata.
        listeners.append(f"PODS://{node.pods_bootstrap}")
        protocols.append("PODS:PLAINTEXT")
    props = {
        "process.roles": "broker,controller",
        "node.id": "1",
        "controller.quorum.voters": f"1@127.0.0.1:{node.controller_port}",
        "listeners": ",".join([*listeners, f"CONTROLLER://127.0.0.1:{node.controller_port}"]),
        "advertised.listeners": ",".join(listeners),
        "controller.listener.names": "CONTROLLER",
        "listener.security.protocol.map": ",".join(protocols),
        "inter.broker.listener.name": "PLAINTEXT",
        "log.dirs": str(node.home / "data"),
        # One node: every internal topic has a single replica.
        "offsets.topic.replication.factor": "1",
        "transaction.state.log.replication.factor": "1",
        "transaction.state.log.min.isr": "1",
        "share.coordinator.state.topic.replication.factor": "1",
        "share.coordinator.state.topic.min.isr": "1",
        "group.initial.rebalance.delay.ms": "0",
        # Topics are the operator's to create, as in a managed cluster.
        "auto.create.topics.enable": "false",
        # Let retention tests see deletions within seconds.
        "log.retention.check.interval.ms": "2000",
    }
    return "".join(f"{key}={value}\n" for key, value in props.items())


def prepare(java: str, libs: Path, home: Path, pods_address: str | None = None) -> KafkaNode:
    """Write a fresh config and format fresh storage under ``home``; with
    ``pods_address``, a second listener there for the real node's pods."""
    node = KafkaNode(
        port=free_port(),
        controller_port=free_port(),
        home=home,
        pods_address=pods_address,
        pods_port=free_port() if pods_address else None,
    )
    home.mkdir(parents=True, exist_ok=True)
    node.config.write_text(_properties(node))
    node.log4j.write_text(_LOG4J2)
    cluster_id = _cluster_id()
    result = subprocess.run(
        storage_format_argv(java, libs, cluster_id, node.config),
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        raise StackError(f"formatting Kafka storage failed:\n{result.stdout}{result.stderr}")
    return node


def _cluster_id() -> str:
    # KRaft cluster ids are 16 random bytes in URL-safe base64 without padding. One in 64
    # starts with "-", which the storage tool's argument parser takes for an option (it
    # then fails with its usage): like Kafka's own Uuid.randomUuid, draw again.
    while True:
        found = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not found.startswith("-"):
            return found


def storage_format_argv(
    java: str, libs: Path, cluster_id: str, config: Path, heap: Sequence[str] = _HEAP
) -> list[str]:
    """The storage tool's command that formats the storage ``config`` names (KRaft)."""
    return [
        java,
        *heap,
        "-cp",
        f"{libs}/*",
        "kafka.tools.StorageTool",
        "format",
        "-t",
        cluster_id,
        "-c",
        str(config),
    ]


def broker_argv(
    java: str, libs: Path, config: Path, log4j: Path, heap: Sequence[str] = _HEAP
) -> tuple[str, ...]:
    """The command that runs one Kafka node (broker and controller) from ``config``."""
    return (
        java,
        *heap,
        f"-Dlog4j2.configurationFile={log4j}",
        "-cp",
        f"{libs}/*",
        "kafka.Kafka",
        str(config),
    )


def launch(java: str, libs: Path, node: KafkaNode, log: Path) -> Launch:
    return Launch(name="kafka", argv=broker_argv(java, libs, node.config, node.log4j), log=log)


def started_since(log: Path, offset: int) -> bool:
    """True once the broker logged that it started, after byte ``offset`` of its log."""
    try:
        with log.open("rb") as f:
            f.seek(offset)
            return _STARTED.encode() in f.read()
    except OSError:
        return False


def ready(node_port: int, log: Path, offset: int) -> bool:
    return started_since(log, offset) and port_open(node_port)


def version(log: Path) -> str:
    """The version the running broker reported at start-up, read from its log."""
    found = _VERSION.findall(log.read_text(errors="replace"))
    if not found:
        raise StackError(f"the broker never logged its version\n{tail(log)}")
    return str(found[-1])
