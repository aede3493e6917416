"""The scenario files themselves follow clients/conformance/README.md: three runners in
three languages read them, so a typo must fail here, not as a puzzling timeout there."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from clarion_devstack import conformance

SCENARIOS = Path(__file__).resolve().parents[2] / "clients" / "conformance" / "scenarios"
README = SCENARIOS.parent / "README.md"

CONTROL_ACTIONS = {
    "setup",
    "produce",
    "token",
    "replica/kill",
    "replica/restart",
    "replica/drain",
    "replica/freeze",
    "replica/thaw",
    "verify",
    "teardown",
}
CONNECT_OPTIONS = {
    "urls",
    "transport",
    "token",
    "tokens",
    "lastId",
    "batch",
    "heartbeatInterval",
    "heartbeatTimeout",
    "backoffBase",
    "backoffCap",
}
EXPECT_FIELDS = {
    "state": {"state", "code", "reason", "replicaId", "delay"},
    "events": {"seqs"},
    "reset": {"reason"},
    "tokenRequests": {"atLeast"},
    "connects": {"count"},
}
STATES = {"connecting", "connected", "reconnecting", "closed"}
CAPABILITIES = {"sse"}


def _variables(value: Any) -> set[str]:
    if isinstance(value, dict):
        return set().union(*(_variables(v) for v in value.values()))
    if isinstance(value, list):
        return set().union(*(_variables(v) for v in value))
    if isinstance(value, str) and value.startswith("$"):
        return {value[1:].split(".")[0]}
    return set()


def check(scenario: dict[str, Any], file_stem: str) -> list[str]:
    """What is wrong with one scenario document (empty: nothing)."""
    problems: list[str] = []
    if scenario.get("name") != file_stem:
        problems.append(f"name {scenario.get('name')!r} is not the file name {file_stem!r}")
    if not isinstance(scenario.get("description"), str) or not scenario["description"]:
        problems.append("no description")
    if set(scenario.get("requires", [])) - CAPABILITIES:
        problems.append(f"unknown capabilities {scenario['requires']}")
    if not isinstance(scenario.get("timeout", 90), int | float):
        problems.append("timeout is not a number")
    saved: set[str] = set()
    clients: set[str] = set()
    steps = scenario.get("steps") or []
    if not steps or steps[0].get("control") != "setup":
        problems.append("the first step must be a setup")
    for index, step in enumerate(steps):
        where = f"step {index}"
        missing = _variables(step) - saved
        if missing:
            problems.append(f"{where}: uses {sorted(missing)} before any step saved them")
        kinds = {"control", "client", "expect"} & set(step)
        if len(kinds) != 1:
            problems.append(f"{where}: must have exactly one of control/client/expect")
            continue
        if "control" in step:
            if step["control"] not in CONTROL_ACTIONS:
                problems.append(f"{where}: unknown control action {step['control']!r}")
            if set(step) - {"control", "args", "save"}:
                problems.append(
                    f"{where}: unknown fields {sorted(set(step) - {'control', 'args', 'save'})}"
                )
        elif "client" in step:
            if step["client"] == "connect":
                unknown = set(step.get("options", {})) - CONNECT_OPTIONS
                if unknown:
                    problems.append(f"{where}: unknown connect options {sorted(unknown)}")
                if "urls" not in step.get("options", {}):
                    problems.append(f"{where}: connect without urls")
                if {"token", "tokens"} <= set(step.get("options", {})):
                    problems.append(f"{where}: both token and tokens")
                clients.add(step["id"])
            elif step["client"] == "close":
                if step["id"] not in clients:
                    problems.append(f"{where}: closes unknown client {step['id']!r}")
            else:
                problems.append(f"{where}: unknown client action {step['client']!r}")
        else:
            kind = step["expect"]
            if kind not in EXPECT_FIELDS:
                problems.append(f"{where}: unknown expectation {kind!r}")
                continue
            if step.get("id") not in clients:
                problems.append(f"{where}: expects of unknown client {step.get('id')!r}")
            extra = set(step) - {"expect", "id", "within"} - EXPECT_FIELDS[kind]
            if extra:
                problems.append(f"{where}: unknown fields {sorted(extra)}")
            if kind == "state" and step.get("state") not in STATES:
                problems.append(f"{where}: unknown state {step.get('state')!r}")
        if "save" in step:
            saved.add(step["save"])
    return problems


@pytest.mark.parametrize("path", sorted(SCENARIOS.glob("*.json")), ids=lambda p: p.stem)
def test_scenario_follows_the_contract(path: Path) -> None:
    assert check(json.loads(path.read_text()), path.stem) == []


def test_the_checker_finds_what_runners_would_trip_on() -> None:
    bad = {
        "name": "other",
        "description": "",
        "requires": ["telepathy"],
        "steps": [
            {"control": "produce", "args": {"org": 1}, "save": "p"},
            {"client": "connect", "id": "a", "options": {"url": "$setup.ws"}},
            {"expect": "events", "id": "b", "seqs": ["$p.seqs"]},
            {"expect": "state", "id": "a", "state": "online"},
            {"control": "replica/explode"},
        ],
    }
    problems = "\n".join(check(bad, "bad"))
    for expected in (
        "is not the file name",
        "no description",
        "unknown capabilities",
        "first step must be a setup",
        "uses ['setup'] before",
        "unknown connect options ['url']",
        "connect without urls",
        "unknown client 'b'",
        "unknown state 'online'",
        "unknown control action 'replica/explode'",
    ):
        assert expected in problems


def test_the_readme_lists_every_scenario_and_control_action() -> None:
    text = README.read_text()
    for path in SCENARIOS.glob("*.json"):
        assert f"| `{path.stem}`" in text, f"{path.stem} missing from the README's table"
    listed = set(re.findall(r"^\| `([a-z/]+)` \|", text, re.MULTILINE))
    assert listed >= CONTROL_ACTIONS, CONTROL_ACTIONS - listed


def test_the_runners_read_the_same_scenarios_and_budget() -> None:
    """The TypeScript and Kotlin wrappers parametrize by these and time out by this."""
    assert conformance.scenario_names() == sorted(p.stem for p in SCENARIOS.glob("*.json"))
    assert conformance.SCENARIOS == SCENARIOS
    timeouts = [json.loads(p.read_text()).get("timeout", 60) for p in SCENARIOS.glob("*.json")]
    assert conformance.scenarios_budget() == sum(timeouts) > 0


@pytest.mark.parametrize(
    ("results", "failure"),
    [
        ({"a": {"outcome": "passed", "message": ""}}, None),
        ({"a": {"outcome": "failed", "message": "no welcome"}}, "a: failed: no welcome"),
        ({"a": {"outcome": "skipped", "message": "lacks batch"}}, "a: skipped: lacks batch"),
        ({"b": {"outcome": "passed", "message": ""}}, "no result for a"),
    ],
)
def test_a_scenario_passes_only_when_its_runner_says_passed(
    results: dict[str, Any], failure: str | None
) -> None:
    assert conformance.reported_failure(results, "a") == failure
