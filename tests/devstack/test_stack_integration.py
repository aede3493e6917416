"""Smoke tests proving that the local stack is the real thing: a Kafka broker and a
Kubernetes control plane that validates, schedules, runs (through KWOK) and
garbage-collects."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewPartitions, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from kubernetes import client as k8s
from kubernetes import watch

from clarion_devstack import versions
from clarion_devstack.crds import crd_document, wait_established
from clarion_devstack.pytest_plugin import LocalStack

pytestmark = pytest.mark.integration


def test_api_server_is_ready_and_reports_the_pinned_version(local_stack: LocalStack) -> None:
    assert local_stack.kubectl("get", "--raw", "/readyz").strip() == "ok"
    version = json.loads(local_stack.kubectl("version", "-o", "json"))
    assert version["serverVersion"]["gitVersion"] == f"v{versions.KUBERNETES}"
    assert version["clientVersion"]["gitVersion"] == f"v{versions.KUBERNETES}"


def test_broker_is_apache_kafka_of_the_pinned_version(local_stack: LocalStack) -> None:
    assert local_stack.env["kafka_version"] == versions.KAFKA


@pytest.fixture
async def admin(kafka_bootstrap: str) -> AsyncIterator[AIOKafkaAdminClient]:
    """An admin client of the stack's broker, started, closed after the test."""
    client = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await client.start()
    try:
        yield client
    finally:
        await client.close()


