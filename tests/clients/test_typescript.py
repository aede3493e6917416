"""The TypeScript client (clients/typescript) from pytest, so ``make test`` runs it.

Installs its npm dependencies (cache outside the checkout) and builds it
(:mod:`clarion_devstack.tsclient`), runs its unit tests with Node's test runner, then
its conformance runner once per scenario of clients/conformance/scenarios against the
session's control server (real workers on the local stack). Each fails when the Node
side fails, with Node's output in the message. Last, Debian's Chromium (headless, driven
by Selenium) loads the built browser bundle in a page and follows a replica's SIGKILL.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service

from clarion_devstack import tsclient
from clarion_devstack.e2e import sysdeps
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


# ---- in a real browser ---------------------------------------------------------------

FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--no-first-run")  # fmt: skip


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


def _until(check: Callable[[], Any], what: str, within: float = 30) -> Any:
    """Poll the page (another process's DOM: there is nothing to await)."""
    deadline = time.monotonic() + within
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


@pytest.mark.integration
def test_typescript_bundle_in_chromium_resumes_on_another_replica(
    page_url: str, conformance_control: str
) -> None:
    def control(action: str, **args: Any) -> dict[str, Any]:
        response = httpx.post(f"{conformance_control}/{action}", json=args, timeout=60)
        assert response.status_code == 200, response.text
        answer: dict[str, Any] = response.json()
        return answer

    options = webdriver.ChromeOptions()
    options.binary_location = str(sysdeps.CHROMIUM)
    for flag in FLAGS:
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(str(sysdeps.CHROMEDRIVER)), options=options)
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
        driver.quit()
        control("teardown")
