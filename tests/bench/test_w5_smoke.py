"""W5 (bench/w5.py) with 3 channels: the real operator makes them all Ready, the result
is well formed, and deleting them removes their topics and worker objects."""

from __future__ import annotations

import importlib.util
import json
import os
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, cast

import pytest

from clarion_devstack.pytest_plugin import LocalStack

pytestmark = pytest.mark.integration

CHECKOUT = Path(__file__).resolve().parents[2]
CHANNELS = 3

W5 = Callable[..., Awaitable[dict[str, Any]]]


def load_w5() -> W5:
    """bench/ is a folder of scripts, not a package: load w5.py from its path (registered
    in sys.modules, which its dataclasses need)."""
    name = "clarion_bench_w5"
    module = sys.modules.get(name)
    if module is None:
        # w5.py imports its sibling bench/procstat.py, as it does when run as a script.
        if str(CHECKOUT / "bench") not in sys.path:
            sys.path.insert(0, str(CHECKOUT / "bench"))
        spec = importlib.util.spec_from_file_location(name, CHECKOUT / "bench/w5.py")
        assert spec is not None
        assert spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return cast(W5, module.w5_operator)


@pytest.mark.timeout(120)
async def test_w5_three_channels_become_ready_and_are_cleaned_up(
    local_stack: LocalStack,
) -> None:
    w5_operator = load_w5()
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