async def test_produce_and_consume_a_record(
    kafka_bootstrap: str, admin: AIOKafkaAdminClient, unique_name: Callable[[str], str]
) -> None:
    topic = unique_name("smoke")
    await admin.create_topics([NewTopic(topic, 1, 1)])
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap)
    await producer.start()
    try:
        sent = await producer.send_and_wait(
            topic, b'{"type":"PING"}', key=b"org-1", headers=[("org", b"org-1")]
        )
    finally:
        await producer.stop()
    consumer = AIOKafkaConsumer(bootstrap_servers=kafka_bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        tp = TopicPartition(topic, sent.partition)
        consumer.assign([tp])
        consumer.seek(tp, sent.offset)
        record = await asyncio.wait_for(consumer.getone(), timeout=30)
    finally:
        await consumer.stop()
    assert (record.key, record.value, record.offset) == (b"org-1", b'{"type":"PING"}', sent.offset)
    assert tuple(record.headers) == (("org", b"org-1"),)


async def test_admin_creates_alters_and_describes_a_topic(
    admin: AIOKafkaAdminClient, unique_name: Callable[[str], str]
) -> None:
    topic = unique_name("admin")
    try:
        created = await admin.create_topics(
            [NewTopic(topic, 2, 1, topic_configs={"retention.ms": "3600000"})]
        )
        assert created.topic_errors[0][1] == 0
        # Creating it again is reported as an error code (36), not raised: adoption relies on it.
        again = await admin.create_topics([NewTopic(topic, 2, 1)])
        assert again.topic_errors[0][1] == 36

        await admin.create_partitions({topic: NewPartitions(4)})
        await admin.alter_configs(
            [ConfigResource(ConfigResourceType.TOPIC, topic, configs={"retention.ms": "7200000"})]
        )
        # The broker applies new partitions and configs asynchronously (through the
        # metadata log); Kafka offers nothing to await, so poll until they show.
        async with asyncio.timeout(30):
            while True:
                [described] = await admin.describe_topics([topic])
                [configs] = await admin.describe_configs(
                    [ConfigResource(ConfigResourceType.TOPIC, topic)]
                )
                entries = {entry[0]: entry for entry in configs.resources[0][4]}
                if len(described["partitions"]) == 4 and entries["retention.ms"][1] == "7200000":
                    break
                await asyncio.sleep(0.1)
        assert entries["retention.ms"][3] == 1  # source: DYNAMIC_TOPIC_CONFIG
        assert topic in await admin.list_topics()
    finally:
        await admin.delete_topics([topic])


_CRD = crd_document(
    "smoke.clarion.test",
    "Widget",
    "widgets",
    {
        "type": "object",
        "properties": {
            "spec": {
                "type": "object",
                "required": ["size"],
                "properties": {"size": {"type": "integer", "minimum": 1, "maximum": 10}},
            }
        },
    },
)


def _widget(name: str, size: object) -> str:
    return json.dumps(
        {
            "apiVersion": "smoke.clarion.test/v1",
            "kind": "Widget",
            "metadata": {"name": name},
            "spec": {"size": size},
        }
    )


def test_crd_and_custom_resource_apply_server_side_and_schema_rejects_invalid(
    local_stack: LocalStack, namespace: str
) -> None:
    apply = ("apply", "--server-side", "--field-manager=clarion-smoke", "-f", "-")
    local_stack.kubectl(*apply, stdin=json.dumps(_CRD))
    wait_established(local_stack.kubectl, ["widgets.smoke.clarion.test"])
    local_stack.kubectl(*apply, "-n", namespace, stdin=_widget("good", 3))
    stored = json.loads(
        local_stack.kubectl(
            "get", "widget", "good", "-n", namespace, "-o", "json", "--show-managed-fields"
        )
    )
    assert stored["spec"] == {"size": 3}
    assert stored["metadata"]["managedFields"][0]["manager"] == "clarion-smoke"

    refused = local_stack.kubectl(*apply, "-n", namespace, stdin=_widget("bad", 99), check=False)
    assert "spec.size" in refused
    assert "should be less than or equal to 10" in refused


def _deployment(name: str) -> k8s.V1Deployment:
    labels = {"app": name}
    return k8s.V1Deployment(
        metadata=k8s.V1ObjectMeta(name=name),
        spec=k8s.V1DeploymentSpec(
            replicas=1,
            selector=k8s.V1LabelSelector(match_labels=labels),
            template=k8s.V1PodTemplateSpec(
                metadata=k8s.V1ObjectMeta(labels=labels),
                spec=k8s.V1PodSpec(containers=[k8s.V1Container(name="app", image="busybox")]),
            ),
        ),
    )


def _pod_ready(pod: k8s.V1Pod) -> bool:
    conditions = pod.status.conditions or []
    return any(c.type == "Ready" and c.status == "True" for c in conditions)


def test_deployment_pod_becomes_ready_through_kwok(kube_api: k8s.ApiClient, namespace: str) -> None:
    k8s.AppsV1Api(kube_api).create_namespaced_deployment(namespace, _deployment("web"))
    core = k8s.CoreV1Api(kube_api)
    ready = None
    stream = watch.Watch()
    for event in stream.stream(
        core.list_namespaced_pod, namespace, label_selector="app=web", timeout_seconds=90
    ):
        if _pod_ready(event["object"]):
            ready = event["object"]
            stream.stop()
    assert ready is not None, "no Pod of the Deployment became Ready within 90 s"
    assert ready.spec.node_name == "kwok-node-0"
    assert ready.status.phase == "Running"


def test_deleting_an_owner_garbage_collects_its_owned_object(
    kube_api: k8s.ApiClient, namespace: str
) -> None:
    core = k8s.CoreV1Api(kube_api)
    owner = core.create_namespaced_config_map(
        namespace, k8s.V1ConfigMap(metadata=k8s.V1ObjectMeta(name="owner"))
    )
    ref = k8s.V1OwnerReference(
        api_version="v1", kind="ConfigMap", name="owner", uid=owner.metadata.uid
    )
    core.create_namespaced_config_map(
        namespace,
        k8s.V1ConfigMap(metadata=k8s.V1ObjectMeta(name="owned", owner_references=[ref])),
    )
    core.delete_namespaced_config_map("owner", namespace)
    selector = "metadata.name=owned"
    listed = core.list_namespaced_config_map(namespace, field_selector=selector)
    deleted = not listed.items
    stream = watch.Watch()
    events = stream.stream(
        core.list_namespaced_config_map,
        namespace,
        field_selector=selector,
        resource_version=listed.metadata.resource_version,
        timeout_seconds=60,
    )
    for event in [] if deleted else events:
        if event["type"] == "DELETED":
            deleted = True
            stream.stop()
    assert deleted, "the garbage collector did not delete the owned ConfigMap within 60 s"
