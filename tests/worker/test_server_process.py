"""The worker process itself, without the local stack: what it does before Kafka answers.

Kafka is "unreachable" here: the bootstrap names a port on 127.0.0.1 that nobody listens
on, so every connection attempt is refused at once and the worker keeps retrying.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets
from websockets.asyncio.client import connect

from clarion_client.client import ClarionClient, ClientRejectedError
from clarion_devstack.harness import AUDIENCE, ISSUER, Keys


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class _Worker:
    def __init__(self, proc: subprocess.Popen[bytes], log: Path, port: int) -> None:
        self.proc = proc
        self.log = log
        self.port = port

    def wait_for_log(self, text: str, within: float = 20.0) -> None:
        deadline = time.monotonic() + within
        while text not in self.log.read_text(errors="replace"):
            if self.proc.poll() is not None:
                raise AssertionError(f"worker exited early: {self.log.read_text()[-2000:]}")
            if time.monotonic() > deadline:
                raise AssertionError(f"{text!r} not logged in {within} s: {self.log.read_text()}")
            time.sleep(0.05)


def _start(directory: Path, name: str = "worker", **sections: dict[str, Any]) -> _Worker:
    doc: dict[str, Any] = {
        "apiVersion": "clarion.dev/worker-config/v1",
        "channel": "tests",
        "kafka": {"bootstrapServers": f"127.0.0.1:{_free_port()}"},
        "topics": [{"name": "t.approvals", "audience": "organization"}],
        "auth": {"mode": "none"},
        "drain": {"windowSeconds": 30},
    }
    for section, values in sections.items():
        doc.setdefault(section, {}).update(values)
    config = directory / f"{name}.json"
    config.write_text(json.dumps(doc))
    port = _free_port()
    log = directory / f"{name}.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLARION_")}  # noqa: TID251
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [
                *(sys.executable, "-m", "clarion_worker", "--config", str(config)),
                *("--host", "127.0.0.1", "--port", str(port)),
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**env, "CLARION_REPLICA_ID": "w-unreachable"},
        )
    return _Worker(proc, log, port)


@pytest.fixture
def start_unreachable(tmp_path: Path) -> Iterator[Callable[..., _Worker]]:
    """Start workers whose Kafka bootstrap refuses every connection; all stopped after."""
    started: list[_Worker] = []

    def start(**sections: dict[str, Any]) -> _Worker:
        worker = _start(tmp_path, f"w{len(started)}", **sections)
        started.append(worker)
        worker.wait_for_log("Kafka not ready; retrying")
        return worker

    yield start
    for worker in started:
        if worker.proc.poll() is None:
            worker.proc.kill()
        worker.proc.wait(timeout=10)


@pytest.fixture
def unreachable_worker(start_unreachable: Callable[..., _Worker]) -> _Worker:
    return start_unreachable()


def test_sigterm_while_waiting_for_kafka_exits_promptly_and_cleanly(
    unreachable_worker: _Worker,
) -> None:
    worker = unreachable_worker
    started = time.monotonic()
    worker.proc.send_signal(signal.SIGTERM)
    try:
        code = worker.proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        raise AssertionError(
            f"SIGTERM ignored while waiting for Kafka: {worker.log.read_text()[-2000:]}"
        ) from None
    assert code == 0, worker.log.read_text()[-2000:]
    # Nothing to drain: no 30 s drain window, no grace-period kill.
    assert time.monotonic() - started < 5.0


def test_probes_answer_while_waiting_for_kafka(unreachable_worker: _Worker) -> None:
    """Alive (the process is fine) but not ready (no Kafka yet): liveness must not kill it."""
    worker = unreachable_worker
    base = f"http://127.0.0.1:{worker.port}"
    assert httpx.get(f"{base}/healthz", timeout=5).status_code == 200
    ready = httpx.get(f"{base}/readyz", timeout=5)
    assert ready.status_code == 503
    assert "consumer not assigned yet" in ready.text


# ---- request heads: size, time and number (issue 12, items 1 and 2) ------------------------

WS_HEAD = (
    "GET {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n"
)
#: Past websockets' 8 KiB line limit (the hang) but within the defaults (8 KiB URL, 16 KiB
#: of headers); HUGE_TOKEN is past the defaults.
BIG_TOKEN = "eyJhbGciOiJIUzI1NiJ9." + "x" * 9000 + ".sig"
HUGE_TOKEN = "eyJhbGciOiJIUzI1NiJ9." + "x" * 20000 + ".sig"


def _exchange(port: int, head: str, within: float = 5.0) -> tuple[bytes, bool]:
    """Send ``head`` on a raw socket; what came back, and whether the server then closed."""
    with socket.create_connection(("127.0.0.1", port), timeout=within) as sock:
        sock.sendall(head.encode())
        received = b""
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            sock.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                return received, False
            if not chunk:
                return received, True
            received += chunk
        return received, False


def _status(response: bytes) -> int:
    return int(response.split(b" ", 2)[1]) if response.startswith(b"HTTP/1.1 ") else 0


@pytest.mark.parametrize(
    ("where", "status"),
    [("authorization", 431), ("subprotocol", 431), ("query", 414), ("sse", 431)],
)
def test_an_oversized_request_head_is_answered_at_once(
    unreachable_worker: _Worker, where: str, status: int
) -> None:
    """Past the limits: an immediate HTTP refusal and a closed socket, never a hang."""
    target, extra = "/ws/dashboard", ""
    if where == "authorization":
        extra = f"Authorization: Bearer {HUGE_TOKEN}\r\n"
    elif where == "subprotocol":
        extra = f"Sec-WebSocket-Protocol: clarion.v1, bearer.{HUGE_TOKEN}\r\n"
    elif where == "query":
        target = f"/ws/dashboard?access_token={BIG_TOKEN}"
    head = WS_HEAD.format(target=target, extra=extra)
    if where == "sse":
        head = f"GET /sse/dashboard HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {HUGE_TOKEN}\r\n"
        head += "\r\n"
    response, closed = _exchange(unreachable_worker.port, head)
    assert _status(response) == status, response[:200]
    assert closed
    body = json.loads(response.partition(b"\r\n\r\n")[2])
    assert body["error"] == {414: "url_too_long", 431: "headers_too_large"}[status]
    metrics = httpx.get(f"http://127.0.0.1:{unreachable_worker.port}/metrics", timeout=5).text
    assert f'clarion_worker_handshake_refusals_total{{reason="{body["error"]}"}} 1.0' in metrics


@pytest.mark.parametrize(
    ("limits", "token"), [({}, BIG_TOKEN), ({"maxHeaderBytes": 65536}, HUGE_TOKEN)]
)
def test_a_big_token_within_the_limits_reaches_the_app(
    start_unreachable: Callable[..., _Worker], limits: dict[str, int], token: str
) -> None:
    """Past websockets' own 8 KiB line limit too (where it hung): the app answers."""
    worker = start_unreachable(limits=limits)
    for extra in (f"Authorization: Bearer {token}", f"Sec-WebSocket-Protocol: bearer.{token}"):
        head = WS_HEAD.format(target="/ws/dashboard", extra=extra + "\r\n")
        response, _closed = _exchange(worker.port, head, within=3.0)
        assert _status(response) not in (0, 414, 431), response[:200]


