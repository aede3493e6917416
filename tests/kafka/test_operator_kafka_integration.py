"""The operator, as a process, on the three-broker cluster (``kafka_cluster_3``), with the
shared stack's API server: what a channel's topics refuse and how their health shows.

* A record over ``limits.maxRecordBytes``: the topic's ``max.message.bytes`` (set by the
  operator) makes the broker refuse it, so its producer gets ``RecordTooLargeException``
  (aiokafka: ``MessageSizeTooLargeError``) instead of every worker fetching it, and a
  worker's client keeps receiving the small events around it. The cluster accepts up to
  8 MiB itself, as Confluent Cloud does: without the operator's setting the 5 MiB record
  got in.
* A broker SIGKILLed: ``TopicsHealthy`` says under-replicated, with counts, while ``Ready``
  stays True throughout (watched), and clears once the broker is back.
* A wrong SCRAM password in the channel's Secret: ``Ready=False KafkaAuthorizationFailed``
  with Kafka's reason; the Secret fixed in place makes the channel Ready within seconds
  (the operator watches the Secrets its channels name), not at the refusal's 120 s retry.
"""

from __future__ import annotations

import asyncio
import json
import os
import threading
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import pytest
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import MessageSizeTooLargeError
from kubernetes import client as k8s
from kubernetes import watch

from clarion_devstack.e2e.deploy import OperatorProcess
from clarion_devstack.harness import (
    ChannelTopics,
    Keys,
    Producer,
    assert_exact,
    expected_for,
    settle,
    start_worker_process,
)
from clarion_devstack.kafka_cluster import KafkaCluster
from clarion_devstack.kafka_load import ORGS, USER, connect_clients, fully_replicated
from clarion_devstack.pytest_plugin import LocalStack
from clarion_operator.core import crd

WAIT = 90
#: The health probe's interval for these tests (the operator's default is 10 s).
HEALTH_INTERVAL = "2"
#: Short, so that full reconciles (drift checks) also run while a broker is gone: neither
#: they nor the health probe may take Ready down for it.
DRIFT_INTERVAL = 5.0
#: Seconds a fixed Secret may take to make its channel Ready: the operator follows the
#: Secret by a watch (a reconcile at once, one SCRAM login); the refusal's own retry comes
#: only after 120 s, so a channel waiting for it fails this bound.
SECRET_FOLLOWED = 45
#: The password the brokers refuse.
WRONG = "not-the-password"

pytestmark = pytest.mark.integration


@pytest.fixture
def operator(
    local_stack: LocalStack, namespace: str, crd_installed: None, monkeypatch: pytest.MonkeyPatch
) -> Iterator[OperatorProcess]:
    monkeypatch.setenv("CLARION_OPERATOR_HEALTH_INTERVAL", HEALTH_INTERVAL)
    process = OperatorProcess(
        str(local_stack.kubeconfig),
        namespace,
        local_stack.logs_dir / f"operator-{namespace}.log",
        drift_interval=DRIFT_INTERVAL,
    )
    process.start()
    try:
        yield process
    finally:
        # Let the operator release its finalizers before the namespace goes away.
        local_stack.delete_all("rtc", namespace)
        process.stop()


def apply_channel(stack: LocalStack, namespace: str, name: str, spec: Mapping[str, Any]) -> None:
    body = {
        "apiVersion": crd.API_VERSION,
        "kind": crd.KIND,
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    }
    stack.kubectl(
        "apply", "--server-side", "--field-manager=clarion-tests", "-f", "-",
        stdin=json.dumps(body),
    )  # fmt: skip


def condition(obj: Mapping[str, Any], type_: str) -> dict[str, Any]:
    for c in (obj.get("status") or {}).get("conditions") or []:
        if c.get("type") == type_:
            return dict(c)
    return {}


