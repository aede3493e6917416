"""Shared fixtures: the local stack (real Kafka and Kubernetes) for integration tests,
and a headless Chromium for the tests that load a page."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from selenium.webdriver import Chrome

pytest_plugins = ["clarion_devstack.pytest_plugin"]

CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu",
                  "--disable-background-networking", "--disable-component-update",
                  "--no-first-run", "--window-size=1400,820")  # fmt: skip


@pytest.fixture
def chromium() -> Iterator[Chrome]:
    """Debian's Chromium, headless, driven by Selenium (``make sysdeps`` installs both);
    quit at teardown. Selenium is imported here only, for the tests that ask for it."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    from clarion_devstack.e2e import sysdeps

    options = webdriver.ChromeOptions()
    options.binary_location = str(sysdeps.CHROMIUM)
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(str(sysdeps.CHROMEDRIVER)), options=options)
    try:
        yield driver
    finally:
        driver.quit()
