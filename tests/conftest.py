"""Shared fixtures: the local stack (real Kafka and Kubernetes) for integration tests,
the RealtimeChannel CRD on it, and a headless Chromium for the tests that load a page."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

from clarion_devstack import crdgen
from clarion_devstack.crds import wait_established
from clarion_operator.core import crd

if TYPE_CHECKING:
    from selenium.webdriver import Chrome

    from clarion_devstack.pytest_plugin import LocalStack

pytest_plugins = ["clarion_devstack.pytest_plugin"]


@pytest.fixture(scope="session")
def crd_installed(local_stack: LocalStack) -> None:
    """The RealtimeChannel CRD as the operator's model renders it (the generated-files test
    holds manifests/crd.yaml equal to it), applied and Established."""
    local_stack.kubectl(
        "apply", "--server-side", "--force-conflicts", "--field-manager=clarion-tests",
        "-f", "-", stdin=crdgen.render_yaml(),
    )  # fmt: skip
    wait_established(local_stack.kubectl, [crd.CRD_NAME])


CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu",
                  "--disable-background-networking", "--disable-component-update",
                  "--no-first-run", "--window-size=1400,820")  # fmt: skip


@pytest.fixture
def chromium() -> Iterator[Chrome]:
    """Debian's Chromium, headless, driven by Selenium (``make sysdeps`` installs both);
    quit at teardown. Selenium is imported here only, for the tests that ask for it.
    Its temporary folders (the profile's singleton socket) go in a folder of its own,
    removed after: in /tmp each run left two ``org.chromium.Chromium.*``. (Not under
    ``tmp_path``: the socket's path would pass AF_UNIX's 108 bytes, and Chromium exits.)"""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    from clarion_devstack.e2e import sysdeps

    options = webdriver.ChromeOptions()
    options.binary_location = str(sysdeps.CHROMIUM)
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    scratch = tempfile.mkdtemp(prefix="clarion-chromium-")
    env = {**os.environ, "TMPDIR": scratch}  # noqa: TID251 - the browser's environment
    try:
        service = Service(str(sysdeps.CHROMEDRIVER), env=env)
        driver = webdriver.Chrome(service=service, options=options)
        try:
            yield driver
        finally:
            driver.quit()
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
