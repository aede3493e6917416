"""Fixtures for the client libraries' tests: the conformance control server.

``conformance_control`` is the URL of one control server
(``python -m clarion_devstack.conformance serve``) on the local stack's Kafka, shared by
the Python runner and the TypeScript and Kotlin wrappers (they hand it to their suites
as ``CLARION_CONFORMANCE_CONTROL``). It is stopped with SIGTERM at the end of the session,
which stops its workers.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from clarion_devstack import harness
from clarion_devstack.pytest_plugin import LocalStack


@pytest.fixture(scope="session")
def conformance_control(
    local_stack: LocalStack, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    given = os.environ.get("CLARION_CONFORMANCE_CONTROL")  # noqa: TID251 - test-process edge
    if given:
        yield given
        return
    server = harness.start_control_server(
        local_stack.kafka_bootstrap, tmp_path_factory.mktemp("conformance")
    )
    try:
        yield server.url
    finally:
        code = server.stop()
        assert code == 0, f"control server: {server.log.read_text()[-2000:]}"
