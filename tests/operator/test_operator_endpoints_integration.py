"""The operator process against the real API server and Kafka (issue 12, items 13-14):
/readyz answers 200 once kopf has started and the process metrics are served, and a channel
asking for a ServiceMonitor on a cluster without the prometheus-operator CRDs gets
Monitored=False ServiceMonitorUnavailable and a Warning Event, and stays Ready."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import client as k8s
from kubernetes import watch

from clarion_devstack.procs import free_port, stop_popen
from clarion_devstack.pytest_plugin import LocalStack
from clarion_operator.core import crd

pytestmark = pytest.mark.integration
WAIT = 90.0


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=2) as answer:
            return int(answer.status), answer.read().decode()
    except urllib.error.HTTPError as err:
        with err:
            return err.code, ""


@pytest.fixture
def operator(local_stack: LocalStack, namespace: str, crd_installed: None) -> Iterator[int]:
    """``python -m clarion_operator`` watching ``namespace``; yields its metrics port."""
    metrics, liveness = free_port(), free_port()
    log = local_stack.logs_dir / f"operator-endpoints-{namespace}.log"
    env = {**os.environ, "KUBECONFIG": str(local_stack.kubeconfig)}  # noqa: TID251
    argv = [
        sys.executable, "-m", "clarion_operator", "--standalone", "--namespace", namespace,
        "--metrics-port", str(metrics), "--liveness-port", str(liveness),
        "--kafka-request-timeout-ms", "3000",
    ]  # fmt: skip
    with log.open("ab") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env)
    try:
        yield metrics
    finally:
        names = local_stack.kubectl("get", "rtc", "-n", namespace, "-o", "name", check=False)
        for name in names.split():
            local_stack.kubectl("delete", name, "-n", namespace, "--timeout=30s", check=False)
        stop_popen(proc, grace=20)


def _wait_ready(port: int) -> None:
    deadline = time.monotonic() + 30
    statuses = []
    while time.monotonic() < deadline:
        try:
            status, _ = _get(f"http://127.0.0.1:{port}/readyz")
        except OSError:
            status = 0  # not listening yet
        statuses.append(status)
        if status == 200:
            return
        time.sleep(0.1)  # polling an endpoint that has no watch; bounded by the deadline
    raise AssertionError(f"/readyz never answered 200: {sorted(set(statuses))}")


def _apply_channel(
    stack: LocalStack, namespace: str, name: str, kafka: str, topic: str, **spec: Any
) -> None:
    """Channel ``name``: one topic (deleted with it), no auth, and ``spec``'s sections."""
    body = {
        "apiVersion": crd.API_VERSION,
        "kind": crd.KIND,
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "kafka": {"bootstrapServers": kafka},
            "topics": [{"name": topic, "deletionPolicy": "Delete"}],
            "auth": {"mode": "none"},
            **spec,
        },
    }
    stack.kubectl("apply", "--server-side", "-f", "-", stdin=json.dumps(body))


def test_readiness_and_process_metrics(operator: int) -> None:
    _wait_ready(operator)
    status, text = _get(f"http://127.0.0.1:{operator}/metrics")
    assert status == 200
    assert "process_open_fds " in text
    assert "process_resident_memory_bytes " in text


def _monitoring_served(api: k8s.ApiClient) -> bool:
    groups = k8s.ApisApi(api).get_api_versions().groups
    return any(g.name == "monitoring.coreos.com" for g in groups)


def test_service_monitor_without_its_crd_is_reported(
    operator: int, local_stack: LocalStack, kube_api: k8s.ApiClient, kafka_bootstrap: str,
    namespace: str, unique_name: Any,
) -> None:  # fmt: skip
    if _monitoring_served(kube_api):
        pytest.skip("another test has installed monitoring.coreos.com CRDs on the shared stack")
    _wait_ready(operator)
    name = "monitored"
    _apply_channel(
        local_stack, namespace, name, kafka_bootstrap, unique_name("mon"),
        workers={"replicas": 1}, monitoring={"serviceMonitor": {"enabled": True}},
    )  # fmt: skip
    custom = k8s.CustomObjectsApi(kube_api)
    args = (crd.GROUP, crd.VERSION, namespace, crd.PLURAL)
    found: dict[str, Any] = {}
    stream = watch.Watch()
    for event in stream.stream(
        custom.list_namespaced_custom_object, *args, timeout_seconds=int(WAIT)
    ):
        obj = event["object"]
        if obj["metadata"]["name"] != name:
            continue
        conditions = {c["type"]: c for c in (obj.get("status") or {}).get("conditions") or []}
        if conditions.get("Ready", {}).get("status") == "True" and "Monitored" in conditions:
            found = conditions
            stream.stop()
    assert found, "the channel never became Ready with a Monitored condition"
    assert found["Monitored"]["status"] == "False"
    assert found["Monitored"]["reason"] == "ServiceMonitorUnavailable"
    # Events are posted after the status they describe: wait for it.
    core = k8s.CoreV1Api(kube_api)
    selector = f"involvedObject.name={name},reason=ServiceMonitorUnavailable"
    posted: list[str] = []
    for event in watch.Watch().stream(
        core.list_namespaced_event, namespace, field_selector=selector, timeout_seconds=30
    ):
        posted.append(event["object"].type)
        break
    assert posted == ["Warning"]
    pods = local_stack.kubectl("get", "deploy", f"{name}-worker", "-n", namespace, "-o", "json")
    annotations = json.loads(pods)["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"


def test_autoscaled_channel_is_not_ready_below_min_replicas(
    operator: int, local_stack: LocalStack, kube_api: k8s.ApiClient, kafka_bootstrap: str,
    namespace: str, unique_name: Any,
) -> None:  # fmt: skip
    """The Deployment starts at 1 replica and the controller-manager's HPA raises it to
    minReplicas on its next sync: the channel must not say Ready 1/1 in between."""
    _wait_ready(operator)
    name = "scaled"
    autoscaled = {
        "autoscaling": {"minReplicas": 3, "maxReplicas": 5},
        "resources": {"requests": {"cpu": "100m"}},
    }
    _apply_channel(
        local_stack, namespace, name, kafka_bootstrap, unique_name("scaled"), workers=autoscaled
    )
    custom = k8s.CustomObjectsApi(kube_api)
    args = (crd.GROUP, crd.VERSION, namespace, crd.PLURAL)
    first_ready: dict[str, Any] = {}
    seen: list[str] = []
    stream = watch.Watch()
    for event in stream.stream(
        custom.list_namespaced_custom_object, *args, timeout_seconds=int(WAIT)
    ):
        obj = event["object"]
        status = obj.get("status") or {}
        if obj["metadata"]["name"] != name or "workersSummary" not in status:
            continue
        seen.append(status["workersSummary"])
        ready = [c for c in status.get("conditions") or [] if c["type"] == "Ready"]
        if ready and ready[0]["status"] == "True":
            first_ready = status
            stream.stop()
    assert first_ready, f"never Ready; workers seen: {seen}"
    assert first_ready["workers"]["ready"] >= 3, first_ready["workers"]
    assert first_ready["workersSummary"] == "3/3", seen
