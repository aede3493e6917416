"""Test harness for the worker: real worker processes, numbered events, real clients.

Integration tests, the end-to-end harness and the benchmarks share it: it starts
``python -m clarion_worker`` processes, produces the seed's JSON events with sequence
numbers, mints tokens three ways (HMAC, RSA and EC through a JWKS file), and collects
events with the real client, so that loss, duplication and order can be checked.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Set
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Self

import httpx
import jwt
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from clarion_client.client import ClarionClient
from clarion_devstack.procs import Loopback, free_port

AUDIENCE = "clarion-tests"
ISSUER = "https://auth.unionflow.test"
#: The browser origin the test workers allow (``auth.allowedOrigins``), and its header.
APP_ORIGIN = "https://app.unionflow.test"
ORIGIN: Mapping[str, str] = MappingProxyType({"Origin": APP_ORIGIN})


@dataclass(frozen=True)
class ChannelTopics:
    approvals: str  # organization audience, 3 partitions
    notify: str  # user audience, 2 partitions
    bcast: str  # broadcast audience, 1 partition

    @classmethod
    def named(cls, prefix: str) -> ChannelTopics:
        """``<prefix>.approvals``, ``<prefix>.notify`` and ``<prefix>.bcast``."""
        return cls(f"{prefix}.approvals", f"{prefix}.notify", f"{prefix}.bcast")

    def config(self) -> list[dict[str, str]]:
        return [
            {"name": self.approvals, "audience": "organization"},
            {"name": self.notify, "audience": "user"},
            {"name": self.bcast, "audience": "broadcast"},
        ]


#: Tries of a topic creation that met aiokafka's "no controller known yet".
CREATE_ATTEMPTS = 10


async def create_topics(
    bootstrap: str,
    topics: ChannelTopics,
    *,
    partitions: tuple[int, int, int] = (3, 2, 1),
    replicas: int = 1,
    config: Mapping[str, str] | None = None,
) -> ChannelTopics:
    """Create the channel's three topics (approvals, notify, bcast: ``partitions``), each
    with ``replicas`` replicas and the topic ``config``; return ``topics``."""
    names = (topics.approvals, topics.notify, topics.bcast)
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        for attempt in range(CREATE_ATTEMPTS):
            try:
                await admin.create_topics(
                    [
                        NewTopic(name, count, replicas, topic_configs=dict(config or {}))
                        for name, count in zip(names, partitions, strict=True)
                    ]
                )
                break
            except AttributeError:
                # aiokafka 0.14 reads the controller's nodeId from metadata that, on a
                # loaded broker just after start, names no controller yet (None): nothing
                # was sent, so ask again once the metadata has caught up.
                if attempt == CREATE_ATTEMPTS - 1:
                    raise
                await asyncio.sleep(0.5)
    finally:
        await admin.close()
    return topics


@dataclass
class Keys:
    """Signing material: an HMAC secret, and RSA and EC keys published as a JWKS file."""

    directory: Path
    hmac_secret: bytes = b"clarion-test-secret-0123456789abcdef"
    rsa_key: rsa.RSAPrivateKey = field(
        default_factory=lambda: rsa.generate_private_key(65537, 2048)
    )
    ec_key: ec.EllipticCurvePrivateKey = field(
        default_factory=lambda: ec.generate_private_key(ec.SECP256R1())
    )

    @property
    def hmac_file(self) -> Path:
        path = self.directory / "hmac.secret"
        path.write_bytes(self.hmac_secret)
        return path

    @property
    def jwks_file(self) -> Path:
        path = self.directory / "jwks.json"
        keys = []
        for kid, key, alg in (("rsa-1", self.rsa_key, "RS256"), ("ec-1", self.ec_key, "ES256")):
            jwk = json.loads(jwt.algorithms.get_default_algorithms()[alg].to_jwk(key.public_key()))
            keys.append({**jwk, "kid": kid, "alg": alg, "use": "sig"})
        path.write_text(json.dumps({"keys": keys}))
        return path

    def token(
        self,
        orgs: list[str],
        user: str | None = None,
        *,
        alg: str = "HS256",
        ttl: float = 3600,
        audience: str = AUDIENCE,
        issuer: str = ISSUER,
        key: Any = None,
        kid: str | None = None,
    ) -> str:
        now = int(time.time())
        claims: dict[str, Any] = {
            "organizations": orgs,
            "aud": audience,
            "iss": issuer,
            "iat": now,
            "exp": now + int(ttl),
        }
        if user:
            claims["sub"] = user
        if key is None:
            key = {"HS256": self.hmac_secret, "RS256": self.rsa_key, "ES256": self.ec_key}[alg]
        kid = kid or {"RS256": "rsa-1", "ES256": "ec-1"}.get(alg)
        return jwt.encode(claims, key, algorithm=alg, headers={"kid": kid} if kid else None)


@dataclass
class WorkerProcess(Loopback):
    """A worker serving on ``127.0.0.1:port`` (its addresses are :class:`Loopback`'s)."""

    name: str
    port: int
    proc: subprocess.Popen[bytes]
    log: Path

    @property
    def ws(self) -> str:
        """The dashboard's WebSocket URL."""
        return f"{self.ws_base}/ws/dashboard"

    @property
    def http(self) -> str:
        """Its HTTP base: ``/metrics``, ``/readyz``, the SSE stream."""
        return self.url

    def metrics(self) -> str:
        return httpx.get(f"{self.http}/metrics", timeout=5).text

    def metric(self, name: str, **labels: str) -> float:
        """One sample's value (0 when absent) from /metrics."""
        wanted = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
        for line in self.metrics().splitlines():
            if line.startswith("#"):
                continue
            series, _, value = line.rpartition(" ")
            metric, _, label_text = series.partition("{")
            got = ",".join(sorted(label_text.rstrip("}").split(","))) if label_text else ""
            if metric == name and got == wanted:
                return float(value)
        return 0.0

    def consumed(self) -> float:
        """Valid plus bad records this worker read, over all topics."""
        total = 0.0
        for line in self.metrics().splitlines():
            if line.startswith(
                ("clarion_worker_events_consumed_total", "clarion_worker_bad_records_total")
            ):
                total += float(line.rpartition(" ")[2])
        return total

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def terminate(self) -> None:
        self.proc.send_signal(signal.SIGTERM)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=10)