def test_a_head_that_stops_midway_is_closed_after_the_deadline_and_counted(
    start_unreachable: Callable[..., _Worker],
) -> None:
    worker = start_unreachable(
        server={"handshakeTimeoutSeconds": 1}, limits={"maxPendingHandshakes": 4}
    )
    metrics_url = f"http://127.0.0.1:{worker.port}/metrics"
    stalled = [socket.create_connection(("127.0.0.1", worker.port)) for _ in range(4)]
    try:
        for sock in stalled:
            sock.sendall(b"GET /ws/dashboard HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgr")
        # The fifth is over the limit: refused at once, before sending anything.
        response, closed = _exchange(worker.port, "", within=3.0)
        assert (_status(response), closed) == (503, True)
        deadline = time.monotonic() + 5
        for sock in stalled:
            sock.settimeout(max(0.1, deadline - time.monotonic()))
            answer = sock.recv(4096)
            assert _status(answer) == 408, answer
            assert sock.recv(4096) == b""  # and closed
    finally:
        for sock in stalled:
            sock.close()
    metrics = httpx.get(metrics_url, timeout=5).text
    assert 'clarion_worker_handshake_refusals_total{reason="handshake_timeout"} 4.0' in metrics
    assert 'clarion_worker_handshake_refusals_total{reason="unavailable"} 1.0' in metrics
    assert "clarion_worker_pending_handshakes 0.0" in metrics


def test_pending_handshakes_are_a_metric(start_unreachable: Callable[..., _Worker]) -> None:
    worker = start_unreachable(server={"handshakeTimeoutSeconds": 30})
    stalled = [socket.create_connection(("127.0.0.1", worker.port)) for _ in range(3)]
    try:
        for sock in stalled:
            sock.sendall(b"GET /sse/dashboard HTTP/1.1\r\n")
        metrics = httpx.get(f"http://127.0.0.1:{worker.port}/metrics", timeout=5).text
        assert "clarion_worker_pending_handshakes 3.0" in metrics
    finally:
        for sock in stalled:
            sock.close()


# ---- refusals a browser's WebSocket API can see (issue 12, item 3) ---------------------------

ORIGIN = "https://app.unionflow.test"


@pytest.fixture
def keys(tmp_path: Path) -> Keys:
    return Keys(tmp_path)