class ChannelWatch:
    """Every state of one channel the API server reports, from a watch in a thread; tests
    wait on a predicate and look back at the whole history (did Ready ever go False?)."""

    def __init__(self, api: k8s.ApiClient, namespace: str, name: str) -> None:
        self.api, self.namespace, self.name = api, namespace, name
        self.seen: list[tuple[float, dict[str, Any]]] = []
        #: Watch requests that failed (retried after 0.5 s).
        self.errors: list[str] = []
        self._changed = threading.Condition()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        custom = k8s.CustomObjectsApi(self.api)
        args = (crd.GROUP, crd.VERSION, self.namespace, crd.PLURAL)
        while not self._stop.is_set():
            stream = watch.Watch()
            try:
                for event in stream.stream(
                    custom.list_namespaced_custom_object,
                    *args,
                    field_selector=f"metadata.name={self.name}",
                    timeout_seconds=5,
                ):
                    obj = cast("dict[str, Any]", event["object"])
                    with self._changed:
                        self.seen.append((time.monotonic(), obj))
                        self._changed.notify_all()
                    if self._stop.is_set():
                        stream.stop()
            except Exception as exc:  # the API server away: the waits time out and say so
                self.errors.append(repr(exc))
                self._stop.wait(0.5)

    def wait(
        self, predicate: Callable[[dict[str, Any]], bool], what: str, timeout: float = WAIT
    ) -> tuple[float, dict[str, Any]]:
        """The first state from now on (or the latest one) for which ``predicate`` holds."""
        deadline = time.monotonic() + timeout
        with self._changed:
            start = max(0, len(self.seen) - 1)
            while True:
                for at, obj in self.seen[start:]:
                    if predicate(obj):
                        return at, obj
                start = len(self.seen)
                left = deadline - time.monotonic()
                if left <= 0:
                    last = self.seen[-1][1].get("status") if self.seen else None
                    raise AssertionError(
                        f"{what} not within {timeout} s; last: {last}; watch errors: "
                        f"{self.errors[-3:]}"
                    )
                self._changed.wait(left)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


@pytest.fixture
def channel_watch(
    kube_api: k8s.ApiClient, namespace: str
) -> Iterator[Callable[[str], ChannelWatch]]:
    started: list[ChannelWatch] = []

    def start(name: str) -> ChannelWatch:
        started.append(ChannelWatch(kube_api, namespace, name))
        return started[-1]

    yield start
    for w in started:
        w.stop()


@dataclass
class Channels:
    """Channels in the test's namespace, served by its operator: each one watched from
    before it is applied, its topics named for the test."""

    stack: LocalStack
    namespace: str
    operator: OperatorProcess
    unique_name: Callable[[str], str]
    watch: Callable[[str], ChannelWatch]

    def topics(self, name: str) -> ChannelTopics:
        return ChannelTopics.named(self.unique_name(name))

    def apply(self, name: str, spec: Mapping[str, Any]) -> ChannelWatch:
        seen = self.watch(name)
        apply_channel(self.stack, self.namespace, name, spec)
        return seen


@pytest.fixture
def channels(
    local_stack: LocalStack,
    namespace: str,
    operator: OperatorProcess,
    unique_name: Callable[[str], str],
    channel_watch: Callable[[str], ChannelWatch],
) -> Channels:
    return Channels(local_stack, namespace, operator, unique_name, channel_watch)


def is_ready(obj: Mapping[str, Any]) -> bool:
    return condition(obj, "Ready").get("status") == "True"


def spec_for(bootstrap: str, topics: ChannelTopics) -> dict[str, Any]:
    return {
        "kafka": {"bootstrapServers": bootstrap},
        "topics": [
            {"name": topics.approvals, "partitions": 3, "replicationFactor": 3},
            {"name": topics.notify, "partitions": 2, "replicationFactor": 3, "audience": "user"},
            {
                "name": topics.bcast,
                "partitions": 1,
                "replicationFactor": 3,
                "audience": "broadcast",
            },
        ],
        "auth": {"mode": "none"},
        "workers": {"replicas": 1},
    }


async def topic_config(bootstrap: str, topic: str, key: str) -> str | None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10000)
    await admin.start()
    try:
        [configs] = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic)])
    finally:
        await admin.close()
    return {e[0]: e[1] for e in configs.resources[0][4]}.get(key)