@dataclass
class ControlServer:
    """The conformance control server (``python -m clarion_devstack.conformance serve``)."""

    url: str
    proc: subprocess.Popen[bytes]
    log: Path

    def stop(self) -> int:
        """SIGTERM (it stops its workers), then its exit code; killed after 30 s."""
        self.proc.terminate()
        try:
            return self.proc.wait(timeout=30)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()


def start_control_server(kafka_bootstrap: str, work: Path, timeout: float = 30) -> ControlServer:
    """Start the control server in ``work`` (its ready file, log and workers' files) and
    return it once its ready file names its URL."""
    ready = work / "ready.json"
    log = work / "control.log"
    argv = [
        sys.executable,
        "-m",
        "clarion_devstack.conformance",
        "serve",
        "--ready-file",
        str(ready),
        "--kafka-bootstrap",
        kafka_bootstrap,
        "--work-dir",
        str(work),
    ]
    with log.open("wb") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + timeout
    # Another process's file: nothing to await but its appearance.
    while not ready.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            proc.wait()
            raise AssertionError(f"control server did not start: {log.read_text()[-2000:]}")
        time.sleep(0.05)
    return ControlServer(str(json.loads(ready.read_text())["control"]), proc, log)


def start_worker_process(
    *,
    name: str,
    kafka_bootstrap: str,
    topics: ChannelTopics,
    keys: Keys,
    directory: Path,
    auth: dict[str, Any] | None = None,
    python: str = sys.executable,
    wait: bool = True,
    port: int | None = None,
    **sections: Any,
) -> WorkerProcess:
    """Start ``python -m clarion_worker`` on the channel and (unless ``wait`` is false)
    wait until /readyz says ok. ``port`` restarts a replica where its clients expect it."""
    doc: dict[str, Any] = {
        "apiVersion": "clarion.dev/worker-config/v1",
        "channel": "tests",
        "kafka": {"bootstrapServers": kafka_bootstrap, "metadataRefreshSeconds": 1},
        "topics": topics.config(),
        "auth": auth
        or {
            "mode": "jwt",
            "hmacSecretFile": str(keys.hmac_file),
            "jwksFile": str(keys.jwks_file),
            "algorithms": ["HS256", "RS256", "ES256"],
            "audience": AUDIENCE,
            "issuer": ISSUER,
            "allowedOrigins": [APP_ORIGIN],
        },
        "heartbeat": {"intervalSeconds": 5, "timeoutSeconds": 5},
        "drain": {"windowSeconds": 2},
    }
    for section, values in sections.items():
        doc.setdefault(section, {}).update(values)
    config = directory / f"{name}.json"
    config.write_text(json.dumps(doc))
    port = port or free_port()
    log = directory / f"{name}.log"
    # A pod gets no CLARION_* variables but those the operator sets; the worker rejects
    # unknown ones, so the test process's own (CLARION_STATE_DIR, ...) must not leak in.
    inherited = {k: v for k, v in os.environ.items() if not k.startswith("CLARION_")}  # noqa: TID251
    env = {**inherited, "CLARION_REPLICA_ID": name}
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "clarion_worker",
                "--config",
                str(config),
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
        )
    worker = WorkerProcess(name, port, proc, log)
    deadline = time.monotonic() + 60
    while wait:
        if proc.poll() is not None:
            raise AssertionError(f"worker {name} exited: {log.read_text()[-3000:]}")
        try:
            if httpx.get(f"{worker.http}/readyz", timeout=1).status_code == 200:
                return worker
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            # Nobody holds this worker yet: stop it here, or it outlives the test.
            proc.kill()
            proc.wait()
            raise AssertionError(f"worker {name} not ready in 60 s: {log}")
        time.sleep(0.1)
    return worker


