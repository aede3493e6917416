"""Headless Chromium (Debian's) opens the demo dashboard through HAProxy, sees live
events, survives a SIGKILL of its replica without a gap, and leaves a screenshot."""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from selenium import webdriver

from clarion_devstack.e2e.cluster import Deployment
from clarion_devstack.e2e.demo import DemoProducer, Site, dashboard_config
from clarion_devstack.procs import wait_until
from clarion_devstack.pytest_plugin import LocalStack

pytestmark = pytest.mark.integration

DOCS_IMG = Path(__file__).resolve().parents[2] / "docs" / "img" / "dashboard.png"


@pytest.fixture(scope="module")
def dashboard(
    local_stack: LocalStack, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Deployment]:
    site = Site()
    site.start()
    dep = Deployment(local_stack.env, tmp_path_factory.mktemp("browser"),
                     namespace=f"e2e-{uuid.uuid4().hex[:8]}", replicas=2, site_port=site.port,
                     drain_window_seconds=2, quiet=True)  # fmt: skip
    producer = DemoProducer(local_stack.kafka_bootstrap, rate=20)
    try:
        dep.up()
        site.config = dashboard_config(dep)
        producer.start()
        yield dep
    finally:
        producer.stop()
        dep.down()
        site.stop()


def _until(check: Callable[[], Any], what: str) -> None:
    """Poll the page (another process's DOM: there is nothing to await)."""
    wait_until(check, what=what, timeout=30)


def test_dashboard_shows_live_events_and_survives_a_replica_kill(
    dashboard: Deployment, local_stack: LocalStack, chromium: webdriver.Chrome
) -> None:
    driver = chromium
    try:
        assert dashboard.lb is not None
        driver.get(dashboard.lb.url + "/")

        def snap() -> list[dict[str, Any]]:
            result: list[dict[str, Any]] = driver.execute_script(
                "return window.clarionDashboard.snapshot()"
            )
            return result

        _until(lambda: len(snap()) == 3 and all(v["events"] >= 3 for v in snap()), "events")
        before = {v["user"]: v for v in snap()}
        victim_id = before["kofi"]["replica"]
        dashboard.worker(victim_id).kill()
        _until(
            lambda: all(v["state"] == "open" and v["replica"] != victim_id for v in snap()),
            "every viewer reconnected to the surviving replica",
        )
        _until(
            lambda: all(v["events"] >= before[v["user"]]["events"] + 3 for v in snap()),
            "events after the failover",
        )
        after = snap()
        print(f"\n[e2e] browser after SIGKILL of {victim_id}: {after}")
        assert all(v["gaps"] == 0 and v["duplicates"] == 0 and v["resets"] == 0 for v in after)
        assert any(v["connects"] >= 2 for v in after)
        shot = Path(local_stack.env["logs_dir"]) / "e2e" / "dashboard.png"
        shot.parent.mkdir(parents=True, exist_ok=True)
        assert driver.save_screenshot(str(shot))
        print(f"[e2e] screenshot: {shot}")
        if DOCS_IMG.parent.is_dir():
            shutil.copyfile(shot, DOCS_IMG)
    finally:
        dashboard.ensure_all_up()
