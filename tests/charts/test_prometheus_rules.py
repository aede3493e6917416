"""The chart's alerting rules under the real promtool (issue 12, item 13): they parse,
and each alert fires on the series its test case feeds it, with the labels an
annotation-based scrape config gives as well as those a ServiceMonitor gives.

promtool is built from the Go module proxy at the pinned Prometheus module version into the
cache, like helm (``clarion_devstack.install.PROMTOOL``).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from clarion_devstack import install, versions
from clarion_devstack.charts import Helm
from clarion_devstack.settings import DevstackSettings

HERE = Path(__file__).resolve().parent
TESTS = HERE / "prometheus_rules_test.yaml"


@pytest.fixture(scope="session")
def promtool() -> Path:
    settings = DevstackSettings.from_environ(os.environ)  # noqa: TID251 - test-process edge
    return install.ensure_go(settings, install.PROMTOOL) / "promtool"


@pytest.fixture
def rules_dir(helm: Helm, tmp_path: Path) -> Path:
    """The chart's PrometheusRule, rendered with its defaults, as a Prometheus rule file."""
    text = helm.template(
        "--set=prometheusRule.enabled=true", "--show-only=templates/prometheusrule.yaml"
    )
    (rule,) = [d for d in yaml.safe_load_all(text) if d]
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump({"groups": rule["spec"]["groups"]}))
    shutil.copy(TESTS, tmp_path / TESTS.name)
    return tmp_path


def _run(promtool: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(promtool), *args], cwd=cwd, capture_output=True, text=True, timeout=120
    )


def test_promtool_is_the_pinned_version(promtool: Path, tmp_path: Path) -> None:
    out = _run(promtool, "--version", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    minor = int(versions.PROMETHEUS_MODULE.split(".")[1]) - 300
    assert f"version 3.{minor}." in out.stdout + out.stderr


def test_rules_pass_promtool_check(promtool: Path, rules_dir: Path) -> None:
    out = _run(promtool, "check", "rules", "rules.yaml", cwd=rules_dir)
    assert out.returncode == 0, out.stdout + out.stderr


def test_every_alert_has_a_firing_test_case(rules_dir: Path) -> None:
    groups = yaml.safe_load((rules_dir / "rules.yaml").read_text())["groups"]
    alerts = {r["alert"] for g in groups for r in g["rules"] if "alert" in r}
    cases = yaml.safe_load(TESTS.read_text())["tests"]
    firing = {
        case["alertname"]
        for group in cases
        for case in group.get("alert_rule_test", [])
        if case.get("exp_alerts")
    }
    assert alerts - firing == set(), f"alerts without a firing case in {TESTS.name}"
    assert firing - alerts == set(), "test cases for alerts the chart does not have"


def test_promtool_unit_tests_pass(promtool: Path, rules_dir: Path) -> None:
    out = _run(promtool, "test", "rules", TESTS.name, cwd=rules_dir)
    assert out.returncode == 0, out.stdout + out.stderr


def test_promtool_pin_matches_go_mod() -> None:
    text = (HERE.parents[1] / "devstack/go/promtool/go.mod").read_text()
    assert f"github.com/prometheus/prometheus v{versions.PROMETHEUS_MODULE}\n" in text
