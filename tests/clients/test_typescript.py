"""The TypeScript client (clients/typescript) from pytest, so ``make test`` runs it.

Installs its npm dependencies (cache outside the checkout) and builds it
(:mod:`clarion_devstack.tsclient`), runs its unit tests with Node's test runner, then
its conformance runner once, in one Node process, over every scenario of
clients/conformance/scenarios against the session's control server (real workers on the
local stack); each scenario is reported here from the runner's results file, with its
failure message and Node's output. Last, Debian's Chromium (headless, driven
by Selenium) loads the built browser bundle in a page and follows a replica's SIGKILL.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from selenium import webdriver

from clarion_devstack import conformance, tsclient
from clarion_devstack.procs import wait_until
from clarion_devstack.settings import DevstackSettings


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


def _budget() -> int:
    """Seconds for the whole conformance run: every scenario's own timeout."""
    return conformance.scenarios_budget() + 60


@pytest.fixture(scope="module")
def conformance_run(
    package: Path, conformance_control: str, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, str]:
    """Runs every scenario once (one Node process: a start of Node and of its test runner
    per scenario cost more than most scenarios); the runner's results file, Node's output."""
    results = tmp_path_factory.mktemp("ts-conformance") / "results.json"
    result = subprocess.run(
        ["node", "--test", "--test-reporter=tap", "test/conformance/"],
        cwd=package,
        capture_output=True,
        text=True,
        timeout=_budget(),
        env={
            **os.environ,  # noqa: TID251 - the child's environment
            "CLARION_CONFORMANCE_CONTROL": conformance_control,
            "CLARION_CONFORMANCE_RESULTS": str(results),
            "CLARION_PYTHON": sys.executable,
        },
    )
    return results, f"exit {result.returncode}\n{result.stdout}{result.stderr}"


@pytest.mark.integration
@pytest.mark.timeout(_budget() + 60)  # the first one runs them all (the fixture)
def test_typescript_conformance(scenario_failure: str | None) -> None:
    assert scenario_failure is None, f"TypeScript: {scenario_failure}"


@pytest.mark.integration
@pytest.mark.timeout(_budget() + 60)
def test_typescript_conformance_ran_every_scenario(
    conformance_results: dict[str, Any], scenario_names: list[str]
) -> None:
    """Node's own verdict agrees, and no scenario was skipped or left out."""
    output = conformance_results["output"]
    assert sorted(conformance_results["results"]) == scenario_names, output[-8000:]
    scenarios = len(scenario_names)
    counts = (_count(output, "pass"), _count(output, "fail"), _count(output, "skipped"))
    if conformance_results["all_passed"]:
        assert counts == (scenarios, 0, 0), output[-8000:]
        assert output.startswith("exit 0"), output[-8000:]


@pytest.mark.integration
@pytest.mark.timeout(_budget() + 60)
def test_typescript_conformance_leaves_no_timer_behind(conformance_results: dict[str, Any]) -> None:
    """Once every client is closed nothing keeps Node running: the runner's waits once
    left their timers pending, and each run idled 20 s after its last scenario."""
    output = conformance_results["output"]
    left = re.search(r"timers left after the last scenario: (\d+)", output)
    assert left, output[-8000:]
    assert int(left.group(1)) == 0, output[-8000:]


# ---- in a real browser ---------------------------------------------------------------


@pytest.fixture
def page_url(package: Path) -> Iterator[str]:
    """The test page (test/browser/index.html) and the built bundle, on 127.0.0.1."""
    bundle = package / "dist" / "browser" / "clarion.js"

    class Handler(SimpleHTTPRequestHandler):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, directory=str(package / "test" / "browser"), **kwargs)

        def do_GET(self) -> None:
            if self.path == "/clarion.js":
                body = bundle.read_bytes()
                self.send_response(200)
                self.send_header("Content-Type", "text/javascript")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
                return
            super().do_GET()

        def log_message(self, format: str, *args: Any) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, name="ts-page", daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/index.html"
    finally:
        server.shutdown()
        server.server_close()


def _until(check: Callable[[], Any], what: str) -> None:
    """Poll the page (another process's DOM: there is nothing to await)."""
    wait_until(check, what=what, timeout=30, interval=0.1)


@pytest.mark.integration
def test_typescript_bundle_in_chromium_resumes_on_another_replica(
    page_url: str, conformance_control: str, chromium: webdriver.Chrome
) -> None:
    driver = chromium

    def control(action: str, **args: Any) -> dict[str, Any]:
        response = httpx.post(f"{conformance_control}/{action}", json=args, timeout=60)
        assert response.status_code == 200, response.text
        answer: dict[str, Any] = response.json()
        return answer

    setup = control("setup")
    try:
        driver.get(page_url)
        _until(lambda: driver.execute_script("return !!window.clarionTest"), "the page's module")

        def report() -> dict[str, Any]:
            result: dict[str, Any] = driver.execute_script("return window.clarionTest.report()")
            return result

        def seqs() -> list[int]:
            return [e["seq"] for e in report()["events"]]

        driver.execute_script(
            "window.clarionTest.start(arguments[0])",
            {"urls": setup["ws"], "token": setup["token"], "backoffBaseMs": 100,
             "backoffCapMs": 1000},
        )  # fmt: skip
        _until(lambda: {"state": "connected", "replicaId": "w1"} in report()["states"], "w1")
        first = control("produce", org=4, user=2, all=1)["seqs"]
        _until(lambda: set(first) <= set(seqs()), "the first events")
        control("replica/kill", replica=0)
        second = control("produce", org=4, user=2, all=1)["seqs"]
        _until(lambda: {"state": "connected", "replicaId": "w2"} in report()["states"], "w2")
        _until(lambda: set(first + second) <= set(seqs()), "the events produced meanwhile")
        got = report()
        print(f"\n[ts-browser] states {got['states']}")
        assert sorted(seqs()) == sorted(first + second), "exactly once"
        last: dict[str, int] = {}
        for event in got["events"]:
            assert event["seq"] > last.get(event["key"], 0), f"out of order: {event}"
            last[event["key"]] = event["seq"]
        reconnects = [s["code"] for s in got["states"] if s["state"] == "reconnecting"]
        assert reconnects[:1] == [1006], got["states"]
        assert got["resets"] == []
    finally:
        control("teardown")
