"""Fixtures for the client libraries' tests: the conformance control server.

``conformance_control`` is the URL of one control server
(``python -m clarion_devstack.conformance serve``) on the local stack's Kafka, shared by
the Python runner and the TypeScript and Kotlin wrappers (they hand it to their suites
as ``CLARION_CONFORMANCE_CONTROL``). It is stopped with SIGTERM at the end of the session,
which stops its workers.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from clarion_devstack.pytest_plugin import LocalStack


@pytest.fixture(scope="session")
def conformance_control(
    local_stack: LocalStack, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    given = os.environ.get("CLARION_CONFORMANCE_CONTROL")  # noqa: TID251 - test-process edge
    if given:
        yield given
        return
    work = tmp_path_factory.mktemp("conformance")
    ready = work / "ready.json"
    log = work / "control.log"
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
                str(work),
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 30
        # Another process's file: nothing to await but its appearance.
        while not ready.exists():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"control server did not start: {log.read_text()[-2000:]}")
            time.sleep(0.05)
        yield str(json.loads(ready.read_text())["control"])
    finally:
        proc.terminate()
        try:
            assert proc.wait(timeout=30) == 0, f"control server: {log.read_text()[-2000:]}"
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
