"""The operator against the real stack: kube-apiserver, controller-manager, scheduler,
KWOK and Kafka 4.1.1, with the operator as a real subprocess per test.

The operator runs exactly as in production (``python -m clarion_operator``), scoped to
the test's namespace, with a short drift interval; its log goes to the stack's logs
folder as ``operator-<namespace>.log`` so a failing test's report points at it.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import pytest
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from kubernetes import client as k8s
from kubernetes import watch

from clarion_devstack import stack
from clarion_devstack.e2e.deploy import OperatorProcess
from clarion_devstack.pytest_plugin import LocalStack
from clarion_operator.core import crd

DRIFT_INTERVAL = 2.0
WAIT = 60
#: The override every topic gets from limits.maxRecordBytes (the worker's default 1 MiB).
LIMIT = {"max.message.bytes": "1064960"}

pytestmark = pytest.mark.integration


@contextmanager
def running_operator(
    stack: LocalStack, namespace: str, drift_interval: float = DRIFT_INTERVAL
) -> Iterator[OperatorProcess]:
    """The operator as in production, scoped to the test's namespace, logging to the
    stack's logs folder, with a short drift interval and Kafka timeout; at the end it
    releases the test's channels (their finalizers) before it stops."""
    process = OperatorProcess(
        str(stack.kubeconfig),
        namespace,
        stack.logs_dir / f"operator-{namespace}.log",
        drift_interval=drift_interval,
        kafka_request_timeout_ms=3000,
    )
    process.start(timeout=30)
    try:
        yield process
    finally:
        # Let the operator release its finalizers before the namespace goes away.
        _release_channels(stack, namespace, process)
        process.stop()


@pytest.fixture
def operator(
    local_stack: LocalStack, namespace: str, crd_installed: None
) -> Iterator[OperatorProcess]:
    with running_operator(local_stack, namespace) as process:
        yield process


def _release_channels(stack: LocalStack, namespace: str, process: OperatorProcess) -> None:
    if not process.alive():
        names = stack.kubectl("get", "rtc", "-n", namespace, "-o", "name", check=False).split()
        for name in names:
            stack.kubectl(
                "patch", name, "-n", namespace, "--type=merge",
                "-p", '{"metadata":{"finalizers":null}}', check=False,
            )  # fmt: skip
    stack.delete_all("rtc", namespace)


# --- helpers ---------------------------------------------------------------------------


class Cluster:
    """Small, event-driven helpers over the kubernetes client for one namespace."""

    def __init__(self, api: k8s.ApiClient, stack: LocalStack, namespace: str) -> None:
        self.api = api
        self.stack = stack
        self.namespace = namespace
        self.custom = k8s.CustomObjectsApi(api)
        self.apps = k8s.AppsV1Api(api)

    def apply(self, name: str, spec: Mapping[str, Any], **meta: Any) -> None:
        body = {
            "apiVersion": crd.API_VERSION,
            "kind": crd.KIND,
            "metadata": {"name": name, "namespace": self.namespace, **meta},
            "spec": spec,
        }
        self.stack.kubectl(
            "apply", "--server-side", "--field-manager=clarion-tests", "-f", "-",
            stdin=json.dumps(body),
        )  # fmt: skip

    def channel(self, name: str) -> dict[str, Any]:
        return dict(
            cast(
                "dict[str, Any]",
                self.custom.get_namespaced_custom_object(
                    crd.GROUP, crd.VERSION, self.namespace, crd.PLURAL, name
                ),
            )
        )

    def wait_channel(
        self, name: str, predicate: Callable[[dict[str, Any]], bool], timeout: float = WAIT
    ) -> dict[str, Any]:
        """Watch the channel until ``predicate`` holds; return it."""
        return self._wait(
            self.custom.list_namespaced_custom_object,
            (crd.GROUP, crd.VERSION, self.namespace, crd.PLURAL),
            name,
            predicate,
            timeout,
        )

    def wait_event(self, reason: str, involved: str, timeout: float = WAIT) -> dict[str, Any]:
        core = k8s.CoreV1Api(self.api)
        selector = f"involvedObject.name={involved},reason={reason}"
        listed = core.list_namespaced_event(self.namespace, field_selector=selector)
        if listed.items:
            return dict(self.api.sanitize_for_serialization(listed.items[0]))
        assert listed.metadata is not None
        stream = watch.Watch()
        for event in stream.stream(
            core.list_namespaced_event,
            self.namespace,
            field_selector=selector,
            resource_version=listed.metadata.resource_version,
            timeout_seconds=int(timeout),
        ):
            stream.stop()
            return dict(self.api.sanitize_for_serialization(event["object"]))
        raise AssertionError(f"no {reason} Event for {involved} within {timeout} s")

    def wait_gone(self, list_fn: Callable[..., Any], args: tuple[Any, ...], name: str) -> None:
        self._wait(list_fn, args, name, None, WAIT)

    def _wait(
        self,
        list_fn: Callable[..., Any],
        args: tuple[Any, ...],
        name: str,
        predicate: Callable[[dict[str, Any]], bool] | None,
        timeout: float,
    ) -> dict[str, Any]:
        selector = f"metadata.name={name}"
        deadline = time.monotonic() + timeout
        last: dict[str, Any] = {}
        while time.monotonic() < deadline:
            listed = self._plain(list_fn(*args, field_selector=selector))
            items = listed.get("items") or []
            if predicate is None and not items:
                return {}
            if items:
                last = items[0]
                if predicate is not None and predicate(last):
                    return last
            stream = watch.Watch()
            remaining = max(1, int(deadline - time.monotonic()))
            for event in stream.stream(
                list_fn,
                *args,
                field_selector=selector,
                resource_version=listed["metadata"]["resourceVersion"],
                timeout_seconds=remaining,
            ):
                obj = self._plain(event["object"])
                if event["type"] == "DELETED" and predicate is None:
                    stream.stop()
                    return {}
                if event["type"] in ("ADDED", "MODIFIED") and obj:
                    last = obj
                    if predicate is not None and predicate(obj):
                        stream.stop()
                        return obj
        state = json.dumps(last.get("status"), indent=1)[:3000]
        raise AssertionError(f"{name}: condition not reached within {timeout} s; last: {state}")

    def _plain(self, obj: Any) -> dict[str, Any]:
        return obj if isinstance(obj, dict) else dict(self.api.sanitize_for_serialization(obj))


