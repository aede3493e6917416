"""The worker and the operator against Kafka with TLS (the stack's own CA) and
SASL/SCRAM-SHA-512, with credentials as a channel renders them: the worker reads files
at the paths ``render`` gives (a projected Secret), the operator PEM text and passwords
read out of the Secrets. A wrong password or an untrusted CA must read as such: on the
worker, failing readiness with the reason in its log (no crash, no hang); on the
operator, the ``KafkaAuthorizationFailed`` reason its channel condition carries."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaProducer

from clarion_client.client import ClarionClient
from clarion_devstack import harness
from clarion_devstack import kafka_cluster as cluster_module
from clarion_devstack.harness import (
    ChannelTopics,
    Collector,
    Keys,
    Producer,
    WorkerProcess,
    start_worker_process,
)
from clarion_devstack.kafka_cluster import KafkaCluster
from clarion_operator.core.errors import classify_kafka_exception
from clarion_operator.core.reasons import Reason
from clarion_operator.core.render import SECRETS_DIR, worker_config
from clarion_operator.core.spec import parse_spec
from clarion_operator.kafka_admin import AiokafkaFactory
from clarion_operator.ports import KafkaConnection

pytestmark = pytest.mark.integration

USER = "clarion-worker"


@pytest.fixture
async def topics(kafka_cluster_3: KafkaCluster, unique_name: Callable[[str], str]) -> ChannelTopics:
    names = ChannelTopics.named(unique_name("sec"))
    return await harness.create_topics(kafka_cluster_3.bootstrap, names, replicas=3)


def rendered_security(secrets: Path) -> dict[str, Any]:
    """The worker's ``kafka.security`` section exactly as the operator renders it for a
    SASL_SSL channel, with the projected-volume paths moved under ``secrets``."""
    spec = parse_spec(
        {
            "kafka": {
                "bootstrapServers": "kafka:9093",
                "security": {
                    "protocol": "SASL_SSL",
                    "saslMechanism": "SCRAM-SHA-512",
                    "credentialsSecret": {"name": "clarion-worker"},
                    "tlsSecret": {"name": "my-cluster-cluster-ca-cert"},
                },
            },
            "topics": [{"name": "orders"}],
            "auth": {"mode": "none"},
        },
        name="secured",
    )
    text = json.dumps(worker_config("secured", "default", spec)["kafka"]["security"])
    return dict(json.loads(text.replace(SECRETS_DIR, str(secrets))))


def write_secret_files(
    security: dict[str, Any], username: str, password: str, ca_pem: bytes
) -> None:
    files = {
        security["usernameFile"]: username.encode(),
        security["passwordFile"]: password.encode(),
        security["caFile"]: ca_pem,
    }
    for path, content in files.items():
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_bytes(content)


@pytest.fixture
def start_secured(
    kafka_cluster_3: KafkaCluster, topics: ChannelTopics, tmp_path: Path
) -> Iterator[Callable[..., tuple[WorkerProcess, dict[str, Any]]]]:
    started: list[WorkerProcess] = []

    def start(
        name: str, *, password: str | None = None, ca_pem: bytes | None = None, wait: bool = True
    ) -> tuple[WorkerProcess, dict[str, Any]]:
        security = rendered_security(tmp_path / name / "secrets")
        write_secret_files(
            security,
            USER,
            password if password is not None else kafka_cluster_3.users[USER].password,
            ca_pem if ca_pem is not None else kafka_cluster_3.ca_file.read_bytes(),
        )
        worker = start_worker_process(
            name=name,
            kafka_bootstrap=kafka_cluster_3.secure_bootstrap,
            topics=topics,
            keys=Keys(tmp_path),
            directory=tmp_path,
            wait=wait,
            kafka={"security": security},
        )
        started.append(worker)
        return worker, security

    yield start
    for worker in started:
        worker.stop()


async def log_shows(worker: WorkerProcess, *texts: str, within: float = 60.0) -> str:
    """Wait until one line of the worker's log holds every one of ``texts``; return it."""
    async with asyncio.timeout(within):
        while True:
            for line in worker.log.read_text(errors="replace").splitlines():
                if all(text in line for text in texts):
                    return line
            assert worker.proc.poll() is None, f"worker exited: {worker.log.read_text()[-2000:]}"
            await asyncio.sleep(0.2)


def readyz(worker: WorkerProcess) -> int:
    return httpx.get(f"{worker.http}/readyz", timeout=5).status_code


