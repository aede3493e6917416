"""The conformance control server as runners see it: its ready file, clear errors for
requests it cannot honour, and a clean exit on SIGTERM that stops its workers."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from clarion_devstack import harness
from clarion_devstack.pytest_plugin import LocalStack

pytestmark = pytest.mark.integration


def test_control_server_answers_errors_and_stops_its_workers_on_sigterm(
    local_stack: LocalStack, tmp_path: Path
) -> None:
    server = harness.start_control_server(local_stack.kafka_bootstrap, tmp_path)
    try:
        assert server.url.startswith("http://127.0.0.1:")
        with httpx.Client(base_url=server.url, timeout=120) as http:
            early = http.post("/produce", json={"org": 1})
            assert (early.status_code, early.json()) == (
                409,
                {"error": "no session: POST /setup first"},
            )
            assert http.post("/nonsense", json={}).status_code == 404
            assert http.post("/setup", content=b"[1]").status_code == 400
            setup = http.post("/setup", json={"replicas": 1}).json()
            assert [r["name"] for r in setup["replicas"]] == ["w1"]
            replica = setup["replicas"][0]["http"]
            assert httpx.get(f"{replica}/readyz", timeout=5).status_code == 200
            produced = http.post("/produce", json={"org": 2, "other": 1, "all": 1}).json()
            assert produced == {"seqs": [1, 2, 4], "count": 3}
            # Nothing read, nothing batched: verify says so with the numbers.
            refused = http.post("/verify", json={"batchFrames": 1})
            assert refused.status_code == 409
            assert refused.json()["error"].startswith("0 batch frames sent")
        assert server.stop() == 0, server.log.read_text()
        # Its worker went with it.
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"{replica}/readyz", timeout=5)
    finally:
        server.stop()