@pytest.fixture
def cluster(kube_api: k8s.ApiClient, local_stack: LocalStack, namespace: str) -> Cluster:
    return Cluster(kube_api, local_stack, namespace)


def condition(obj: Mapping[str, Any], type_: str = "Ready") -> dict[str, Any]:
    for c in (obj.get("status") or {}).get("conditions") or []:
        if c.get("type") == type_:
            return dict(c)
    return {}


def is_ready(obj: Mapping[str, Any]) -> bool:
    """Ready=True for the object's current generation."""
    ready = condition(obj)
    generation = obj["metadata"]["generation"]
    return (
        ready.get("status") == "True"
        and ready.get("observedGeneration") == generation
        and (obj.get("status") or {}).get("observedGeneration") == generation
    )


def reason_is(reason: str, type_: str = "Ready") -> Callable[[dict[str, Any]], bool]:
    return lambda obj: condition(obj, type_).get("reason") == reason


@dataclass(frozen=True)
class KafkaTopic:
    partitions: int
    replication_factor: int
    configs: dict[str, str]


def describe_topic(bootstrap: str, name: str) -> KafkaTopic | None:
    """The topic as Kafka reports it (dynamic config overrides only), or None."""

    async def run() -> KafkaTopic | None:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=5000)
        await admin.start()
        try:
            if name not in await admin.list_topics():
                return None
            [described] = await admin.describe_topics([name])
            [configs] = await admin.describe_configs(
                [ConfigResource(ConfigResourceType.TOPIC, name)]
            )
            overrides = {e[0]: e[1] for e in configs.resources[0][4] if e[3] == 1}
            parts = described["partitions"]
            return KafkaTopic(len(parts), len(parts[0]["replicas"]), overrides)
        finally:
            await admin.close()

    return asyncio.run(run())


def alter_topic(bootstrap: str, name: str, configs: dict[str, str]) -> None:
    async def run() -> None:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=5000)
        await admin.start()
        try:
            await admin.alter_configs([ConfigResource(ConfigResourceType.TOPIC, name, configs)])
        finally:
            await admin.close()

    asyncio.run(run())


def delete_topics(bootstrap: str, names: list[str]) -> None:
    async def run() -> None:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=5000)
        await admin.start()
        try:
            existing = set(await admin.list_topics())
            doomed = [n for n in names if n in existing]
            if doomed:
                await admin.delete_topics(doomed)
        finally:
            await admin.close()

    asyncio.run(run())


@pytest.fixture
def kafka(kafka_bootstrap: str) -> str:
    return kafka_bootstrap


#: A fresh topic name per call (its prefix given), deleted from Kafka after the test.
NewTopic = Callable[[str], str]


@pytest.fixture
def new_topic(kafka: str, unique_name: Callable[[str], str]) -> Iterator[NewTopic]:
    made: list[str] = []

    def make(prefix: str) -> str:
        made.append(unique_name(prefix))
        return made[-1]

    yield make
    delete_topics(kafka, made)