@pytest.fixture
async def big_producer(kafka_producer: Callable[..., Awaitable[Producer]]) -> Producer:
    """A producer that would send 16 MiB requests: only the broker can refuse a record."""
    return await kafka_producer(max_request_size=16 * 1024 * 1024)


async def test_a_record_over_max_record_bytes_is_refused_to_its_producer_and_clients_go_on(
    kafka_cluster_3: KafkaCluster, channels: Channels, big_producer: Producer, tmp_path: Path
) -> None:
    bootstrap = kafka_cluster_3.bootstrap
    topics = channels.topics("big")
    seen = channels.apply("big", spec_for(bootstrap, topics))
    seen.wait(lambda o: condition(o, "TopicsReady").get("status") == "True", "topics created")
    # limits.maxRecordBytes unset: the worker's 1 MiB, plus 16 KiB for the batch, key, headers.
    assert await topic_config(bootstrap, topics.approvals, "max.message.bytes") == "1064960"

    keys = Keys(tmp_path)
    worker = start_worker_process(
        name="w1", kafka_bootstrap=bootstrap, topics=topics, keys=keys, directory=tmp_path
    )
    try:
        [collector] = await connect_clients(keys, [worker])
        producer = big_producer
        for i in range(20):
            await producer.send(topics.approvals, "BEFORE", ORGS[i % 2], key=f"k{i % 3}")
        with pytest.raises(MessageSizeTooLargeError) as refused:
            await producer.raw(topics.approvals, os.urandom(5 * 1024 * 1024), key=b"k0")
        print(f"\nthe producer of a 5 MiB record got: {refused.value!r}")
        for i in range(20):
            await producer.send(topics.approvals, "AFTER", ORGS[i % 2], key=f"k{i % 3}")
        await settle(producer, [worker], [collector], topics.bcast)
        expected = expected_for(producer.sent, set(ORGS), USER, topics)
        assert_exact(collector.seqs(), expected, producer.sent)
        # Nothing over the limit reached the worker: its size check stays for records
        # written before the limit was set.
        oversized = worker.metric(
            "clarion_worker_bad_records_total", topic=topics.approvals, reason="oversized"
        )
        assert oversized == 0
        await collector.stop()
    finally:
        worker.stop()


async def test_a_lost_broker_shows_as_under_replicated_beside_ready_and_clears(
    kafka_cluster_3: KafkaCluster, channels: Channels
) -> None:
    cluster = kafka_cluster_3
    topics = channels.topics("ha")
    seen = channels.apply("ha", spec_for(cluster.bootstrap, topics))
    seen.wait(
        lambda o: is_ready(o) and condition(o, "TopicsHealthy").get("status") == "True",
        "Ready and TopicsHealthy",
    )
    healthy_from = len(seen.seen)
    victim = 2
    killed_at = time.monotonic()
    cluster.kill(victim)
    try:
        at, degraded = seen.wait(
            lambda o: condition(o, "TopicsHealthy").get("reason") == "UnderReplicatedPartitions",
            "TopicsHealthy=False UnderReplicatedPartitions",
        )
        reported = at - killed_at
        # Every partition has a replica on every broker: all six are under-replicated.
        text = condition(degraded, "TopicsHealthy")["message"]
        assert text.startswith("0 offline, 0 below min.insync.replicas, 6 under-replicated, of 6")
        assert text.endswith(f"replicas out of sync on broker(s) {victim}")
    finally:
        cluster.start(victim)  # returns once the broker says it started
    returned_at = time.monotonic()
    at, _ = seen.wait(
        lambda o: condition(o, "TopicsHealthy").get("status") == "True", "TopicsHealthy again"
    )
    cleared = at - returned_at
    await asyncio.wait_for(fully_replicated(cluster.bootstrap, topics), 60)
    ready = [condition(obj, "Ready").get("status") for _, obj in seen.seen[healthy_from:]]
    assert set(ready) == {"True"}, f"Ready flapped: {ready}"
    # The operator posts a transition's Event after writing the status that shows it (a
    # task of its own): wait for the Event, as a user reading `kubectl get events` would.
    core = k8s.CoreV1Api(seen.api)
    reasons: list[str] = []
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        events = core.list_namespaced_event(
            channels.namespace, field_selector="involvedObject.name=ha"
        )
        reasons = [str(e.reason) for e in events.items]
        if {"UnderReplicatedPartitions", "TopicsHealthy"} <= set(reasons):
            break
        await asyncio.sleep(0.5)
    assert "UnderReplicatedPartitions" in reasons
    assert "TopicsHealthy" in reasons
    print(
        f"\nbroker {victim} SIGKILLed: TopicsHealthy said under-replicated after "
        f"{reported:.1f} s: {text!r}; cleared {cleared:.1f} s after the broker was started "
        f"(health probe every {HEALTH_INTERVAL} s); Ready stayed True in {len(ready)} states"
    )


