"""The Kubernetes port: blocking client calls run in the operator's own thread pool."""

from __future__ import annotations

import json
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from clarion_operator.core.render import ObjectRef
from clarion_operator.kube import KubeClient
from clarion_operator.ports import EventPost


class _Response:
    status = 200
    reason = "OK"

    def __init__(self, body: dict[str, Any]) -> None:
        self._data = json.dumps(body).encode()

    def read(self) -> bytes:
        return self._data


class FakeApiClient:
    """Just the two calls KubeClient makes; records the thread each request ran in."""

    def __init__(self) -> None:
        self.threads: list[str] = []

    def param_serialize(self, **kw: Any) -> tuple[str, str, dict[str, str], Any, Any]:
        return kw["method"], kw["resource_path"], kw["header_params"], kw["body"], None

    def call_api(self, method: str, url: str, **_: Any) -> _Response:
        self.threads.append(threading.current_thread().name)
        return _Response({"kind": "Deployment", "metadata": {"name": url.rsplit("/", 1)[-1]}})


async def test_calls_run_in_the_given_pool() -> None:
    api = FakeApiClient()
    with ThreadPoolExecutor(2, thread_name_prefix="kube-api") as pool:
        kube = KubeClient(api, field_manager="fm", executor=pool)  # type: ignore[arg-type]
        got = await kube.get(ObjectRef("apps/v1", "Deployment", "ns", "dash-worker"))
    assert got == {"kind": "Deployment", "metadata": {"name": "dash-worker"}}
    assert len(api.threads) == 1
    assert api.threads[0].startswith("kube-api")


class _Answer:
    def __init__(self, status: int, body: bytes) -> None:
        self.status, self.reason, self._body = status, "x", body

    def read(self) -> bytes:
        return self._body


class ScriptedApiClient(FakeApiClient):
    """Answers each request with the next scripted (status, body); records the requests."""

    def __init__(self, answers: list[tuple[int, bytes]]) -> None:
        super().__init__()
        self.answers = answers
        self.requests: list[tuple[str, str, Any]] = []

    def param_serialize(self, **kw: Any) -> tuple[str, str, dict[str, str], Any, Any]:
        self.requests.append((kw["method"], kw["resource_path"], kw["body"]))
        return super().param_serialize(**kw)

    def call_api(self, method: str, url: str, **_: Any) -> _Answer:  # type: ignore[override]
        return _Answer(*self.answers.pop(0))


async def test_an_event_already_stored_is_success_and_keeps_its_name() -> None:
    conflict = json.dumps({"kind": "Status", "message": "already exists"}).encode()
    api = ScriptedApiClient([(409, conflict)])
    kube = KubeClient(api, field_manager="fm")  # type: ignore[arg-type]
    channel = ObjectRef("realtime.clarion.dev/v1alpha1", "RealtimeChannel", "ns", "dash")
    await kube.post_event(EventPost("dash.0123", channel, "u1", "Normal", "Reconciled", "ok"))
    [(method, path, body)] = api.requests
    assert (method, path) == ("POST", "/api/v1/namespaces/ns/events")
    assert body["metadata"] == {"name": "dash.0123", "namespace": "ns"}
    assert body["involvedObject"]["uid"] == "u1"


async def test_status_is_a_merge_patch_of_the_status_subresource() -> None:
    api = ScriptedApiClient([(200, b"{}")])
    kube = KubeClient(api, field_manager="fm")  # type: ignore[arg-type]
    channel = ObjectRef("realtime.clarion.dev/v1alpha1", "RealtimeChannel", "ns", "dash")
    await kube.patch_status(channel, {"replicas": 2})
    [(method, path, body)] = api.requests
    assert method == "PATCH"
    assert path == "/apis/realtime.clarion.dev/v1alpha1/namespaces/ns/realtimechannels/dash/status"
    assert body == {"status": {"replicas": 2}}


async def test_probe_names_the_failed_readiness_checks() -> None:
    text = b"[+]ping ok\n[+]log ok\n[-]etcd failed: reason withheld\n" + b"[+]x ok\n" * 80
    api = ScriptedApiClient(
        [(500, text + b"[-]etcd-readiness failed: reason withheld\n"), (200, b"ok")]
    )
    kube = KubeClient(api, field_manager="fm")  # type: ignore[arg-type]
    assert await kube.probe() == (
        "500: etcd failed: reason withheld; etcd-readiness failed: reason withheld"
    )
    assert await kube.probe() is None
