"""The Kotlin client (clients/kotlin) from pytest, so ``make test`` runs it.

Maven builds it with its local repository under ``${CLARION_CACHE_DIR}/maven`` (outside
the checkout, shared by every clone). Once a build with the same pom has succeeded, Maven
runs offline (``-o``): everything it needs is in that repository. The JUnit 5 unit tests
of the pure core run first; then the conformance runner (JUnit 5 dynamic tests, one per
scenario of clients/conformance/scenarios) runs once against the session's control
server, and each scenario is reported here from the runner's results file, with its
failure message.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import xml.etree.ElementTree as ElementTree
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from clarion_devstack.progress import step
from clarion_devstack.settings import DevstackSettings

PROJECT = Path(__file__).resolve().parents[2] / "clients" / "kotlin"
SCENARIOS = PROJECT.parent / "conformance" / "scenarios"
REPORTS = PROJECT / "target" / "surefire-reports"
RESULTS = PROJECT / "target" / "conformance-results.json"


@dataclass(frozen=True)
class Maven:
    mvn: str
    repo: Path

    def stamp(self) -> Path:
        digest = hashlib.sha256((PROJECT / "pom.xml").read_bytes()).hexdigest()[:16]
        return self.repo / f".clarion-kotlin-{digest}"

    def run(self, goals: list[str], what: str, timeout: float, **env: str) -> str:
        """Runs Maven in clients/kotlin; returns its output (the exit code is the caller's)."""
        offline = ["-o"] if self.stamp().exists() else []
        argv = [self.mvn, "-B", "-q", *offline, f"-Dmaven.repo.local={self.repo}", *goals]
        child_env = {**os.environ, **env}  # noqa: TID251 - the child's environment
        # Only the conformance run gets a control server: the unit run skips those tests.
        if "CLARION_CONFORMANCE_CONTROL" not in env:
            child_env.pop("CLARION_CONFORMANCE_CONTROL", None)
        with step(what):
            result = subprocess.run(
                argv,
                cwd=PROJECT,
                capture_output=True,
                text=True,
                timeout=timeout,
                env=child_env,
            )
        output = result.stdout + result.stderr
        if result.returncode == 0 and not offline:
            self.stamp().write_text(" ".join(argv))
        return f"exit {result.returncode}\n{output}"


@pytest.fixture(scope="module")
def maven() -> Maven:
    settings = DevstackSettings.from_environ(os.environ)  # noqa: TID251 - test-process edge
    repo = settings.cache_dir / "maven"
    repo.mkdir(parents=True, exist_ok=True)
    return Maven(mvn=settings.mvn, repo=repo)


def _suites(prefix: str) -> list[dict[str, Any]]:
    suites = []
    for report in sorted(REPORTS.glob(f"TEST-{prefix}*.xml")):
        root = ElementTree.parse(report).getroot()
        suites.append(
            {
                "name": root.get("name"),
                **{k: int(root.get(k, "0")) for k in ("tests", "failures", "errors", "skipped")},
            }
        )
    return suites


#: A cold build downloads Kotlin's compiler, OkHttp, coroutines and JUnit (~90 MB) first.
BUILD_TIMEOUT = 1800


@pytest.mark.timeout(BUILD_TIMEOUT + 60)
def test_kotlin_unit_tests(maven: Maven) -> None:
    output = maven.run(
        ["clean", "test", "-Dtest=io/clarion/client/core/*Test"],
        "Kotlin client: build and unit tests (mvn test)",
        timeout=BUILD_TIMEOUT,
    )
    suites = _suites("io.clarion.client.core.")
    assert output.startswith("exit 0"), f"mvn test failed:\n{output[-8000:]}\n{suites}"
    total = sum(s["tests"] for s in suites)
    bad = [s for s in suites if s["failures"] or s["errors"] or s["skipped"]]
    assert not bad, bad
    # Backoff, frames, the SSE parser and the state machine: the suites all ran.
    assert {s["name"].rsplit(".", 1)[1] for s in suites} >= {
        "BackoffTest",
        "FramesTest",
        "SseParserTest",
        "ClientMachineTest",
    }, suites
    assert total >= 30, suites


def _scenarios() -> list[str]:
    return sorted(p.stem for p in SCENARIOS.glob("*.json")) or ["(no scenarios)"]


def _budget() -> int:
    """Seconds for the whole conformance run: every scenario's own timeout, plus a build."""
    timeouts = (json.loads(p.read_text()).get("timeout", 60) for p in SCENARIOS.glob("*.json"))
    return int(sum(timeouts)) + BUILD_TIMEOUT


def _compiled() -> bool:
    """The test classes are newer than every source and the pom."""
    runner = PROJECT / "target/test-classes/io/clarion/client/conformance/ConformanceTest.class"
    if not runner.exists():
        return False
    inputs = [PROJECT / "pom.xml", *(p for p in (PROJECT / "src").rglob("*") if p.is_file())]
    built = runner.stat().st_mtime
    return all(p.stat().st_mtime < built for p in inputs)


@pytest.fixture(scope="module")
def conformance_results(maven: Maven, conformance_control: str) -> dict[str, Any]:
    """Runs every scenario once (one JVM); the results by scenario name, and Maven's output."""
    RESULTS.unlink(missing_ok=True)
    # Kotlin's Maven plugin recompiles whenever asked: skip it when the unit run just did.
    goals = [] if _compiled() else ["test-compile"]
    output = maven.run(
        [*goals, "surefire:test", "-Dtest=ConformanceTest"],
        "Kotlin client: conformance scenarios",
        timeout=_budget(),
        CLARION_CONFORMANCE_CONTROL=conformance_control,
    )
    results = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    return {"results": results, "output": output}


@pytest.mark.integration
@pytest.mark.timeout(_budget() + 60)  # the first one runs them all (the fixture)
@pytest.mark.parametrize("scenario", _scenarios())
def test_kotlin_conformance(conformance_results: dict[str, Any], scenario: str) -> None:
    results = conformance_results["results"]
    output = conformance_results["output"]
    assert scenario in results, f"no Kotlin result for {scenario}:\n{output[-8000:]}"
    outcome = results[scenario]
    assert outcome["outcome"] == "passed", f"{scenario}: {outcome['message']}"


@pytest.mark.integration
@pytest.mark.timeout(_budget() + 60)
def test_kotlin_conformance_ran_every_scenario(conformance_results: dict[str, Any]) -> None:
    """Maven's own verdict agrees, and no scenario was skipped or left out."""
    suites = _suites("io.clarion.client.conformance.")
    assert sorted(conformance_results["results"]) == _scenarios(), suites
    assert [(s["tests"], s["skipped"]) for s in suites] == [(len(_scenarios()), 0)], suites
    output = conformance_results["output"]
    if all(r["outcome"] == "passed" for r in conformance_results["results"].values()):
        assert output.startswith("exit 0"), output[-8000:]
