"""The conformance suite (clients/conformance) run by the Python reference client.

Each scenario file is one test: ``control`` steps go to the control server (real
workers on the local stack), ``client`` steps drive ``clarion_client.ClarionClient``,
``expect`` steps check what it reported. clients/conformance/README.md is the contract;
this file is also the model for the TypeScript and Kotlin runners.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from clarion_client.client import ClarionClient, ClientRejectedError

pytestmark = pytest.mark.integration

SCENARIOS = Path(__file__).resolve().parents[2] / "clients" / "conformance" / "scenarios"
#: What this client implements beyond the core (scenario ``requires``).
CAPABILITIES = {"sse"}


class Handle:
    """One client of a scenario and everything it reported."""

    def __init__(self, options: dict[str, Any]) -> None:
        self.states: list[dict[str, Any]] = []
        self.events: list[dict[str, Any]] = []
        self.resets: list[dict[str, Any]] = []
        self.token_requests = 0
        self.state_cursor = 0
        self.reset_cursor = 0
        self.error: BaseException | None = None
        self.violations: list[str] = []
        self._changed = asyncio.Event()
        tokens = options.get("tokens") or [options.get("token")]

        async def provider() -> str | None:
            self.token_requests += 1
            self._notify()
            return tokens[min(self.token_requests, len(tokens)) - 1]  # type: ignore[no-any-return]

        self.client = ClarionClient(
            options["urls"],
            None,
            transport=options.get("transport", "ws"),
            last_id=options.get("lastId"),
            batch=bool(options.get("batch", False)),
            heartbeat_seconds=float(options.get("heartbeatInterval", 30)),
            heartbeat_timeout=float(options.get("heartbeatTimeout", 10)),
            backoff_base=float(options.get("backoffBase", 1)),
            backoff_cap=float(options.get("backoffCap", 60)),
            token_provider=provider,
            on_state=self._on_state,
        )
        self.task = asyncio.create_task(self._run())

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    def _on_state(self, state: str, info: dict[str, Any]) -> None:
        if any(s["state"] == "closed" for s in self.states):
            self.violations.append(f"state {state} {info} after closed")
        self.states.append({"state": state, **info})
        self._notify()

    async def _run(self) -> None:
        try:
            async for message in self.client.events():
                (self.resets if message["type"] == "reset" else self.events).append(message)
                self._notify()
        except ClientRejectedError:
            pass  # reported as the closed state
        except Exception as error:
            self.error = error
        self._notify()

    async def wait(self, predicate: Callable[[], bool], within: float, what: str) -> None:
        try:
            async with asyncio.timeout(within):
                while not predicate():
                    await self._changed.wait()
        except TimeoutError:
            raise AssertionError(f"not within {within} s: {what}\n{self.describe()}") from None

    def describe(self) -> str:
        seqs = [e.get("data", {}).get("seq") for e in self.events]
        return (
            f"states: {self.states}\nresets: {self.resets}\nseqs received: {seqs}\n"
            f"token requests: {self.token_requests}\nerror: {self.error!r}"
        )

    async def close(self) -> None:
        await self.client.close()
        try:
            async with asyncio.timeout(10):
                await self.task
        except TimeoutError:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task


def substitute(value: Any, variables: dict[str, Any]) -> Any:
    """Replace every string ``"$var.path.0"`` by that value (README: Variables)."""
    if isinstance(value, dict):
        return {k: substitute(v, variables) for k, v in value.items()}
    if isinstance(value, list):
        return [substitute(v, variables) for v in value]
    if isinstance(value, str) and value.startswith("$"):
        name, *path = value[1:].split(".")
        found: Any = variables[name]
        for part in path:
            found = found[int(part)] if isinstance(found, list) else found[part]
        return found
    return value


def state_matches(record: dict[str, Any], step: dict[str, Any]) -> bool:
    if record["state"] != step["state"]:
        return False
    if "code" in step and record.get("code") != step["code"]:
        return False
    if "replicaId" in step and record.get("replicaId") != step["replicaId"]:
        return False
    if "reason" in step and not str(record.get("reason", "")).startswith(step["reason"]):
        return False
    if "delay" in step:
        delay = record.get("delay")
        return delay is not None and step["delay"]["min"] <= delay <= step["delay"]["max"]
    return True


def flatten(seqs: list[Any]) -> list[int]:
    out: list[int] = []
    for item in seqs if isinstance(seqs, list) else [seqs]:
        out.extend(item if isinstance(item, list) else [item])
    return out


def check_sequence(handle: Handle, expected: list[int]) -> None:
    """Exactly the expected seqs, each once, in increasing order within each key."""
    received = [e["data"]["seq"] for e in handle.events]
    missing = sorted(set(expected) - set(received))
    extra = sorted(set(received) - set(expected))
    duplicated = sorted({s for s in received if received.count(s) > 1})
    problems = missing or extra or duplicated
    assert not problems, (
        f"missing {missing}, unexpected {extra}, duplicated {duplicated}\n{handle.describe()}"
    )
    last: dict[str, int] = {}
    for event in handle.events:
        key, seq = event["data"]["key"], event["data"]["seq"]
        assert seq > last.get(key, 0), f"key {key}: seq {seq} after {last[key]}"
        last[key] = seq


class Runner:
    def __init__(self, control: str) -> None:
        self.control = control
        self.variables: dict[str, Any] = {}
        self.clients: dict[str, Handle] = {}

    async def run(self, scenario: dict[str, Any]) -> None:
        async with httpx.AsyncClient(base_url=self.control, timeout=120) as http:
            try:
                async with asyncio.timeout(scenario.get("timeout", 90)):
                    for index, raw in enumerate(scenario["steps"]):
                        step = substitute(raw, self.variables)
                        try:
                            await self.step(http, step)
                        except AssertionError as error:
                            where = f"step {index} {json.dumps(raw)}"
                            raise AssertionError(f"{where}: {error}") from None
                for handle in self.clients.values():
                    assert not handle.violations, handle.violations
                    assert handle.error is None, handle.describe()
            finally:
                for handle in self.clients.values():
                    await handle.close()
                await http.post("/teardown", json={})

    async def step(self, http: httpx.AsyncClient, step: dict[str, Any]) -> None:
        if "control" in step:
            response = await http.post(f"/{step['control']}", json=step.get("args", {}))
            assert response.is_success, f"control answered {response.status_code}: {response.text}"
            if "save" in step:
                self.variables[step["save"]] = response.json()
        elif step.get("client") == "connect":
            self.clients[step["id"]] = Handle(step["options"])
        elif step.get("client") == "close":
            handle = self.clients[step["id"]]
            await handle.close()
            if "save" in step:
                self.variables[step["save"]] = {"lastId": handle.client.last_id}
        elif "expect" in step:
            await self.expect(self.clients[step["id"]], step, float(step.get("within", 20)))
        else:
            raise AssertionError(f"unknown step {step}")

    async def expect(self, handle: Handle, step: dict[str, Any], within: float) -> None:
        kind = step["expect"]
        if kind == "state":

            def found() -> bool:
                for index in range(handle.state_cursor, len(handle.states)):
                    if state_matches(handle.states[index], step):
                        handle.state_cursor = index + 1
                        return True
                return False

            await handle.wait(found, within, f"state {step}")
        elif kind == "events":
            expected = flatten(step["seqs"])
            await handle.wait(
                lambda: (
                    set(expected) <= {e["data"]["seq"] for e in handle.events}
                    or handle.error is not None
                ),
                within,
                f"events {expected}",
            )
            check_sequence(handle, expected)
        elif kind == "reset":

            def reset_found() -> bool:
                for index in range(handle.reset_cursor, len(handle.resets)):
                    if handle.resets[index].get("reason") == step["reason"]:
                        handle.reset_cursor = index + 1
                        return True
                return False

            await handle.wait(reset_found, within, f"reset {step['reason']}")
        elif kind == "tokenRequests":
            await handle.wait(
                lambda: handle.token_requests >= step["atLeast"], within, f"token requests {step}"
            )
        elif kind == "connects":
            connects = sum(1 for s in handle.states if s["state"] == "connecting")
            assert connects == step["count"], f"{connects} connects\n{handle.describe()}"
        else:
            raise AssertionError(f"unknown expectation {kind!r}")


def _scenarios() -> list[str]:
    return sorted(path.stem for path in SCENARIOS.glob("*.json"))


@pytest.mark.parametrize("name", _scenarios())
async def test_scenario(name: str, conformance_control: str) -> None:
    scenario = json.loads((SCENARIOS / f"{name}.json").read_text())
    assert scenario["name"] == name
    lacking = set(scenario.get("requires", [])) - CAPABILITIES
    if lacking:
        pytest.skip(f"the Python client lacks {sorted(lacking)}")
    await Runner(conformance_control).run(scenario)


def test_the_suite_covers_every_scenario_the_issue_names() -> None:
    assert set(_scenarios()) >= {
        "connect_welcome",
        "live_events",
        "batch_frames",
        "resume_on_another_replica",
        "reset_bad_cursor",
        "reset_too_far_behind",
        "drain_advice",
        "slow_consumer",
        "token_refresh",
        "refusal",
        "heartbeat_loss",
        "server_restart",
    }
