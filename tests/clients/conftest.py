"""Fixtures for the client libraries' tests: the conformance control server.

``conformance_control`` is the URL of one control server
(``python -m clarion_devstack.conformance serve``) on the local stack's Kafka, shared by
the Python runner and the TypeScript and Kotlin wrappers (they hand it to their suites
as ``CLARION_CONFORMANCE_CONTROL``). It is stopped with SIGTERM at the end of the session,
which stops its workers.

The Kotlin and TypeScript wrappers each run their client's conformance runner once, in
their module's ``conformance_run`` fixture (the runner's results file and its output), and
report every scenario from it as one test: a test that takes ``scenario`` runs once per
scenario file, and ``scenario_failure`` is what that module's run reported for it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from clarion_devstack import conformance, harness
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


def _scenario_names() -> list[str]:
    # One placeholder when there is none, so that the per-scenario test fails, not vanishes.
    return conformance.scenario_names() or ["(no scenarios)"]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "scenario" in metafunc.fixturenames:
        metafunc.parametrize("scenario", _scenario_names())


@pytest.fixture(scope="session")
def scenario_names() -> list[str]:
    """Every scenario's name, sorted: what a runner's results must name, no more, no less."""
    return _scenario_names()


@pytest.fixture(scope="module")
def conformance_results(conformance_run: tuple[Path, str]) -> dict[str, Any]:
    """The module's conformance run: ``results`` (its results file: scenario name ->
    ``{"outcome", "message"}``; empty when the runner wrote none), ``output`` (the
    runner's, starting ``exit <code>``) and ``all_passed``."""
    path, output = conformance_run
    results = json.loads(path.read_text()) if path.exists() else {}
    all_passed = all(r["outcome"] == "passed" for r in results.values())
    return {"results": results, "output": output, "all_passed": all_passed}


@pytest.fixture
def scenario_failure(conformance_results: dict[str, Any], scenario: str) -> str | None:
    """What the requesting module's conformance run reported for ``scenario``, with the tail
    of the runner's output; None when it passed."""
    failure = conformance.reported_failure(conformance_results["results"], scenario)
    return None if failure is None else f"{failure}\n{conformance_results['output'][-8000:]}"
