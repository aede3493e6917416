"""The churn soak's short version (bench/soak.py, SHORT): about a minute of long-lived
clients, churn in every way of leaving, resumes from old ids read back from Kafka, and
a burst; then every client leaves. No loss, no unclosed read-back consumer, nothing
left open, and memory back near where it was with the long-lived clients alone."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

CHECKOUT = Path(__file__).resolve().parents[2]
#: RSS the worker may keep after every client left, over what it had with the long-lived
#: clients connected (allocator slack; an abandoned read-back held ~14 MiB each).
RSS_SLACK_MIB = 40


@pytest.mark.timeout(240)
@pytest.mark.usefixtures("local_stack")
def test_short_soak_leaves_nothing_behind(tmp_path: Path) -> None:
    out = tmp_path / "soak.json"
    run = subprocess.run(
        [
            sys.executable,
            str(CHECKOUT / "bench/run.py"),
            "--workloads",
            "soak",
            "--soak-short",
            "--scaling",
            "",
            "--output",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=230,
        check=False,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    soak = json.loads(out.read_text())["soak"]
    report = json.dumps({k: v for k, v in soak.items() if k != "windows"})
    assert soak["lost"] == 0, report
    assert soak["gaps"] == 0, report
    assert soak["duplicates"] == 0, report
    churn = soak["churn"]
    assert churn["broken"] == 0, report
    assert churn["resumed_old"] > 0, report
    assert soak["resumes"]["kafka"] > 0, report  # read-backs happened
    assert soak["unclosed_consumer_lines"] == 0, report
    assert soak["readbacks_open_all_gone"] == 0, report
    rss = soak["rss_mib"]
    assert rss["all_gone"] <= rss["long_lived_connected"] + RSS_SLACK_MIB, report
