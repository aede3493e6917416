"""Fixtures of the chart tests: the pinned helm (built from the Go module proxy if missing)."""

from __future__ import annotations

import os

import pytest

from clarion_devstack import charts
from clarion_devstack.settings import DevstackSettings


@pytest.fixture(scope="session")
def helm() -> charts.Helm:
    settings = DevstackSettings.from_environ(os.environ)  # noqa: TID251 - test-process edge
    return charts.Helm(charts.helm_binary(settings), settings.checkout)