@dataclass
class Producer:
    """Produces the seed's JSON shape, numbering events so clients can check sequences."""

    kafka: AIOKafkaProducer
    seq: int = 0
    sent: list[dict[str, Any]] = field(default_factory=list)
    raw_sent: int = 0

    async def send(
        self,
        topic: str,
        event_type: str,
        org: str | None,
        user: str | None = None,
        key: str | None = None,
    ) -> dict[str, Any]:
        self.seq += 1
        body: dict[str, Any] = {
            "type": event_type,
            "organizationId": org,
            "data": {"seq": self.seq, "key": key or org or "all"},
            "timestamp": "2026-03-14T10:00:00Z",
        }
        if user:
            body["userId"] = user
        meta = await self.kafka.send_and_wait(
            topic, json.dumps(body).encode(), key=(key or user or org or "all").encode()
        )
        record = {**body, "topic": topic, "partition": meta.partition, "offset": meta.offset}
        self.sent.append(record)
        return record

    async def raw(
        self,
        topic: str,
        value: bytes | None,
        key: bytes = b"k",
        headers: list[tuple[str, bytes]] | None = None,
    ) -> None:
        """A record as given (bad records for tests): counted, not numbered."""
        await self.kafka.send_and_wait(topic, value, key=key, headers=headers)
        self.raw_sent += 1

    async def raw_batch(
        self,
        topic: str,
        records: list[tuple[bytes, list[tuple[str, bytes]]]],
        key: bytes = b"k",
    ) -> None:
        """Records as given, in one Kafka record batch on one partition.

        A consumer fetches a record batch whole, so the worker sees these in one pass:
        a test of what the worker does with several events at once does not depend on
        how fast it drains records produced one at a time.
        """
        partitions = sorted(await self.kafka.partitions_for(topic))
        batch = self.kafka.create_batch()
        for value, headers in records:
            if batch.append(key=key, value=value, timestamp=None, headers=headers) is None:
                raise ValueError("records do not fit in one batch")
        await (await self.kafka.send_batch(batch, topic, partition=partitions[0]))
        self.raw_sent += len(records)


class Collector:
    """A real client (``ClarionClient``) gathering events; tests wait on its condition."""

    def __init__(self, client: ClarionClient) -> None:
        self.client = client
        self.events: list[dict[str, Any]] = []
        self.resets: list[dict[str, Any]] = []
        #: Wall-clock receive time of each event (epoch s), for latency checks.
        self.received_at: list[float] = []
        self.error: BaseException | None = None
        self._changed = asyncio.Condition()
        #: Set at every welcome (each connect and reconnect).
        self.connected = asyncio.Event()
        client.on_welcome = self._welcomed
        self.task = asyncio.create_task(self._run())

    def _welcomed(self, welcome: dict[str, Any]) -> None:
        """Each welcome, from the client's receive loop."""
        self.connected.set()

    def _received(self, event: dict[str, Any]) -> None:
        """Each event, under the condition's lock."""
        self.events.append(event)
        self.received_at.append(time.time())

    async def _run(self) -> None:
        try:
            async for message in self.client.events():
                async with self._changed:
                    if message["type"] == "reset":
                        self.resets.append(message)
                    else:
                        self._received(message)
                    self._changed.notify_all()
        except Exception as error:
            async with self._changed:
                self.error = error
                self._changed.notify_all()

    async def wait(self, predicate: Callable[[Self], bool], within: float = 20.0) -> None:
        async with asyncio.timeout(within), self._changed:
            await self._changed.wait_for(lambda: predicate(self) or self.error is not None)
        if self.error is not None and not predicate(self):
            raise AssertionError(f"client failed: {self.error!r}")

    async def wait_count(self, count: int, within: float = 20.0) -> None:
        await self.wait(lambda c: len(c.events) >= count, within)

    def latencies(self) -> list[float]:
        """Kafka timestamp to receipt, per event, in seconds."""
        return [
            at - event["kafkaTs"] / 1000
            for event, at in zip(self.events, self.received_at, strict=True)
            if "kafkaTs" in event
        ]

    def seqs(self) -> list[int]:
        return [event["data"]["seq"] for event in self.events]

    async def stop(self) -> None:
        await self.client.close()
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task


