"""The TypeScript client (clients/typescript) from pytest, so ``make test`` runs it.

Installs its npm dependencies (cache outside the checkout) and builds it
(:mod:`clarion_devstack.tsclient`), runs its unit tests with Node's test runner, then
its conformance runner once per scenario of clients/conformance/scenarios against the
session's control server (real workers on the local stack). Each fails when the Node
side fails, with Node's output in the message.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from clarion_devstack import tsclient
from clarion_devstack.settings import DevstackSettings

SCENARIOS = Path(__file__).resolve().parents[2] / "clients" / "conformance" / "scenarios"


@pytest.fixture(scope="module")
def package() -> Path:
    return tsclient.ensure_built(DevstackSettings.from_environ(os.environ))  # noqa: TID251


def _node_test(package: Path, target: str, timeout: float, **env: str) -> str:
    result = subprocess.run(
        ["node", "--test", "--test-reporter=tap", target],
        cwd=package,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **env},  # noqa: TID251 - the child's environment
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"node --test {target} failed:\n{output[-8000:]}"
    return output


def _count(output: str, what: str) -> int:
    match = re.search(rf"^# {what} (\d+)$", output, re.MULTILINE)
    assert match, f"no '# {what}' line in node's report:\n{output[-3000:]}"
    return int(match.group(1))


def test_typescript_unit_tests(package: Path) -> None:
    output = _node_test(package, "test/unit/", timeout=120)
    assert _count(output, "fail") == 0
    assert _count(output, "pass") >= 20, output[-3000:]


@pytest.mark.integration
@pytest.mark.parametrize(
    "scenario", sorted(p.stem for p in SCENARIOS.glob("*.json")) or ["(no scenarios)"]
)
def test_typescript_conformance(package: Path, conformance_control: str, scenario: str) -> None:
    timeout = json.loads((SCENARIOS / f"{scenario}.json").read_text()).get("timeout", 60)
    output = _node_test(
        package,
        "test/conformance/",
        timeout=timeout + 60,
        CLARION_CONFORMANCE_CONTROL=conformance_control,
        CLARION_CONFORMANCE_ONLY=scenario,
        CLARION_PYTHON=sys.executable,
    )
    # Exactly this scenario ran and passed (not skipped, not filtered away).
    assert (_count(output, "pass"), _count(output, "fail"), _count(output, "skipped")) == (1, 0, 0)