@pytest.fixture
def jwt_worker(start_unreachable: Callable[..., _Worker], keys: Keys) -> _Worker:
    """Checks tokens like a real channel; never ready (no Kafka), which is a refusal too."""
    return start_unreachable(
        auth={
            "mode": "jwt",
            "hmacSecretFile": str(keys.hmac_file),
            "audience": AUDIENCE,
            "issuer": ISSUER,
            "allowedOrigins": [ORIGIN],
            "leewaySeconds": 0,
        }
    )


async def _refusal(url: str, **options: Any) -> tuple[dict[str, Any], int]:
    """Connect as a browser would; the first frame and the close code."""
    async with asyncio.timeout(10), connect(url, **options) as ws:
        frame = json.loads(await ws.recv())
        with pytest.raises(websockets.exceptions.ConnectionClosed) as closed:
            await ws.recv()
    assert closed.value.rcvd is not None
    return frame, closed.value.rcvd.code


@pytest.mark.parametrize(
    ("case", "code"),
    [("missing", 4001), ("bad_signature", 4001), ("expired", 4004), ("origin", 4003)],
)
async def test_websocket_refusals_are_an_error_frame_and_a_4xxx_close(
    jwt_worker: _Worker, keys: Keys, case: str, code: int
) -> None:
    good = keys.token(["org-a"], "alice")
    token = {
        "missing": None,
        "bad_signature": good[:-4] + ("AAAA" if not good.endswith("AAAA") else "BBBB"),
        "expired": keys.token(["org-a"], "alice", ttl=-120),
        "origin": good,
    }[case]
    # The way a browser authenticates: a bearer. subprotocol next to clarion.v1.
    offered = ["clarion.v1"] + ([f"bearer.{token}"] if token else [])
    origin = "https://evil.example" if case == "origin" else ORIGIN
    frame, closed = await _refusal(
        f"ws://127.0.0.1:{jwt_worker.port}/ws/dashboard",
        subprotocols=offered,
        origin=origin,
    )
    assert (frame["type"], frame["code"], closed) == ("error", code, code)
    assert frame["message"].startswith(
        {"origin": "origin_not_allowed", "bad_signature": "bad_signature"}.get(case, case)
    )


async def test_a_replica_that_is_not_ready_refuses_in_band_with_4013(
    jwt_worker: _Worker, keys: Keys
) -> None:
    frame, closed = await _refusal(
        f"ws://127.0.0.1:{jwt_worker.port}/ws/dashboard",
        additional_headers={"Authorization": f"Bearer {keys.token(['org-a'], 'alice')}"},
        origin=ORIGIN,
    )
    assert (frame["type"], frame["code"], closed) == ("error", 4013, 4013)
    assert frame["message"].startswith("unavailable")


def test_sse_and_plain_http_keep_their_statuses(jwt_worker: _Worker, keys: Keys) -> None:
    expired = keys.token(["org-a"], "alice", ttl=-120)
    response = httpx.get(
        f"http://127.0.0.1:{jwt_worker.port}/sse/dashboard?access_token={expired}",
        headers={"Origin": ORIGIN},
        timeout=5,
    )
    assert response.status_code == 401
    assert response.json()["error"] == "expired"


async def test_the_reference_client_stops_on_an_expired_token_without_a_refresher(
    jwt_worker: _Worker, keys: Keys
) -> None:
    client = ClarionClient(
        f"ws://127.0.0.1:{jwt_worker.port}/ws/dashboard",
        keys.token(["org-a"], "alice", ttl=-120),
        extra_headers={"Origin": ORIGIN},
        backoff_base=0.05,
    )

    async def run() -> None:
        async for _event in client.events():
            pass

    with pytest.raises(ClientRejectedError) as rejected:
        await asyncio.wait_for(run(), 10)
    assert rejected.value.code == 4004
    assert client.stats.close_codes == [4004]


async def test_the_reference_client_refreshes_an_expired_token_and_comes_back(
    jwt_worker: _Worker, keys: Keys
) -> None:
    fresh = keys.token(["org-a"], "alice")
    asked: list[str] = []

    async def provider() -> str:
        asked.append("refresh")
        return fresh

    client = ClarionClient(
        f"ws://127.0.0.1:{jwt_worker.port}/ws/dashboard",
        keys.token(["org-a"], "alice", ttl=-120),
        extra_headers={"Origin": ORIGIN},
        backoff_base=0.05,
        backoff_cap=0.1,
        token_provider=provider,
    )

    async def run() -> None:
        async for _event in client.events():
            pass

    task = asyncio.create_task(run())
    try:
        async with asyncio.timeout(10):
            # Refused for the expired token, refreshed, then back with the fresh one: the
            # replica is not ready (4013), which is worth retrying, not giving up.
            while client.stats.close_codes.count(4013) < 2:  # noqa: ASYNC110 - no close event
                await asyncio.sleep(0.02)
    finally:
        await client.close()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    assert client.stats.close_codes[0] == 4004
    assert asked == ["refresh"]
    assert client.token == fresh