def expected_for(
    sent: list[dict[str, Any]], orgs: set[str], user: str | None, topics: ChannelTopics
) -> list[int]:
    """The seqs a client with ``orgs`` and ``user`` must receive, in production order."""
    audiences = {topic["name"]: topic["audience"] for topic in topics.config()}
    return [
        record["data"]["seq"]
        for record in sent
        if meant_for(
            audiences[record["topic"]], record["organizationId"], record.get("userId"), orgs, user
        )
    ]


def meant_for(
    audience: str,
    organization: str | None,
    recipient: str | None,
    orgs: Set[str],
    user: str | None,
) -> bool:
    """Whether a client granted ``orgs`` and identified as ``user`` gets an event of a topic
    of ``audience``, about ``organization`` and addressed to ``recipient``: the worker's
    routing (docs/protocol.md), restated independently for the tests to check it."""
    if audience == "broadcast":
        return True
    if audience == "organization":
        return organization in orgs
    return recipient == user and (organization is None or organization in orgs)


def assert_exact(received: list[int], expected: list[int], sent: list[dict[str, Any]]) -> None:
    """Same events exactly once, and per-key (hence per-partition) production order."""
    assert sorted(received) == sorted(expected), (
        f"missing {sorted(set(expected) - set(received))}, unexpected "
        f"{sorted(set(received) - set(expected))}, duplicated "
        f"{sorted({s for s in received if received.count(s) > 1})}"
    )
    key_of = {record["data"]["seq"]: (record["topic"], record["data"]["key"]) for record in sent}
    last: dict[tuple[str, str], int] = {}
    for seq in received:
        key = key_of[seq]
        assert seq > last.get(key, 0), f"out of order within {key}: {seq} after {last[key]}"
        last[key] = seq


async def settle(
    producer: Producer, workers: list[WorkerProcess], collectors: list[Collector], bcast: str
) -> None:
    """Make sure every produced event reached every client it was meant for.

    Waits until each worker has consumed everything produced, then sends a broadcast
    sentinel: outboxes are FIFO, so a client that got the sentinel got all before it.
    """
    sentinel = await producer.send(bcast, "SENTINEL", None, key="sentinel")
    total = len(producer.sent) + producer.raw_sent
    async with asyncio.timeout(30):
        for worker in workers:
            await consumed_reaches(worker, total)
        for collector in collectors:
            await collector.wait(
                lambda c: any(e["data"]["seq"] == sentinel["data"]["seq"] for e in c.events)
            )


async def metric_reaches(
    worker: WorkerProcess, name: str, value: float, within: float = 20.0, **labels: str
) -> None:
    """Wait until a worker's metric sample reaches ``value`` (scraping /metrics)."""
    async with asyncio.timeout(within):
        # Another process's counter: nothing to await but its next scrape.
        while await asyncio.to_thread(worker.metric, name, **labels) < value:  # noqa: ASYNC110
            await asyncio.sleep(0.05)


async def consumed_reaches(worker: WorkerProcess, count: float, within: float = 30.0) -> None:
    """Wait until a worker has read ``count`` records (valid and bad) from Kafka."""
    async with asyncio.timeout(within):
        # Another process's counter: nothing to await but its next scrape.
        while await asyncio.to_thread(worker.consumed) < count:  # noqa: ASYNC110
            await asyncio.sleep(0.05)


#: The worker tests' fixtures (tests/worker/conftest.py): start a worker process on the
#: test's channel; a client whose events are collected.
StartWorker = Callable[..., WorkerProcess]
Collect = Callable[..., Collector]
