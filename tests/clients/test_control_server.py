"""The conformance control server's own behaviour that scenarios rely on without saying.

A replica told to drain (``replica/drain``) stops listening whenever its drain ends and
exits a moment later; ``produce`` must not wait for it (nor fail on it) meanwhile. That
window made ``drain_advice`` fail now and then with ``ConnectError`` at its second
``produce``: here the draining replica is held in it, alive and silent, by SIGSTOP.
"""

from __future__ import annotations

import json
import os
import re
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

pytestmark = pytest.mark.integration


def _pid(log: Path) -> int:
    """The worker's PID, from uvicorn's first line in its log."""
    match = re.search(r"Started server process \[(\d+)\]", log.read_text())
    assert match, log.read_text()[-2000:]
    return int(match.group(1))


def _poster(http: httpx.Client) -> Callable[..., dict[str, Any]]:
    """``post(action, **args)``: the action's JSON answer, asserting a 200."""

    def post(action: str, **args: Any) -> dict[str, Any]:
        response = http.post(f"/{action}", json=args)
        assert response.status_code == 200, response.text
        answer: dict[str, Any] = response.json()
        return answer

    return post


def test_produce_neither_waits_for_nor_fails_on_a_draining_replica(
    conformance_control: str,
) -> None:
    with httpx.Client(base_url=conformance_control, timeout=60) as http:
        post = _poster(http)
        # A long window: the replica stays alive (and listening) through the test.
        setup = post("setup", worker={"drain": {"windowSeconds": 60}})
        pid = _pid(Path(setup["logs"]) / "w1.log")
        try:
            post("replica/drain", replica=0)
            # Draining and silent: a /metrics scrape of it can only time out.
            os.kill(pid, signal.SIGSTOP)
            produced = post("produce", org=2, all=1)
            assert produced["count"] == 3
            # w2 still counts: its consumption is what ``produce`` waited for.
            w2 = setup["replicas"][1]["http"]
            consumed = httpx.get(f"{w2}/metrics", timeout=5).text
            assert "clarion_worker_events_consumed_total" in consumed
        finally:
            post("teardown")  # SIGKILL ends the stopped replica too


def test_the_token_secret_file_is_not_rewritten_under_running_replicas(
    conformance_control: str,
) -> None:
    """Workers read their HMAC secret file while they run; each replica start rewrote it
    (truncate, then write), and a replica reading it meanwhile refused every token with
    500 "HMAC key must not be empty" (seen in refusal under load)."""
    with httpx.Client(base_url=conformance_control, timeout=60) as http:
        post = _poster(http)
        setup = post("setup")
        try:
            config = json.loads((Path(setup["logs"]) / "w1.json").read_text())
            secret = Path(config["auth"]["hmacSecretFile"])
            before = secret.stat()
            post("replica/restart", replica=0)
            after = secret.stat()
            assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
            assert secret.read_bytes()
        finally:
            post("teardown")
