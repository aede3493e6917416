"""W5 (bench/w5.py) with 3 channels: the real operator makes them all Ready, the result
is well formed, and deleting them removes their topics and worker objects."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Awaitable, Callable
from types import ModuleType
from typing import Any, cast

import pytest

from clarion_devstack.pytest_plugin import LocalStack

pytestmark = pytest.mark.integration

CHANNELS = 3

W5 = Callable[..., Awaitable[dict[str, Any]]]


@pytest.mark.timeout(120)
async def test_w5_three_channels_become_ready_and_are_cleaned_up(
    local_stack: LocalStack, bench_script: Callable[[str], ModuleType]
) -> None:
    w5_operator = cast(W5, bench_script("w5").w5_operator)
    said: list[str] = []
    started = time.monotonic()
    result = await w5_operator(CHANNELS, said.append, settings=local_stack.settings, phase_limit=50)
    assert time.monotonic() - started < 60, said
    json.dumps(result)  # JSON-able as it is

    ready = result["ready"]
    assert ready["all_ready"], ready["not_ready"]
    assert ready["ready_count"] == CHANNELS
    assert ready["not_ready"] == []
    assert 0 < ready["first_ready_s"] <= ready["all_ready_s"]
    per_channel = ready["per_channel_s"]
    assert per_channel["count"] == CHANNELS
    assert 0 < per_channel["min"] <= per_channel["p50"] <= per_channel["p95"] <= per_channel["max"]
    assert result["kafka_topics_created"] == result["kafka_topics_expected"] == CHANNELS * 2

    cleanup = result["cleanup"]
    assert cleanup["verified"], cleanup
    assert cleanup["topics_left"] == 0
    assert cleanup["children_left"] == {
        "deployments": 0,
        "services": 0,
        "configmaps": 0,
        "poddisruptionbudgets": 0,
    }
    assert cleanup["not_gone"] == []

    usage = result["operator_usage"]
    assert usage["cpu_seconds_to_all_ready"] > 0
    assert usage["rss_kib_peak"] >= usage["rss_kib_idle"] > 0
    assert usage["allowed_cpus_of_threads"] == ["0"]
    assert result["operator"]["settle"]["idle"]
    assert result["operator_alive_at_end"]
    assert result["loadavg_start"]
    assert result["loadavg_end"]

    # The operator was stopped: nothing of its process group is left.
    with pytest.raises(ProcessLookupError):
        os.killpg(result["operator"]["pid"], 0)
