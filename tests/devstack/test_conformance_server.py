"""The conformance control server as runners see it: its ready file, clear errors for
requests it cannot honour, and a clean exit on SIGTERM that stops its workers."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from clarion_devstack.pytest_plugin import LocalStack

pytestmark = pytest.mark.integration


def test_control_server_answers_errors_and_stops_its_workers_on_sigterm(
    local_stack: LocalStack, tmp_path: Path
) -> None:
    ready = tmp_path / "ready.json"
    log = tmp_path / "control.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "clarion_devstack.conformance",
                "serve",
                "--ready-file",
                str(ready),
                "--kafka-bootstrap",
                local_stack.kafka_bootstrap,
                "--work-dir",
                str(tmp_path),
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 30
        # Another process's file: nothing to await but its appearance.
        while not ready.exists():
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, "no ready file in 30 s"
            time.sleep(0.05)
        control = json.loads(ready.read_text())["control"]
        assert control.startswith("http://127.0.0.1:")
        with httpx.Client(base_url=control, timeout=120) as http:
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
        proc.terminate()
        assert proc.wait(timeout=30) == 0, log.read_text()
        # Its worker went with it.
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"{replica}/readyz", timeout=5)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