def base_spec(bootstrap: str, topics: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    return {
        "kafka": {"bootstrapServers": bootstrap},
        "topics": topics,
        "auth": {"mode": "none"},
        "workers": {"replicas": 1},
        **extra,
    }


def kubectl_json(stack: LocalStack, *args: str) -> dict[str, Any]:
    return dict(json.loads(stack.kubectl(*args, "-o", "json", "--show-managed-fields")))


def wait_kafka(check: Callable[[], bool], what: str, timeout: float = 30) -> None:
    """Kafka has no watch: poll its metadata (briefly) until ``check`` holds."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"Kafka: {what} not reached within {timeout} s")
        time.sleep(0.3)


def wait_topic(kafka: str, topic: str, expected: KafkaTopic) -> None:
    """Until ``topic`` is as ``expected`` (partitions, replicas, config overrides)."""
    wait_kafka(lambda: describe_topic(kafka, topic) == expected, f"{topic} as specified")


# --- tests -----------------------------------------------------------------------------


def test_apply_creates_topics_children_and_reports_ready(
    operator: OperatorProcess, cluster: Cluster, kafka: str, new_topic: NewTopic
) -> None:
    topic = new_topic("orders")
    spec = base_spec(
        kafka,
        [{"name": topic, "partitions": 3, "config": {"retention.ms": "3600000"}}],
        workers={"replicas": 1, "autoscaling": {"minReplicas": 1, "maxReplicas": 2}},
        ingress={"enabled": True, "host": "dash.example.test"},
    )
    cluster.apply("dash", spec)
    channel = cluster.wait_channel("dash", is_ready)

    expected = KafkaTopic(3, 1, {"retention.ms": "3600000", **LIMIT})
    wait_topic(kafka, topic, expected)

    uid = channel["metadata"]["uid"]
    for kind in ("deployment", "service", "configmap", "ingress", "hpa", "pdb"):
        child = kubectl_json(cluster.stack, "get", kind, "dash-worker", "-n", cluster.namespace)
        [owner] = child["metadata"]["ownerReferences"]
        assert (owner["kind"], owner["uid"], owner["controller"]) == (crd.KIND, uid, True)
        managers = {m["manager"] for m in child["metadata"].get("managedFields", [])}
        assert "clarion-operator" in managers, (kind, managers)

    pods = kubectl_json(
        cluster.stack, "get", "pods", "-n", cluster.namespace, "-l", channel["status"]["selector"]
    )["items"]
    assert pods, "no worker pod"
    for pod in pods:
        ready = {c["type"]: c["status"] for c in pod["status"]["conditions"]}
        assert ready["Ready"] == "True"
        assert pod["spec"]["nodeName"] == "kwok-node-0"

    status = channel["status"]
    assert status["observedGeneration"] == channel["metadata"]["generation"]
    assert (status["topicsSummary"], status["workersSummary"]) == ("1/1", "1/1")
    assert status["endpoint"] == "ws://dash.example.test/ws/dashboard"
    conditions = {c["type"]: c for c in status["conditions"]}
    assert {kind: c["status"] for kind, c in conditions.items()} == {
        "Ready": "True",
        "TopicsReady": "True",
        "WorkersReady": "True",
        # Beside Ready: every replica of the topic in sync (one broker, one replica).
        "TopicsHealthy": "True",
        # The legacy spec.ingress means the nginx profile; this stack has no such
        # IngressClass, which the channel says beside Ready instead of hiding it.
        "Exposed": "False",
    }
    assert conditions["Exposed"]["reason"] == "IngressClassNotFound"

    table = cluster.stack.kubectl("get", "rtc", "-n", cluster.namespace).splitlines()
    assert table[0].split() == ["NAME", "READY", "TOPICS", "WORKERS", "ENDPOINT", "AGE"]
    assert table[1].split()[:5] == [
        "dash", "True", "1/1", "1/1", "ws://dash.example.test/ws/dashboard",
    ]  # fmt: skip

    exposition = operator.metrics()
    # The handler's reconcile finds the workers starting ("waiting"): Ready then
    # follows the Deployment by watch, not by another reconcile.
    assert re.search(
        r'clarion_operator_reconciles_total\{result="(success|waiting)",trigger="handler"\} '
        r"[1-9]",
        exposition,
    ), exposition
    assert "clarion_operator_topics_managed 1.0" in exposition
    assert "clarion_operator_reconcile_duration_seconds_count" in exposition

    # Nothing went wrong, so nothing was logged as an error (waiting for the workers
    # is followed by the watch, not retried through kopf).
    errors = [line for line in operator.log_lines() if line["severity"] == "error"]
    assert not errors, errors


def test_edits_grow_partitions_refuse_decrease_apply_configs_and_roll_workers(
    operator: OperatorProcess, cluster: Cluster, kafka: str, new_topic: NewTopic
) -> None:
    topic = new_topic("edits")

    def spec(partitions: int, retention: str, path: str = "/ws/dashboard") -> dict[str, Any]:
        return base_spec(
            kafka,
            [{"name": topic, "partitions": partitions, "config": {"retention.ms": retention}}],
            server={"websocketPath": path},
        )

    cluster.apply("dash", spec(2, "3600000"))
    first = cluster.wait_channel("dash", is_ready)

    cluster.apply("dash", spec(4, "3600000"))
    cluster.wait_channel("dash", is_ready)
    wait_topic(kafka, topic, KafkaTopic(4, 1, {"retention.ms": "3600000", **LIMIT}))

    # Fewer partitions: refused, nothing touched (not even the config edit with it).
    cluster.apply("dash", spec(3, "7200000"))
    refused = cluster.wait_channel("dash", reason_is("NotSupported"))
    assert condition(refused)["status"] == "False"
    assert condition(refused, "TopicsReady")["reason"] == "NotSupported"
    assert "not supported" in condition(refused)["message"]
    wait_topic(kafka, topic, KafkaTopic(4, 1, {"retention.ms": "3600000", **LIMIT}))

    # Reverting clears it, and the config edit now goes through.
    cluster.apply("dash", spec(4, "7200000"))
    cluster.wait_channel("dash", is_ready)
    wait_topic(kafka, topic, KafkaTopic(4, 1, {"retention.ms": "7200000", **LIMIT}))

    # A worker-settings edit changes the hash and rolls the Deployment.
    cluster.apply("dash", spec(4, "7200000", path="/ws/v2"))
    rolled = cluster.wait_channel("dash", is_ready)
    assert rolled["status"]["configHash"] != first["status"]["configHash"]
    deployment = kubectl_json(
        cluster.stack, "get", "deployment", "dash-worker", "-n", cluster.namespace
    )
    template = deployment["spec"]["template"]["metadata"]["annotations"]
    assert template["clarion.dev/config-hash"] == rolled["status"]["configHash"]
    replica_sets = kubectl_json(
        cluster.stack,
        "get",
        "replicasets",
        "-n",
        cluster.namespace,
        "-l",
        rolled["status"]["selector"],
    )["items"]
    assert len(replica_sets) == 2


def test_drift_repairs_deleted_deployment_and_altered_topic_config(
    operator: OperatorProcess, cluster: Cluster, kafka: str, new_topic: NewTopic
) -> None:
    topic = new_topic("drift")
    cluster.apply(
        "dash", base_spec(kafka, [{"name": topic, "config": {"retention.ms": "3600000"}}])
    )
    cluster.wait_channel("dash", is_ready)
    old_uid = kubectl_json(
        cluster.stack, "get", "deployment", "dash-worker", "-n", cluster.namespace
    )["metadata"]["uid"]

    cluster.stack.kubectl(
        "delete", "deployment", "dash-worker", "-n", cluster.namespace, "--wait=false"
    )
    alter_topic(kafka, topic, {"retention.ms": "1000", "cleanup.policy": "compact"})

    cluster._wait(
        cluster.apps.list_namespaced_deployment,
        (cluster.namespace,),
        "dash-worker",
        lambda d: d["metadata"]["uid"] != old_uid,
        timeout=DRIFT_INTERVAL * 10,
    )
    cluster.wait_event("TopicUpdated", "dash", timeout=DRIFT_INTERVAL * 10)
    wait_topic(kafka, topic, KafkaTopic(6, 1, {"retention.ms": "3600000", **LIMIT}))
    cluster.wait_channel("dash", is_ready)


def test_kafka_outage_is_reported_and_healed_and_force_delete_releases(
    operator: OperatorProcess,
    cluster: Cluster,
    kafka: str,
    new_topic: NewTopic,
    own_stack: LocalStack,
) -> None:
    kept, blocked = new_topic("outage"), new_topic("blocked")
    cluster.apply("steady", base_spec(kafka, [{"name": kept, "partitions": 1}]))
    cluster.apply(
        "doomed",
        base_spec(kafka, [{"name": blocked, "partitions": 1, "deletionPolicy": "Delete"}]),
    )
    cluster.wait_channel("steady", is_ready)
    cluster.wait_channel("doomed", is_ready)
    try:
        stack.stop_component(own_stack.env, "kafka")
        down = cluster.wait_channel(
            "steady", lambda o: condition(o).get("reason") in KAFKA_DOWN_REASONS
        )
        assert condition(down)["status"] == "False"
        assert condition(down, "TopicsReady")["reason"] in KAFKA_DOWN_REASONS

        # Deleting a channel whose topics must go waits on Kafka, saying so ...
        own_stack.kubectl("delete", "rtc", "doomed", "-n", cluster.namespace, "--wait=false")
        held = cluster.wait_channel("doomed", reason_is("DeletionBlocked"))
        assert "realtime.clarion.dev/force-delete" in condition(held)["message"]
        # ... until the escape hatch releases it without touching Kafka.
        own_stack.kubectl(
            "annotate", "rtc", "doomed", "-n", cluster.namespace,
            "realtime.clarion.dev/force-delete=true",
        )  # fmt: skip
        cluster.wait_gone(
            cluster.custom.list_namespaced_custom_object,
            (crd.GROUP, crd.VERSION, cluster.namespace, crd.PLURAL),
            "doomed",
        )
        assert operator.alive()
    finally:
        stack.start_component(own_stack.settings, own_stack.env, "kafka")
    healed = cluster.wait_channel("steady", is_ready)
    assert condition(healed, "TopicsReady")["status"] == "True"
    assert operator.alive()
    assert describe_topic(kafka, blocked) is not None, "force-delete must not touch Kafka"
    assert 'clarion_operator_kafka_errors_total{reason="KafkaUnreachable"}' in (operator.metrics())


KAFKA_DOWN_REASONS = ("KafkaUnreachable", "KafkaError")


def test_delete_removes_delete_policy_topics_keeps_retained_and_collects_children(
    operator: OperatorProcess, cluster: Cluster, kafka: str, new_topic: NewTopic
) -> None:
    keep, drop = new_topic("retain"), new_topic("delete")
    cluster.apply(
        "dash",
        base_spec(
            kafka,
            [
                {"name": keep, "partitions": 1},
                {"name": drop, "partitions": 1, "deletionPolicy": "Delete"},
            ],
        ),
    )
    cluster.wait_channel("dash", is_ready)
    assert describe_topic(kafka, drop) is not None

    cluster.stack.kubectl("delete", "rtc", "dash", "-n", cluster.namespace, "--timeout=180s")
    wait_kafka(lambda: describe_topic(kafka, drop) is None, f"{drop} deleted")
    assert describe_topic(kafka, keep) is not None
    cluster.wait_event("TopicDeleted", "dash")
    for list_fn in (
        cluster.apps.list_namespaced_deployment,
        k8s.CoreV1Api(cluster.api).list_namespaced_config_map,
        k8s.CoreV1Api(cluster.api).list_namespaced_service,
    ):
        cluster.wait_gone(list_fn, (cluster.namespace,), "dash-worker")


def test_invalid_resources_are_refused_or_reported(
    operator: OperatorProcess, cluster: Cluster, kafka: str
) -> None:
    def refused(name: str, spec: dict[str, Any]) -> str:
        body = {
            "apiVersion": crd.API_VERSION,
            "kind": crd.KIND,
            "metadata": {"name": name, "namespace": cluster.namespace},
            "spec": spec,
        }
        return cluster.stack.kubectl(
            "apply", "--server-side", "-f", "-", stdin=json.dumps(body), check=False
        )

    # Schema: bounds.
    message = refused("bad-partitions", base_spec(kafka, [{"name": "x", "partitions": 0}]))
    assert "spec.topics[0].partitions" in message
    assert "should be greater than or equal to 1" in message
    # CEL: cross-field rule.
    message = refused(
        "bad-autoscaling",
        base_spec(
            kafka,
            [{"name": "x"}],
            workers={"autoscaling": {"minReplicas": 3, "maxReplicas": 2}},
        ),
    )
    assert "minReplicas must not exceed maxReplicas" in message
    # What the operator would refuse is refused at admission too (the admission property
    # test in test_spec_admission_property.py checks it on generated specs); the operator's
    # own InvalidSpec path, for objects stored before a rule existed, is unit-tested.
    message = refused("dots", base_spec(kafka, [{"name": ".."}]))
    assert "'.' and '..' are not topic names" in message
    limits = {"limits": {"batchMaxEvents": 2000}}
    message = refused("bad-limits", base_spec(kafka, [{"name": "x"}], workers=limits))
    assert "batchMaxEvents must not exceed queueMaxEvents" in message


def test_restart_resumes_without_redoing_work(
    operator: OperatorProcess, cluster: Cluster, kafka: str, new_topic: NewTopic
) -> None:
    topic = new_topic("resume")
    cluster.apply("dash", base_spec(kafka, [{"name": topic, "config": {"flush.ms": "1000"}}]))
    cluster.wait_channel("dash", is_ready)

    def snapshot() -> dict[str, Any]:
        out: dict[str, Any] = {"status": cluster.channel("dash")["status"]}
        out["status"].pop("kopf", None)
        for kind in ("deployment", "service", "configmap", "pdb"):
            meta = kubectl_json(cluster.stack, "get", kind, "dash-worker", "-n", cluster.namespace)
            out[kind] = (meta["metadata"]["resourceVersion"], meta["metadata"]["managedFields"])
        out["replicasets"] = sorted(
            rs["metadata"]["name"]
            for rs in kubectl_json(cluster.stack, "get", "replicasets", "-n", cluster.namespace)[
                "items"
            ]
        )
        out["topic"] = describe_topic(kafka, topic)
        return out

    before = snapshot()
    operator.stop()
    operator.start()

    def resumed() -> bool:
        text = operator.metrics()
        return 'result="success",trigger="handler"' in text and 'trigger="timer"' in text

    deadline = time.monotonic() + 30
    while not resumed():
        assert time.monotonic() < deadline, "the restarted operator did not resume"
        time.sleep(0.3)
    assert snapshot() == before


def test_two_channels_claiming_one_topic_the_younger_gets_resource_conflict(
    operator: OperatorProcess, cluster: Cluster, kafka: str, new_topic: NewTopic
) -> None:
    topic = new_topic("shared")
    cluster.apply("older", base_spec(kafka, [{"name": topic, "partitions": 1}]))
    cluster.wait_channel("older", is_ready)
    # creationTimestamp has whole seconds: two channels created in the same second are
    # told apart by uid, at random. The operator is fast enough now to make "older"
    # Ready within its own second, so "younger" waits for the clock to move on.
    created = datetime.fromisoformat(cluster.channel("older")["metadata"]["creationTimestamp"])
    while datetime.now(UTC) < created + timedelta(seconds=1):
        time.sleep(0.05)
    cluster.apply("younger", base_spec(kafka, [{"name": topic, "partitions": 2}]))
    conflict = cluster.wait_channel("younger", reason_is("ResourceConflict"))
    assert "older" in condition(conflict, "TopicsReady")["message"]
    assert is_ready(cluster.channel("older"))
    wait_topic(kafka, topic, KafkaTopic(1, 1, LIMIT))


def test_a_failing_worker_pod_shows_on_the_channel_with_its_message(
    operator: OperatorProcess,
    cluster: Cluster,
    kafka: str,
    new_topic: NewTopic,
    kube_api: k8s.ApiClient,
) -> None:
    """A worker refusing its settings crash-loops; the channel says so, in its words.

    KWOK runs no container, so the pod status a kubelet would write for a worker that
    exits 2 at start-up (its message in lastState.terminated, thanks to the template's
    terminationMessagePolicy) is written through the API here."""
    topic = new_topic("crash")
    said = "settings refused: workers.limits.queueMaxEvents (10) < batchMaxEvents (64)"
    core = k8s.CoreV1Api(kube_api)
    cluster.apply("dash", base_spec(kafka, [{"name": topic, "partitions": 1}]))
    channel = cluster.wait_channel("dash", is_ready)
    selector = channel["status"]["selector"]
    [pod] = core.list_namespaced_pod(cluster.namespace, label_selector=selector).items
    assert pod.metadata is not None
    assert pod.metadata.name is not None
    template = kubectl_json(
        cluster.stack, "get", "deployment", "dash-worker", "-n", cluster.namespace
    )
    [container] = template["spec"]["template"]["spec"]["containers"]
    assert container["terminationMessagePolicy"] == "FallbackToLogsOnError"
    crash_loop = {
        "status": {
            "conditions": [
                {"type": "Ready", "status": "False", "reason": "ContainersNotReady"},
                {"type": "ContainersReady", "status": "False"},
                {"type": "PodScheduled", "status": "True"},
            ],
            "containerStatuses": [
                {
                    "name": "worker",
                    "image": container["image"],
                    "imageID": "",
                    "ready": False,
                    "started": False,
                    "restartCount": 3,
                    "state": {"waiting": {"reason": "CrashLoopBackOff"}},
                    "lastState": {
                        "terminated": {"exitCode": 2, "reason": "Error", "message": said}
                    },
                }
            ],
        }
    }
    core.patch_namespaced_pod_status(pod.metadata.name, cluster.namespace, crash_loop)
    failing = cluster.wait_channel("dash", reason_is("WorkersFailing"))
    assert condition(failing)["status"] == "False"
    assert said in condition(failing)["message"]
    assert pod.metadata.name in condition(failing, "WorkersReady")["message"]
    event = cluster.wait_event("WorkersFailing", "dash")
    assert event["type"] == "Warning"
    assert said in event["message"]

    # The pod replaced (the spec fixed, a new pod started): Ready again, by the watch.
    core.delete_namespaced_pod(pod.metadata.name, cluster.namespace, grace_period_seconds=0)
    cluster.wait_channel("dash", is_ready)


# --- control-plane and broker faults ---------------------------------------------------
#
# These stop the API server, etcd or Kafka, so they ask for ``own_stack`` (the pytest
# plugin's): they run only on a private stack (``CLARION_STATE_DIR=<a fresh folder>``) or
# on one this run started (``make test`` without ``make env-up``), alone.

#: Outage held in the tests (the 30 and 90 s ones run as ``bench/recovery.py``).
OUTAGE = 20.0
#: The issue's target: every channel Ready within this many seconds of the component being
#: back. It is a figure, so ``bench/recovery.py`` measures it on a quiet machine; these
#: tests record it (``record_property``) and print it.
RECOVERY_TARGET = 10.0
#: What the tests assert: recovery by the operator's watches and short retries, not by a
#: long retry (the defect this guards against came back after 88 to 120 s). A loaded CI
#: machine, whose controller-manager, kubelet and KWOK all relist at once after an outage,
#: has taken 16 s for what takes 0.3 s on a quiet one.
RECOVERY_BOUND = 3 * RECOVERY_TARGET


@pytest.fixture
def slow_drift_operator(
    own_stack: LocalStack, namespace: str, crd_installed: None
) -> Iterator[OperatorProcess]:
    """An operator whose drift check comes seldom, so a failed one shows."""
    with running_operator(own_stack, namespace, drift_interval=20) as process:
        yield process


def api_ready(stack: LocalStack) -> bool:
    return stack.kubectl("get", "--raw", "/readyz", check=False).strip() == "ok"


def wait_api(stack: LocalStack, up: bool, timeout: float = 120) -> float:
    """Until /readyz answers ok (or, with ``up=False``, stops doing so); when it did."""
    deadline = time.monotonic() + timeout
    while api_ready(stack) is not up:
        assert time.monotonic() < deadline, f"API server {'up' if up else 'down'}: timeout"
        time.sleep(0.1)
    return time.monotonic()


def wait_log(process: OperatorProcess, text: str, timeout: float = 30) -> dict[str, Any]:
    """The operator's log has no watch: read it until a line contains ``text``."""
    deadline = time.monotonic() + timeout
    while True:
        for line in process.log_lines():
            if text in str(line.get("message")):
                return line
        assert time.monotonic() < deadline, f"no log line with {text!r} in {timeout} s"
        time.sleep(0.2)


def hold(since: float, seconds: float) -> None:
    """Keep a component down until ``seconds`` after ``since`` (the outage's length)."""
    time.sleep(max(0.0, since + seconds - time.monotonic()))


def all_ready(cluster: Cluster, names: list[str], since: float) -> float:
    """Seconds from ``since`` until every channel was seen Ready (current generation)."""
    return all_seen(cluster, names, is_ready, since)


def all_seen(
    cluster: Cluster, names: list[str], predicate: Callable[[dict[str, Any]], bool], since: float
) -> float:
    for name in names:
        cluster.wait_channel(name, predicate, timeout=150)
    return time.monotonic() - since


@dataclass(frozen=True)
class Outage:
    """What the fault tests share: their own stack, and where they record figures."""

    stack: LocalStack
    record: Callable[[str, object], None]

    def of_api(self, operator: OperatorProcess, component: str) -> float:
        """Stop ``component`` (the API server or etcd) for ``OUTAGE`` seconds, the operator
        warning meanwhile that the Kubernetes API is unavailable; when /readyz is ok again."""
        stack.stop_component(self.stack.env, component)
        down = time.monotonic()
        try:
            unavailable = wait_log(operator, "Kubernetes API unavailable")
            assert unavailable["severity"] == "warn"
            hold(down, OUTAGE)
        finally:
            stack.start_component(self.stack.settings, self.stack.env, component)
        return wait_api(self.stack, up=True)

    def of_kafka(self) -> float:
        """Stop the Kafka broker for ``OUTAGE`` seconds; when it is ready again."""
        stack.stop_component(self.stack.env, "kafka")
        down = time.monotonic()
        try:
            hold(down, OUTAGE)
        finally:
            stack.start_component(self.stack.settings, self.stack.env, "kafka")
        return time.monotonic()

    def recovered(
        self, cluster: Cluster, names: list[str], back: float, prefix: str
    ) -> tuple[float, float]:
        """Seconds from ``back`` until every channel was reconciled (the operator's part:
        children applied, status written), then Ready (which also needs the
        controller-manager and KWOK to roll the Deployments out after their own reconnect,
        0.2 to 60 s here, whatever the operator does); recorded as
        ``<prefix>_reconciled_seconds`` and ``<prefix>_ready_seconds``."""
        recovery = all_seen(cluster, names, reconciled, back)
        ready = all_ready(cluster, names, back)
        self.record(f"{prefix}_reconciled_seconds", round(recovery, 2))
        self.record(f"{prefix}_ready_seconds", round(ready, 2))
        return recovery, ready


@pytest.fixture
def outage(own_stack: LocalStack, record_property: Callable[[str, object], None]) -> Outage:
    return Outage(own_stack, record_property)


def reconciled(obj: Mapping[str, Any]) -> bool:
    """The operator reconciled the current generation without an API error: topics in sync,
    every child applied, the Deployment read (the rollout itself is the cluster's part)."""
    generation = obj["metadata"]["generation"]
    topics, workers = condition(obj, "TopicsReady"), condition(obj, "WorkersReady")
    return (
        topics.get("status") == "True"
        and topics.get("observedGeneration") == generation
        and workers.get("reason") in ("WorkersReady", "WorkersProgressing")
    )


def errors_logged(process: OperatorProcess) -> list[dict[str, Any]]:
    return [line for line in process.log_lines() if line.get("severity") in ("error", "critical")]


def channel_events(cluster: Cluster, name: str) -> list[tuple[str, str]]:
    core = k8s.CoreV1Api(cluster.api)
    listed = core.list_namespaced_event(
        cluster.namespace, field_selector=f"involvedObject.name={name}"
    )
    return [(str(e.reason), str(e.message)) for e in listed.items]


_TOPIC_EVENTS = ("TopicCreated", "TopicAdopted")


def channel_events_with_its_topic(
    cluster: Cluster, name: str, within: float = 30.0
) -> list[tuple[str, str]]:
    """The channel's Events once its topic's (created or adopted) is among them, or as
    they are after ``within`` s. The operator posts a transition's Events in a task of
    its own, after writing the status that shows it: a channel can be Ready a moment
    before its Events are listed, as a user running `kubectl get events` would see."""
    deadline = time.monotonic() + within
    while True:
        events = channel_events(cluster, name)
        if any(reason in _TOPIC_EVENTS for reason, _ in events) or time.monotonic() > deadline:
            return events
        time.sleep(0.5)


def test_api_server_killed_mid_create_all_reconciled_soon_after_its_return(
    outage: Outage, operator: OperatorProcess, cluster: Cluster, kafka: str, new_topic: NewTopic
) -> None:
    names = [f"c{i}" for i in range(4)]
    topics = {name: new_topic(name) for name in names}
    for name in names:
        cluster.apply(name, base_spec(kafka, [{"name": topics[name], "deletionPolicy": "Delete"}]))
    back = outage.of_api(operator, "kube-apiserver")  # in the middle of the creates
    recovery, ready = outage.recovered(cluster, names, back, "api_outage")
    print(
        f"API server down {OUTAGE:.0f} s: all {len(names)} reconciled {recovery:.2f} s "
        f"and Ready {ready:.2f} s after its return"
    )
    assert recovery <= RECOVERY_BOUND
    assert wait_log(operator, "Kubernetes API available again")["severity"] == "info"
    assert operator.alive()
    assert not errors_logged(operator), errors_logged(operator)
    for name in names:
        events = channel_events_with_its_topic(cluster, name)
        topic_events = [e for e in events if e[0] in _TOPIC_EVENTS]
        assert len(topic_events) == 1, events  # neither lost nor posted twice
        assert len(events) == len(set(events)), events
        assert "WorkersUnavailable" not in {reason for reason, _ in events}, events


def test_etcd_killed_under_an_idle_operator_is_logged_and_recovered(
    outage: Outage, operator: OperatorProcess, cluster: Cluster, kafka: str, new_topic: NewTopic
) -> None:
    idle, fresh = new_topic("idle"), new_topic("fresh")
    cluster.apply("idle", base_spec(kafka, [{"name": idle}]))
    cluster.wait_channel("idle", is_ready)
    wait_log(operator, "Ready=True")  # settled: nothing is being retried now
    # Nothing to reconcile, yet the operator notices and says so, once.
    back = outage.of_api(operator, "etcd")
    cluster.apply("fresh", base_spec(kafka, [{"name": fresh}]))
    recovery, ready = outage.recovered(cluster, ["idle", "fresh"], back, "etcd_outage")
    print(
        f"etcd down {OUTAGE:.0f} s: a new channel reconciled {recovery:.2f} s and Ready "
        f"{ready:.2f} s after its return"
    )
    assert recovery <= RECOVERY_BOUND
    assert len([ln for ln in operator.log_lines() if "API unavailable" in ln["message"]]) == 1
    assert operator.alive()
    assert not errors_logged(operator), errors_logged(operator)


def test_kafka_stopped_mid_create_all_ready_soon_after_its_return(
    outage: Outage, operator: OperatorProcess, cluster: Cluster, kafka: str, new_topic: NewTopic
) -> None:
    """Creates that meet the broker as it goes are refused as unreachable, or (when it
    answers while no broker is registered any more) with InvalidReplicationFactor: both
    are retried within seconds, not after the 120 s of a factor the cluster cannot honour
    (which of the two a run meets depends on timing; tests/operator/core/test_core_errors.py
    pins the classification). A create whose answer was lost is adopted afterwards."""
    names = [f"k{i}" for i in range(3)]
    for name in names:
        topic = {"name": new_topic(name), "replicationFactor": 1, "deletionPolicy": "Delete"}
        cluster.apply(name, base_spec(kafka, [topic]))
    back = outage.of_kafka()  # in the middle of the creates
    recovery, ready = outage.recovered(cluster, names, back, "kafka_outage")
    print(
        f"Kafka down {OUTAGE:.0f} s: all {len(names)} reconciled {recovery:.2f} s "
        f"and Ready {ready:.2f} s after its return"
    )
    assert ready <= RECOVERY_BOUND
    assert operator.alive()
    assert not errors_logged(operator), errors_logged(operator)
    for name in names:
        events = channel_events_with_its_topic(cluster, name)
        topic_events = [e for e in events if e[0] in _TOPIC_EVENTS]
        assert len(topic_events) == 1, events


def test_kafka_frozen_during_a_drift_check_ready_soon_after_its_return(
    outage: Outage,
    slow_drift_operator: OperatorProcess,
    cluster: Cluster,
    kafka: str,
    new_topic: NewTopic,
) -> None:
    topic = new_topic("frozen")
    pid = outage.stack.env["components"]["kafka"]["pid"]
    cluster.apply("dash", base_spec(kafka, [{"name": topic}]))
    cluster.wait_channel("dash", is_ready)
    os.kill(pid, signal.SIGSTOP)
    try:
        # The next drift check (every 20 s) times out on the frozen broker.
        cluster.wait_channel(
            "dash", lambda o: condition(o).get("reason") in KAFKA_DOWN_REASONS, timeout=60
        )
    finally:
        os.kill(pid, signal.SIGCONT)
    back = time.monotonic()
    recovery = all_ready(cluster, ["dash"], back)
    outage.record("kafka_freeze_recovery_seconds", round(recovery, 2))
    print(f"Kafka frozen through a drift check: Ready {recovery:.2f} s after it thawed")
    assert recovery <= RECOVERY_BOUND
    assert not errors_logged(slow_drift_operator), errors_logged(slow_drift_operator)


def test_ready_follows_the_rollout_within_seconds(
    operator: OperatorProcess, cluster: Cluster, kafka: str, new_topic: NewTopic
) -> None:
    """Ready comes from watching the Deployment, not from polling it: scaling the workers
    (a new rollout state the reconcile did not cause) shows on the channel at once."""
    topic = new_topic("follow")
    cluster.apply("dash", base_spec(kafka, [{"name": topic, "partitions": 1}]))
    cluster.wait_channel("dash", is_ready)
    # The Deployment scaled to 3 by hand: no reconcile reads that (the drift check puts
    # 1 back, then reads 1), only the watch of the Deployment sees desired 3.
    cluster.stack.kubectl(
        "scale", "deployment", "dash-worker", "-n", cluster.namespace, "--replicas=3"
    )
    seen = cluster.wait_channel(
        "dash", lambda o: ((o.get("status") or {}).get("workers") or {}).get("desired") == 3
    )
    assert seen["status"]["workersSummary"].endswith("/3")
    cluster.wait_channel("dash", is_ready)
