"""The Kotlin client (clients/kotlin) from pytest, so ``make test`` runs it.

Maven builds it with its local repository under ``${CLARION_CACHE_DIR}/maven`` (outside
the checkout, shared by every clone). Once a build with the same pom has succeeded, Maven
runs offline (``-o``): everything it needs is in that repository. Compiling Kotlin costs
about a minute of CPU, so the compiled classes are cached too, under
``${CLARION_CACHE_DIR}/kotlin-classes/<hash of the pom, the sources and the JDK>``: a
checkout without them (a fresh clone) gets them from there instead of compiling the same
sources again; ``target/.clarion-classes`` names the key of the classes in target/. The
JUnit 5 unit tests of the pure core run first; then the conformance runner (JUnit 5
dynamic tests, one per scenario of clients/conformance/scenarios) runs once, in one JVM,
against the session's control server, and each scenario is reported here from the
runner's results file, with its failure message.
"""

from __future__ import annotations

import functools
import hashlib
import os
import shutil
import subprocess
import xml.etree.ElementTree as ElementTree
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from clarion_devstack import conformance
from clarion_devstack.progress import step
from clarion_devstack.settings import DevstackSettings

PROJECT = Path(__file__).resolve().parents[2] / "clients" / "kotlin"
REPORTS = PROJECT / "target" / "surefire-reports"
RESULTS = PROJECT / "target" / "conformance-results.json"
#: For JVMs that start, run a while and stop (the tests' JVM; Maven's own when it does not
#: compile): C1 alone and the serial collector halve the unit run's CPU (5.5 -> 2.8 s).
#: Not for Maven's JVM when it compiles: the Kotlin compiler runs there, and needs C2.
QUICK_JVM = "-XX:TieredStopAtLevel=1 -XX:+UseSerialGC"
COMPILING = {"clean", "compile", "test-compile", "test"}


@dataclass(frozen=True)
class Maven:
    mvn: str
    repo: Path
    java: str
    classes_cache: Path

    def stamp(self) -> Path:
        digest = hashlib.sha256((PROJECT / "pom.xml").read_bytes()).hexdigest()[:16]
        return self.repo / f".clarion-kotlin-{digest}"

    def run(self, goals: list[str], what: str, timeout: float, **env: str) -> str:
        """Runs Maven in clients/kotlin; returns its output (the exit code is the caller's)."""
        offline = ["-o"] if self.stamp().exists() else []
        argv = [self.mvn, "-B", "-q", *offline, f"-Dmaven.repo.local={self.repo}", *goals]
        argv.append(f"-DargLine={QUICK_JVM}")
        child_env = {**os.environ, **env}  # noqa: TID251 - the child's environment
        if not COMPILING & set(goals):
            child_env.setdefault("MAVEN_OPTS", QUICK_JVM)
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
    classes = settings.cache_dir / "kotlin-classes"
    return Maven(mvn=settings.mvn, repo=repo, java=settings.java, classes_cache=classes)


#: What ``mvn test-compile`` writes and the tests run from.
OUTPUTS = ("classes", "test-classes")


@functools.cache
def _classes_key(maven: Maven) -> str:
    """The compiled classes' inputs: the pom, every source (path and content), the JDK."""
    digest = hashlib.sha256()
    for path in [PROJECT / "pom.xml", *sorted(p for p in (PROJECT / "src").rglob("*"))]:
        if path.is_file():
            digest.update(str(path.relative_to(PROJECT)).encode() + b"\0")
            digest.update(path.read_bytes() + b"\0")
    version = subprocess.run([maven.java, "-version"], capture_output=True, text=True, check=True)
    digest.update(version.stderr.encode())
    return digest.hexdigest()[:24]


#: The key of the classes in target/, once this suite put or compiled them there.
STAMP = PROJECT / "target" / ".clarion-classes"


def _restore_classes(maven: Maven) -> bool:
    """Whether target/ now holds the classes of the current sources without Maven
    compiling: it did already (its stamp says so), or the cache had them."""
    key = _classes_key(maven)
    if STAMP.is_file() and STAMP.read_text() == key:
        return all((PROJECT / "target" / name).is_dir() for name in OUTPUTS)
    cached = maven.classes_cache / key
    if not cached.is_dir():
        return False
    with step(f"Kotlin client: compiled classes from {cached}"):
        for name in OUTPUTS:
            shutil.rmtree(PROJECT / "target" / name, ignore_errors=True)
            shutil.copytree(cached / name, PROJECT / "target" / name)
        STAMP.write_text(key)
    return True


def _store_classes(maven: Maven) -> None:
    """Keep what Maven just compiled for the next checkout with the same inputs."""
    key = _classes_key(maven)
    STAMP.write_text(key)
    cached = maven.classes_cache / key
    if cached.is_dir():
        return
    partial = cached.with_name(f"{key}.{os.getpid()}.partial")
    shutil.rmtree(partial, ignore_errors=True)
    for name in OUTPUTS:
        shutil.copytree(PROJECT / "target" / name, partial / name)
    try:
        partial.rename(cached)
    except OSError:  # another process stored the same classes first
        shutil.rmtree(partial, ignore_errors=True)


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
    shutil.rmtree(REPORTS, ignore_errors=True)  # no report of an earlier run counts
    if _restore_classes(maven):
        goals = ["surefire:test"]
        what = "Kotlin client: unit tests (classes current)"
    else:
        goals = ["clean", "test"]
        what = "Kotlin client: build and unit tests (mvn test)"
    output = maven.run([*goals, "-Dtest=io/clarion/client/core/*Test"], what, timeout=BUILD_TIMEOUT)
    if output.startswith("exit 0"):
        _store_classes(maven)
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


def _budget() -> int:
    """Seconds for the whole conformance run: every scenario's own timeout, plus a build."""
    return conformance.scenarios_budget() + BUILD_TIMEOUT


@pytest.fixture(scope="module")
def conformance_run(maven: Maven, conformance_control: str) -> tuple[Path, str]:
    """Runs every scenario once (one JVM); the runner's results file, and Maven's output."""
    RESULTS.unlink(missing_ok=True)
    # Kotlin's Maven plugin recompiles whenever asked: not when the classes are current.
    goals = [] if _restore_classes(maven) else ["test-compile"]
    output = maven.run(
        [*goals, "surefire:test", "-Dtest=ConformanceTest"],
        "Kotlin client: conformance scenarios",
        timeout=_budget(),
        CLARION_CONFORMANCE_CONTROL=conformance_control,
    )
    if goals and output.startswith("exit 0"):
        _store_classes(maven)
    return RESULTS, output


@pytest.mark.integration
@pytest.mark.timeout(_budget() + 60)  # the first one runs them all (the fixture)
def test_kotlin_conformance(scenario_failure: str | None) -> None:
    assert scenario_failure is None, f"Kotlin: {scenario_failure}"


@pytest.mark.integration
@pytest.mark.timeout(_budget() + 60)
def test_kotlin_conformance_ran_every_scenario(
    conformance_results: dict[str, Any], scenario_names: list[str]
) -> None:
    """Maven's own verdict agrees, and no scenario was skipped or left out."""
    suites = _suites("io.clarion.client.conformance.")
    assert sorted(conformance_results["results"]) == scenario_names, suites
    assert [(s["tests"], s["skipped"]) for s in suites] == [(len(scenario_names), 0)], suites
    output = conformance_results["output"]
    if conformance_results["all_passed"]:
        assert output.startswith("exit 0"), output[-8000:]