async def test_worker_reads_over_tls_with_scram_credentials_from_rendered_files(
    kafka_cluster_3: KafkaCluster,
    topics: ChannelTopics,
    start_secured: Callable[..., tuple[WorkerProcess, dict[str, Any]]],
    tmp_path: Path,
) -> None:
    worker, security = start_secured("tls-ok")
    assert security["saslMechanism"] == "SCRAM-SHA-512"
    assert Path(security["caFile"]).name == "ca.crt"
    kafka = AIOKafkaProducer(bootstrap_servers=kafka_cluster_3.bootstrap, acks="all")
    await kafka.start()
    collector = Collector(ClarionClient(worker.ws, Keys(tmp_path).token(["org-a"])))
    try:
        await asyncio.wait_for(collector.connected.wait(), 20)
        producer = Producer(kafka)
        await producer.send(topics.approvals, "APPROVAL", "org-a")
        await collector.wait_count(1)
        assert collector.seqs() == [1]
    finally:
        await collector.stop()
        await kafka.stop()
    # Neither the password nor its file's content reached the log.
    assert kafka_cluster_3.users[USER].password not in worker.log.read_text()


async def test_worker_refused_password_fails_readiness_with_reason_then_takes_rotated_one(
    kafka_cluster_3: KafkaCluster,
    start_secured: Callable[..., tuple[WorkerProcess, dict[str, Any]]],
) -> None:
    worker, security = start_secured("tls-badpw", password="not-the-password", wait=False)
    # The worker's own retry line names the refusal (aiokafka's says "Unable to bootstrap").
    line = await log_shows(worker, "Kafka not ready; retrying", "SaslAuthenticationFailed")
    assert "invalid credentials" in line
    assert readyz(worker) != 200
    assert worker.proc.poll() is None, "a refused password must not crash the worker"
    assert "not-the-password" not in worker.log.read_text()
    # The Secret is rotated (the kubelet rewrites the projected file): the next retry
    # reads it and the worker becomes ready without a restart.
    password_file = Path(security["passwordFile"])
    await asyncio.to_thread(password_file.write_text, kafka_cluster_3.users[USER].password)
    async with asyncio.timeout(60):
        # Another process's readiness: nothing to await but its next answer.
        while await asyncio.to_thread(readyz, worker) != 200:  # noqa: ASYNC110
            await asyncio.sleep(0.2)


async def test_worker_that_does_not_trust_the_brokers_ca_fails_readiness_with_the_reason(
    start_secured: Callable[..., tuple[WorkerProcess, dict[str, Any]]], tmp_path: Path
) -> None:
    other_ca = cluster_module._tls(tmp_path / "other-ca") / "ca.crt"
    worker, _ = start_secured("tls-badca", ca_pem=other_ca.read_bytes(), wait=False)
    await log_shows(worker, "Kafka not ready; retrying", "CERTIFICATE_VERIFY_FAILED")
    assert readyz(worker) != 200
    assert worker.proc.poll() is None


def connection(cluster: KafkaCluster, *, password: str, ca_pem: str) -> KafkaConnection:
    return KafkaConnection(
        bootstrap_servers=cluster.secure_bootstrap,
        client_id="clarion-operator",
        security_protocol="SASL_SSL",
        sasl_mechanism="SCRAM-SHA-512",
        username="admin",
        password=password,
        ca_pem=ca_pem,
    )


async def operator_error(conn: KafkaConnection, topic: str) -> BaseException | None:
    factory = AiokafkaFactory(request_timeout_ms=10_000)
    try:
        async with asyncio.timeout(60), factory(conn) as admin:
            await admin.describe([topic])
    except Exception as exc:
        return exc
    finally:
        await factory.close()
    return None


async def test_operator_admin_over_tls_and_scram_and_what_refusals_classify_as(
    kafka_cluster_3: KafkaCluster, topics: ChannelTopics, tmp_path: Path
) -> None:
    ca = kafka_cluster_3.ca_file.read_text()
    good = connection(kafka_cluster_3, password=kafka_cluster_3.users["admin"].password, ca_pem=ca)
    assert await operator_error(good, topics.approvals) is None

    wrong = await operator_error(connection(kafka_cluster_3, password="wrong", ca_pem=ca), "x")
    assert wrong is not None
    cls = classify_kafka_exception(c.__name__ for c in type(wrong).__mro__)
    assert cls.reason is Reason.KAFKA_AUTHORIZATION_FAILED, (cls, wrong)
    assert "invalid credentials" in str(wrong)

    other_ca = (cluster_module._tls(tmp_path / "other-ca") / "ca.crt").read_text()
    untrusted = await operator_error(
        connection(kafka_cluster_3, password=good.password or "", ca_pem=other_ca), "x"
    )
    assert untrusted is not None
    cls = classify_kafka_exception(c.__name__ for c in type(untrusted).__mro__)
    assert cls.reason is Reason.KAFKA_AUTHORIZATION_FAILED, (cls, untrusted)
    assert "CERTIFICATE_VERIFY_FAILED" in str(untrusted)
