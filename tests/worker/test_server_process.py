"""The worker process itself, without the local stack: what it does before Kafka answers.

Kafka is "unreachable" here: the bootstrap names a port on 127.0.0.1 that nobody listens
on, so every connection attempt is refused at once and the worker keeps retrying.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class _Worker:
    def __init__(self, proc: subprocess.Popen[bytes], log: Path, port: int) -> None:
        self.proc = proc
        self.log = log
        self.port = port

    def wait_for_log(self, text: str, within: float = 20.0) -> None:
        deadline = time.monotonic() + within
        while text not in self.log.read_text(errors="replace"):
            if self.proc.poll() is not None:
                raise AssertionError(f"worker exited early: {self.log.read_text()[-2000:]}")
            if time.monotonic() > deadline:
                raise AssertionError(f"{text!r} not logged in {within} s: {self.log.read_text()}")
            time.sleep(0.05)


@pytest.fixture
def unreachable_worker(tmp_path: Path) -> Iterator[_Worker]:
    """A worker whose Kafka bootstrap refuses every connection."""
    config = tmp_path / "worker.json"
    config.write_text(
        json.dumps(
            {
                "apiVersion": "clarion.dev/worker-config/v1",
                "channel": "tests",
                "kafka": {"bootstrapServers": f"127.0.0.1:{_free_port()}"},
                "topics": [{"name": "t.approvals", "audience": "organization"}],
                "auth": {"mode": "none"},
                "drain": {"windowSeconds": 30},
            }
        )
    )
    port = _free_port()
    log = tmp_path / "worker.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLARION_")}  # noqa: TID251
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [
                *(sys.executable, "-m", "clarion_worker", "--config", str(config)),
                *("--host", "127.0.0.1", "--port", str(port)),
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**env, "CLARION_REPLICA_ID": "w-unreachable"},
        )
    worker = _Worker(proc, log, port)
    try:
        yield worker
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)


def test_sigterm_while_waiting_for_kafka_exits_promptly_and_cleanly(
    unreachable_worker: _Worker,
) -> None:
    worker = unreachable_worker
    worker.wait_for_log("Kafka not ready; retrying")
    started = time.monotonic()
    worker.proc.send_signal(signal.SIGTERM)
    try:
        code = worker.proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        raise AssertionError(
            f"SIGTERM ignored while waiting for Kafka: {worker.log.read_text()[-2000:]}"
        ) from None
    assert code == 0, worker.log.read_text()[-2000:]
    # Nothing to drain: no 30 s drain window, no grace-period kill.
    assert time.monotonic() - started < 5.0


def test_probes_answer_while_waiting_for_kafka(unreachable_worker: _Worker) -> None:
    """Alive (the process is fine) but not ready (no Kafka yet): liveness must not kill it."""
    worker = unreachable_worker
    worker.wait_for_log("Kafka not ready; retrying")
    base = f"http://127.0.0.1:{worker.port}"
    assert httpx.get(f"{base}/healthz", timeout=5).status_code == 200
    ready = httpx.get(f"{base}/readyz", timeout=5)
    assert ready.status_code == 503
    assert "consumer not assigned yet" in ready.text