async def test_a_wrong_password_shows_on_the_running_operators_channel_until_the_secret_is_fixed(
    kafka_cluster_3: KafkaCluster, channels: Channels
) -> None:
    cluster = kafka_cluster_3
    local_stack, namespace = channels.stack, channels.namespace
    user = "clarion-worker"
    local_stack.kubectl(
        "create", "secret", "generic", "kafka-user", "-n", namespace,
        f"--from-literal=username={user}", f"--from-literal=password={WRONG}",
    )  # fmt: skip
    local_stack.kubectl(
        "create", "secret", "generic", "cluster-ca", "-n", namespace,
        f"--from-file=ca.crt={cluster.ca_file}",
    )  # fmt: skip
    topics = channels.topics("sec")
    spec = spec_for(cluster.secure_bootstrap, topics)
    spec["kafka"]["security"] = {
        "protocol": "SASL_SSL",
        "saslMechanism": "SCRAM-SHA-512",
        "credentialsSecret": {"name": "kafka-user"},
        "tlsSecret": {"name": "cluster-ca"},
    }
    seen = channels.apply("sec", spec)
    _, refused = seen.wait(
        lambda o: condition(o, "Ready").get("reason") == "KafkaAuthorizationFailed",
        "Ready=False KafkaAuthorizationFailed",
    )
    ready = condition(refused, "Ready")
    assert ready["status"] == "False"
    assert condition(refused, "TopicsReady")["reason"] == "KafkaAuthorizationFailed"
    assert "SaslAuthenticationFailed" in ready["message"]
    assert "invalid credentials" in ready["message"]
    assert WRONG not in json.dumps(refused), "the Secret's password is in the channel"
    print(f"\nwrong password: Ready=False KafkaAuthorizationFailed: {ready['message']!r}")
    # Rotated in place, as Strimzi's User Operator does. The refusal's own retry is 120 s
    # away: only the operator's watch of the Secret makes the channel Ready sooner.
    fixed_at = time.monotonic()
    fixed = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "kafka-user", "namespace": namespace},
        "stringData": {"username": user, "password": cluster.users[user].password},
    }
    # Through stdin: a password on a command line would reach an error message.
    local_stack.kubectl("replace", "-f", "-", stdin=json.dumps(fixed))
    at, _ = seen.wait(is_ready, "Ready after the Secret was fixed", timeout=SECRET_FOLLOWED)
    admin = AIOKafkaAdminClient(bootstrap_servers=cluster.bootstrap)
    await admin.start()
    try:
        assert topics.approvals in await admin.list_topics()
    finally:
        await admin.close()
    print(f"Ready {at - fixed_at:.1f} s after the Secret was fixed (the refusal's retry: 120 s)")
    # The operator's watch of the Secret did it, and logged no credential.
    log = channels.operator.log.read_text()
    assert f"Secret {namespace}/kafka-user changed: reconciling channel(s) sec" in log
    assert WRONG not in log, "the Secret's old password is in the operator's log"
    assert cluster.users[user].password not in log, "the Secret's password is in the log"
