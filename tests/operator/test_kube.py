"""The Kubernetes port: blocking client calls run in the operator's own thread pool."""

from __future__ import annotations

import json
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from clarion_operator.core.render import ObjectRef
from clarion_operator.kube import KubeClient


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
