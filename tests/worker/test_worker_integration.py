"""The worker against the real broker: routing, isolation, resume on another replica,
SSE, backpressure, bad records, bad tokens, drain and added partitions.

Every test runs real ``python -m clarion_worker`` processes and real WebSocket or HTTP
clients; events are numbered by the producer so loss, duplicates and order are checked.
"""

from __future__ import annotations

import asyncio
import http.server
import json
import random
import sys
import threading
import time
from collections.abc import Mapping
from typing import Any

import httpx
import pytest
import websockets
from aiokafka.admin import AIOKafkaAdminClient, NewPartitions
from cryptography.hazmat.primitives.asymmetric import rsa
from websockets.asyncio.client import connect

from clarion_devstack.harness import (
    AUDIENCE,
    ISSUER,
    ORIGIN,
    ChannelTopics,
    Collect,
    Collector,
    Keys,
    Producer,
    StartWorker,
    WorkerProcess,
    assert_exact,
    consumed_reaches,
    expected_for,
    metric_reaches,
    settle,
)

pytestmark = pytest.mark.integration


async def _close_code(ws: Any, within: float = 15.0) -> int:
    """Read (and drop) frames until the server closes; return its close code."""
    async with asyncio.timeout(within):
        try:
            while True:
                await ws.recv()
        except websockets.exceptions.ConnectionClosed as closed:
            return closed.rcvd.code if closed.rcvd else 1006


async def _reluctant_reader(worker: WorkerProcess, token: str, **options: Any) -> Any:
    """A WebSocket client that reads only when the test does: one frame buffered, no
    compression, no pings of its own (only the server can cut it)."""
    return await connect(
        worker.ws,
        additional_headers={**ORIGIN, "Authorization": f"Bearer {token}"},
        max_queue=1,
        compression=None,
        ping_interval=None,
        **options,
    )


async def _connected(*collectors: Collector) -> None:
    async with asyncio.timeout(20):
        for collector in collectors:
            await collector.connected.wait()


async def _produce_mix(producer: Producer, topics: ChannelTopics, count: int, seed: int) -> None:
    rng = random.Random(seed)
    orgs = ["org-a", "org-b", "org-c", "org-d"]
    users = {"alice": "org-a", "bob": "org-b", "carol": "org-a", "dave": "org-d"}
    for _ in range(count):
        kind = rng.random()
        if kind < 0.6:
            org = rng.choice(orgs)
            await producer.send(topics.approvals, "APPROVAL_PENDING", org, key=f"appr-{org}")
        elif kind < 0.9:
            user = rng.choice(list(users))
            await producer.send(topics.notify, "NOTIFICATION", users[user], user, key=user)
        else:
            await producer.send(topics.bcast, "ANNOUNCEMENT", None, key="all")


async def _each_gets_exactly_its_events(
    producer: Producer,
    topics: ChannelTopics,
    workers: list[WorkerProcess],
    clients: list[Collector],
    audiences: list[tuple[list[str], str | None]],
    *,
    count: int,
    seed: int,
) -> None:
    """Produce ``count`` events of the mix, let every worker settle, and check that each
    client got exactly the events of its organizations and user, in order."""
    await _produce_mix(producer, topics, count, seed=seed)
    await settle(producer, workers, clients, topics.bcast)
    for client, (orgs, user) in zip(clients, audiences, strict=True):
        assert_exact(
            client.seqs(), expected_for(producer.sent, set(orgs), user, topics), producer.sent
        )


@pytest.mark.parametrize("write_path", ["direct", "asgi"], indirect=True)
async def test_two_workers_each_client_gets_exactly_its_events(
    write_path: str,
    start_worker: StartWorker,
    topics: ChannelTopics,
    keys: Keys,
    producer: Producer,
    collect: Collect,
) -> None:
    w1, w2 = start_worker("w1"), start_worker("w2")
    specs: list[tuple[WorkerProcess, list[str], str | None, str]] = [
        (w1, ["org-a"], "alice", "HS256"),
        (w2, ["org-a"], "alice", "RS256"),
        (w1, ["org-b"], "bob", "ES256"),
        (w2, ["org-a", "org-b"], "carol", "HS256"),
        (w2, ["org-c"], None, "RS256"),
    ]
    clients = [
        collect(w.ws, keys.token(orgs, user, alg=alg), extra_headers=ORIGIN)
        for w, orgs, user, alg in specs
    ]
    await _connected(*clients)
    audiences = [(orgs, user) for _w, orgs, user, _alg in specs]
    await _each_gets_exactly_its_events(
        producer, topics, [w1, w2], clients, audiences, count=60, seed=1
    )
    passes = w1.metric("clarion_worker_write_pass_duration_seconds_count")
    assert (passes > 0) == (write_path == "direct")


@pytest.mark.parametrize("seed", [7, 42])
async def test_isolation_randomized_orgs_users_and_topics(
    seed: int,
    start_worker: StartWorker,
    topics: ChannelTopics,
    keys: Keys,
    producer: Producer,
    collect: Collect,
) -> None:
    worker = start_worker()
    rng = random.Random(seed)
    people = [
        ("alice", ["org-a"]),
        ("bob", ["org-b"]),
        ("carol", ["org-a", "org-c"]),
        ("dave", ["org-d"]),
        ("erin", []),
        (None, ["org-b", "org-d"]),
    ]
    specs = [rng.choice(people) for _ in range(10)]
    clients = [
        collect(worker.ws, keys.token(orgs, user), extra_headers=ORIGIN) for user, orgs in specs
    ]
    await _connected(*clients)
    audiences = [(orgs, user) for user, orgs in specs]
    await _each_gets_exactly_its_events(
        producer, topics, [worker], clients, audiences, count=80, seed=seed
    )
    announcements = [r["data"]["seq"] for r in producer.sent if r["topic"] == topics.bcast]
    for client, (user, orgs) in zip(clients, specs, strict=True):
        got = client.seqs()
        assert {
            e["organizationId"] for e in client.events if e["topic"] == topics.approvals
        } <= set(orgs)
        assert {e.get("userId") for e in client.events if e["topic"] == topics.notify} <= {user}
        assert set(announcements) <= set(got)


async def test_a_batch_of_new_sessions_is_frozen_out_of_the_collector_and_still_served(
    start_worker: StartWorker,
    topics: ChannelTopics,
    keys: Keys,
    producer: Producer,
    collect: Collect,
) -> None:
    """The worker's process freezes what the collector tracks after every 200 new
    sessions (core/collection.py, issue 17's W4): the counter says so, and the frozen
    sessions still get exactly their events, and the later ones too."""
    worker = start_worker()
    people = [("alice", ["org-a"]), ("bob", ["org-b"]), (None, ["org-a", "org-d"])]
    specs = [people[i % len(people)] for i in range(205)]
    clients = [
        collect(worker.ws, keys.token(orgs, user), extra_headers=ORIGIN) for user, orgs in specs
    ]
    await _connected(*clients)
    await metric_reaches(worker, "clarion_worker_gc_freezes_total", 1)
    assert worker.metric("clarion_worker_gc_freezes_total") == 1
    audiences = [(orgs, user) for user, orgs in specs]
    await _each_gets_exactly_its_events(
        producer, topics, [worker], clients, audiences, count=40, seed=5
    )


@pytest.mark.parametrize("window_events", [10000, 0], ids=["window", "kafka"])
async def test_resume_on_the_other_worker_mid_stream_exactly(
    window_events: int,
    start_worker: StartWorker,
    topics: ChannelTopics,
    keys: Keys,
    producer: Producer,
    collect: Collect,
) -> None:
    w1 = start_worker("w1")
    w2 = start_worker("w2", resume={"windowEvents": window_events})
    token = keys.token(["org-a"], "alice")
    first = collect(w1.ws, token, extra_headers=ORIGIN)
    await _connected(first)

    halfway = asyncio.Event()

    async def stream() -> None:
        await _produce_mix(producer, topics, 60, seed=3)
        halfway.set()
        await _produce_mix(producer, topics, 60, seed=4)

    flowing = asyncio.create_task(stream())
    await first.wait(lambda c: len(c.events) >= 10)
    await first.stop()
    before = list(first.events)
    # Let events flow past the client's cursor, so there is something to replay.
    await halfway.wait()
    await consumed_reaches(w2, 60)
    second = collect(w2.ws, token, last_id=before[-1]["id"], extra_headers=ORIGIN)
    await flowing
    await settle(producer, [w1, w2], [second], topics.bcast)
    received = [e["data"]["seq"] for e in before] + second.seqs()
    assert_exact(received, expected_for(producer.sent, {"org-a"}, "alice", topics), producer.sent)
    outcome = "window" if window_events else "kafka"
    assert w2.metric("clarion_worker_resumes_total", outcome=outcome) == 1


async def test_resume_after_sigkill_of_the_worker(
    start_worker: StartWorker,
    topics: ChannelTopics,
    keys: Keys,
    producer: Producer,
    collect: Collect,
) -> None:
    w1, w2 = start_worker("w1"), start_worker("w2")
    token = keys.token(["org-b"], "bob")
    first = collect(w1.ws, token, extra_headers=ORIGIN)
    await _connected(first)
    flowing = asyncio.create_task(_produce_mix(producer, topics, 120, seed=5))
    await first.wait(lambda c: len(c.events) >= 8)
    w1.kill()
    await first.stop()
    second = collect(w2.ws, token, last_id=first.events[-1]["id"], extra_headers=ORIGIN)
    await flowing
    await settle(producer, [w2], [second], topics.bcast)
    received = first.seqs() + second.seqs()
    assert_exact(received, expected_for(producer.sent, {"org-b"}, "bob", topics), producer.sent)


async def test_reset_beyond_the_replay_bound_and_for_a_bad_cursor(
    start_worker: StartWorker,
    topics: ChannelTopics,
    keys: Keys,
    producer: Producer,
    collect: Collect,
) -> None:
    worker = start_worker(resume={"maxReplayEvents": 5})
    token = keys.token(["org-a"], "alice")
    first = collect(worker.ws, token, extra_headers=ORIGIN)
    await _connected(first)
    await producer.send(topics.approvals, "APPROVAL_PENDING", "org-a", key="k")
    await first.wait_count(1)
    await first.stop()
    for _ in range(20):
        await producer.send(topics.approvals, "APPROVAL_PENDING", "org-a", key="k")
    await consumed_reaches(worker, 21)
    behind = collect(worker.ws, token, last_id=first.events[-1]["id"], extra_headers=ORIGIN)
    garbage = collect(worker.ws, token, last_id="not-a-cursor!", extra_headers=ORIGIN)
    await behind.wait(lambda c: bool(c.resets))
    await garbage.wait(lambda c: bool(c.resets))
    assert behind.resets[0]["reason"] == "too_far_behind"
    assert garbage.resets[0]["reason"] == "bad_cursor"
    # After a reset the stream continues live.
    await producer.send(topics.approvals, "APPROVAL_PENDING", "org-a", key="k")
    await behind.wait_count(1)
    assert behind.events[0]["data"]["seq"] == producer.seq


async def _read_sse(
    url: str,
    headers: Mapping[str, str],
    want: int,
    received: list[dict[str, Any]],
    opened: asyncio.Event | None = None,
) -> str:
    """Read SSE frames until ``want`` events; return the last event id. ``opened`` is set
    at the welcome frame: the stream is registered from then on."""
    last_id = ""
    async with (
        httpx.AsyncClient(timeout=30) as client,
        client.stream("GET", url, headers=headers) as response,
    ):
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        event_id = ""
        async for line in response.aiter_lines():
            if line.startswith("id: "):
                event_id = line[4:]
            elif line.startswith("data: "):
                frame = json.loads(line[6:])
                if frame["type"] == "welcome" and opened is not None:
                    opened.set()
                elif frame["type"] == "event":
                    received.append(frame)
                    last_id = event_id
                    if len(received) >= want:
                        return last_id
    return last_id


async def test_sse_with_last_event_id_resumes_exactly(
    start_worker: StartWorker, topics: ChannelTopics, keys: Keys, producer: Producer
) -> None:
    worker = start_worker()
    token = keys.token(["org-a"], "alice")
    url = f"{worker.http}/sse/dashboard?access_token={token}"
    first: list[dict[str, Any]] = []
    opened = asyncio.Event()
    reader = asyncio.create_task(_read_sse(url, ORIGIN, 5, first, opened))
    await asyncio.wait_for(opened.wait(), 20)
    for _ in range(5):
        await producer.send(topics.approvals, "APPROVAL_PENDING", "org-a", key="k")
    last_id = await asyncio.wait_for(reader, 20)
    for _ in range(7):
        await producer.send(topics.approvals, "APPROVAL_PENDING", "org-a", key="k")
    second: list[dict[str, Any]] = []
    await asyncio.wait_for(_read_sse(url, {**ORIGIN, "Last-Event-ID": last_id}, 7, second), 20)
    assert [e["data"]["seq"] for e in first + second] == list(range(1, 13))
    # Every event counted once as delivered, and no welcome (counted per SSE message).
    await metric_reaches(worker, "clarion_worker_deliveries_total", 12, transport="sse")
    assert worker.metric("clarion_worker_deliveries_total", transport="sse") == 12


@pytest.mark.parametrize("write_path", ["direct", "asgi"], indirect=True)
async def test_a_client_that_stops_reading_is_closed_slow_while_others_keep_up(
    start_worker: StartWorker,
    topics: ChannelTopics,
    keys: Keys,
    producer: Producer,
    collect: Collect,
) -> None:
    worker = start_worker(
        limits={"queueMaxEvents": 64, "queueMaxBytes": 512 * 1024, "maxRecordBytes": 256 * 1024},
        heartbeat={"intervalSeconds": 2, "timeoutSeconds": 2},
    )
    token = keys.token(["org-a"], "alice")
    # Healthy, but a Python client sharing this process with the producer cannot take
    # the 15 MB of padding either: it narrows to the small events, so that being closed
    # as slow (its close codes are recorded since the client reads them) means it was
    # held back.
    healthy = collect(worker.ws, token, extra_headers=ORIGIN, event_types=["APPROVAL_PENDING"])
    await _connected(healthy)
    # It reads nothing and never pings or times out on its own: only the server can cut it.
    stalled = await _reluctant_reader(worker, token, close_timeout=None)
    try:
        # Far more than the kernel's socket buffers hold, so the stalled client's outbox fills.
        big = "x" * 150_000
        for _ in range(100):
            await producer.send(topics.approvals, "APPROVAL_PENDING", "org-a", key="k")
            await producer.raw(
                topics.bcast,
                json.dumps({"type": "PAD", "organizationId": None, "data": big}).encode(),
            )
        await healthy.wait(
            lambda c: sum(1 for e in c.events if e["eventType"] == "APPROVAL_PENDING") >= 100
        )
        # The stalled client reads nothing, not even the close frame: the worker stops
        # delivering at once and the kernel aborts the socket once its data has waited
        # heartbeat interval + timeout (TCP_USER_TIMEOUT), since uvicorn's ping timeout
        # only closes, which waits for a flush that never comes.
        await metric_reaches(
            worker,
            "clarion_worker_disconnects_total",
            1,
            within=60,
            transport="websocket",
            code="4008",
        )
    finally:
        # It would wait forever for a close frame it does not read: drop it.
        stalled.transport.abort()
    assert worker.metric("clarion_worker_drops_total", reason="slow_consumer") >= 1
    assert healthy.client.stats.close_codes == []
    # A sanity bound, not a benchmark: the stalled client never held the others back.
    assert max(healthy.latencies()) < 5.0


async def test_bad_records_are_skipped_and_counted(
    start_worker: StartWorker,
    topics: ChannelTopics,
    keys: Keys,
    producer: Producer,
    collect: Collect,
) -> None:
    worker = start_worker(limits={"maxRecordBytes": 2000})
    client = collect(worker.ws, keys.token(["org-a"], "alice"), extra_headers=ORIGIN)
    await _connected(client)
    bad: list[tuple[str, bytes | None, str]] = [
        (topics.approvals, b"not json at all", "not_json"),
        (topics.approvals, b"[1, 2, 3]", "not_object"),
        (
            topics.approvals,
            json.dumps({"type": "X", "organizationId": "org-a", "data": "y" * 3000}).encode(),
            "oversized",
        ),
        (topics.approvals, json.dumps({"type": "X", "data": {}}).encode(), "missing_organization"),
        # Naming neither a user nor an organization (with one, withoutUser decides).
        (topics.notify, json.dumps({"type": "X", "data": {}}).encode(), "missing_user"),
        (
            topics.approvals,
            json.dumps({"organizationId": "org-a", "data": {}}).encode(),
            "missing_type",
        ),
        (topics.approvals, None, "empty"),
    ]
    for topic, value, _reason in bad:
        await producer.raw(topic, value)
    await producer.send(topics.approvals, "APPROVAL_PENDING", "org-a", key="k")
    await settle(producer, [worker], [client], topics.bcast)
    assert client.seqs() == [1, 2]
    for topic, _value, reason in bad:
        assert worker.metric("clarion_worker_bad_records_total", topic=topic, reason=reason) == 1, (
            reason
        )


@pytest.mark.parametrize(
    ("case", "code"),
    [
        ("missing", 4001),
        ("bad_signature", 4001),
        ("expired", 4004),
        ("wrong_audience", 4003),
        ("origin", 4003),
        ("unknown_key", 4001),
    ],
)
async def test_bad_tokens_are_refused_in_band(
    case: str, code: int, start_worker: StartWorker, keys: Keys
) -> None:
    """An error frame and a 4xxx close: what browsers' and Dart's WebSocket APIs can see
    (an HTTP refusal before the upgrade reaches them only as 1006)."""
    worker = start_worker(auth=None)
    good = keys.token(["org-a"], "alice")
    token = {
        "missing": None,
        "bad_signature": good[:-4] + ("AAAA" if not good.endswith("AAAA") else "BBBB"),
        "expired": keys.token(["org-a"], "alice", ttl=-120),
        "wrong_audience": keys.token(["org-a"], "alice", audience="someone-else"),
        "origin": good,
        "unknown_key": keys.token(
            ["org-a"],
            "alice",
            alg="RS256",
            key=rsa.generate_private_key(65537, 2048),
            kid="rotated",
        ),
    }[case]
    headers = {"Origin": "https://evil.example" if case == "origin" else ORIGIN["Origin"]}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    async with connect(worker.ws, additional_headers=headers) as ws:
        error = json.loads(await asyncio.wait_for(ws.recv(), 10))
        assert (error["type"], error["code"]) == ("error", code)
        assert await _close_code(ws) == code
    reason = "origin_not_allowed" if case == "origin" else case
    assert worker.metric("clarion_worker_auth_failures_total", reason=reason) >= 1
    assert worker.metric("clarion_worker_connects_total", transport="websocket") == 0


def _strict_expiry(keys: Keys) -> dict[str, Any]:
    """HS256 tokens with no leeway: one that expires ends the connection at once."""
    return {
        "mode": "jwt",
        "hmacSecretFile": str(keys.hmac_file),
        "audience": AUDIENCE,
        "issuer": ISSUER,
        "leewaySeconds": 0,
    }


@pytest.mark.parametrize("write_path", ["direct", "asgi"], indirect=True)
async def test_tokens_by_query_and_subprotocol_and_expiry_during_the_connection(
    start_worker: StartWorker, keys: Keys
) -> None:
    worker = start_worker(auth=_strict_expiry(keys))
    token = keys.token(["org-a"], "alice", ttl=3)
    async with connect(f"{worker.ws}?access_token={token}") as by_query:
        welcome = json.loads(await by_query.recv())
        assert (welcome["type"], welcome["replicaId"]) == ("welcome", "w1")
    async with connect(worker.ws, subprotocols=["clarion.v1", f"bearer.{token}"]) as by_protocol:  # type: ignore[list-item]
        assert by_protocol.subprotocol == "clarion.v1"
        assert json.loads(await by_protocol.recv())["type"] == "welcome"
        await by_protocol.send('{"type":"ping"}')
        assert json.loads(await by_protocol.recv()) == {"type": "pong"}
        # The token expires 3 s in; the worker's sweep closes the socket with 4004.
        assert await _close_code(by_protocol) == 4004
    # uvicorn's per-connection line names the query: the token must not be in it.
    logged = worker.log.read_text()
    assert "access_token=[redacted]" in logged
    assert token not in logged
    assert token.rsplit(".", 1)[1] not in logged


async def test_an_sse_stream_whose_token_expires_ends_with_the_4004_error_message(
    start_worker: StartWorker, keys: Keys
) -> None:
    """Without the error message the stream just ended, and a client could not tell an
    expired token (refresh it) from an outage (back off)."""
    worker = start_worker(auth=_strict_expiry(keys))
    token = keys.token(["org-a"], "alice", ttl=3)
    messages: list[dict[str, Any]] = []
    async with (
        httpx.AsyncClient(timeout=30) as client,
        client.stream(
            "GET", f"{worker.http}/sse/dashboard?access_token={token}", headers=ORIGIN
        ) as response,
    ):
        assert response.status_code == 200
        async for line in response.aiter_lines():  # ends when the worker ends the stream
            if line.startswith("data: "):
                messages.append(json.loads(line.removeprefix("data: ")))
    assert [m["type"] for m in messages] == ["welcome", "error"], messages
    assert messages[-1]["code"] == 4004


@pytest.mark.parametrize("write_path", ["direct", "asgi"], indirect=True)
async def test_protocol_narrowing_and_bad_frames(
    start_worker: StartWorker, topics: ChannelTopics, keys: Keys, producer: Producer
) -> None:
    worker = start_worker()
    headers = {**ORIGIN, "Authorization": f"Bearer {keys.token(['org-a'], 'alice')}"}
    async with connect(worker.ws, additional_headers=headers) as ws:
        assert json.loads(await ws.recv())["type"] == "welcome"
        await ws.send(json.dumps({"type": "subscribe", "eventTypes": ["WANTED"]}))
        await ws.send("ping")
        assert json.loads(await ws.recv()) == {"type": "pong"}  # subscribe was applied before
        await producer.send(topics.approvals, "UNWANTED", "org-a", key="k")
        await producer.send(topics.approvals, "WANTED", "org-a", key="k")
        event = json.loads(await asyncio.wait_for(ws.recv(), 10))
        assert (event["type"], event["eventType"], event["data"]["seq"]) == ("event", "WANTED", 2)
    async with connect(worker.ws, additional_headers=headers) as ws:
        await ws.recv()
        await ws.send("{not json")
        assert await _close_code(ws) == 4009


@pytest.mark.parametrize("write_path", ["direct", "asgi"], indirect=True)
async def test_drain_fails_readiness_spreads_reconnect_advice_and_exits(
    start_worker: StartWorker, keys: Keys
) -> None:
    worker = start_worker(drain={"windowSeconds": 3})
    headers = {**ORIGIN, "Authorization": f"Bearer {keys.token(['org-a'], 'alice')}"}
    sockets = [await connect(worker.ws, additional_headers=headers) for _ in range(12)]
    for ws in sockets:
        assert json.loads(await ws.recv())["type"] == "welcome"

    async def advice(ws: Any) -> tuple[float, int, int]:
        frame = json.loads(await asyncio.wait_for(ws.recv(), 15))
        at = time.monotonic()
        return at, frame["afterMs"], await _close_code(ws)

    waiting = [asyncio.create_task(advice(ws)) for ws in sockets]
    started = time.monotonic()
    worker.terminate()
    await metric_reaches(worker, "clarion_worker_draining", 1, within=5)
    async with httpx.AsyncClient(timeout=2) as http:
        assert (await http.get(f"{worker.http}/readyz")).status_code == 503
    results = await asyncio.gather(*waiting)
    assert {code for _at, _after, code in results} == {4100}
    arrivals = sorted(at - started for at, _after, _code in results)
    assert arrivals[-1] - arrivals[0] > 1.0, f"advice not spread over the window: {arrivals}"
    assert all(0 <= after <= 3000 for _at, after, _code in results)
    assert await asyncio.to_thread(worker.proc.wait, 15) == 0
    assert time.monotonic() - started < 3 + 6


async def test_partitions_added_later_are_picked_up(
    start_worker: StartWorker,
    topics: ChannelTopics,
    keys: Keys,
    producer: Producer,
    collect: Collect,
    kafka_bootstrap: str,
) -> None:
    worker = start_worker()
    client = collect(worker.ws, keys.token(["org-a"], "alice"), extra_headers=ORIGIN)
    await _connected(client)
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await admin.start()
    try:
        await admin.create_partitions({topics.approvals: NewPartitions(5)})
    finally:
        await admin.close()
    body = json.dumps({"type": "NEW", "organizationId": "org-a", "data": {"seq": 1}}).encode()
    async with asyncio.timeout(20):
        while True:  # the worker re-reads partition counts every second in tests
            await producer.kafka.send_and_wait(topics.approvals, body, partition=4)
            try:
                await client.wait_count(1, within=1.5)
                break
            except TimeoutError:
                continue
    assert client.events[0]["eventType"] == "NEW"


async def test_jwks_from_a_url_and_clarion_tail(
    start_worker: StartWorker, topics: ChannelTopics, keys: Keys, producer: Producer
) -> None:
    jwks = keys.jwks_file.read_bytes()

    class Jwks(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(jwks)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Jwks)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        auth = {
            "mode": "jwt",
            "jwksUrl": f"http://127.0.0.1:{server.server_address[1]}/jwks.json",
            "audience": "clarion-tests",
            "issuer": "https://auth.unionflow.test",
        }
        worker = start_worker(auth=auth)
        token = keys.token(["org-a"], "alice", alg="ES256")
        tail = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "clarion_client.cli",
            "tail",
            worker.ws,
            "--token",
            token,
            "--count",
            "2",
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        assert tail.stderr is not None
        welcome = json.loads(await asyncio.wait_for(tail.stderr.readline(), 20))
        assert welcome["type"] == "welcome"
        await producer.send(topics.approvals, "APPROVAL_PENDING", "org-a", key="k")
        await producer.send(topics.approvals, "APPROVAL_PENDING", "org-b", key="k")
        await producer.send(topics.bcast, "ANNOUNCEMENT", None, key="all")
        out, _ = await asyncio.wait_for(tail.communicate(), 20)
        assert tail.returncode == 0
        lines = [json.loads(line) for line in out.decode().splitlines()]
        assert [(e["eventType"], e["organizationId"]) for e in lines] == [
            ("APPROVAL_PENDING", "org-a"),
            ("ANNOUNCEMENT", None),
        ]
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize("write_path", ["direct", "asgi"], indirect=True)
async def test_routing_from_headers_batch_frames_and_limits(
    start_worker: StartWorker,
    topics: ChannelTopics,
    keys: Keys,
    producer: Producer,
    collect: Collect,
) -> None:
    worker = start_worker(
        routing={"organizationHeader": "org", "typeHeader": "type"},
        limits={"maxConnections": 2},
    )
    batched = collect(worker.ws, keys.token(["org-a"], "alice"), batch=True, extra_headers=ORIGIN)
    await _connected(batched)
    # Routing facts in headers: the JSON body carries only the payload. One record
    # batch, so the worker has the fifty in one pass and must frame them as batches.
    await producer.raw_batch(
        topics.approvals,
        [
            (json.dumps({"data": {"n": n}}).encode(), [("org", b"org-a"), ("type", b"KPI_UPDATE")])
            for n in range(50)
        ],
    )
    await producer.raw(
        topics.approvals,
        json.dumps({"data": {}}).encode(),
        headers=[("org", b"org-b"), ("type", b"X")],
    )
    await batched.wait_count(50)
    assert [e["data"]["n"] for e in batched.events] == list(range(50))
    assert {(e["eventType"], e["organizationId"]) for e in batched.events} == {
        ("KPI_UPDATE", "org-a")
    }
    assert (
        worker.metric("clarion_worker_frames_sent_total", transport="websocket", kind="batch") >= 1
    )

    headers = {**ORIGIN, "Authorization": f"Bearer {keys.token(['org-a'], 'alice')}"}
    async with connect(worker.ws, additional_headers=headers) as second:
        assert json.loads(await second.recv())["type"] == "welcome"
        async with connect(worker.ws, additional_headers=headers) as third:
            assert await _close_code(third) == 4013
        await second.send("x" * 5000)  # above limits.maxClientFrameBytes (4 KiB)
        assert await _close_code(second) == 1009


@pytest.mark.parametrize("write_path", ["direct", "asgi"], indirect=True)
async def test_a_client_dropped_before_its_first_event_resumes_from_the_welcome(
    start_worker: StartWorker,
    topics: ChannelTopics,
    keys: Keys,
    producer: Producer,
    collect: Collect,
) -> None:
    w1, w2 = start_worker("w1"), start_worker("w2")
    headers = {**ORIGIN, "Authorization": f"Bearer {keys.token(['org-a'], 'alice')}"}
    async with connect(w1.ws, additional_headers=headers) as ws:
        welcome = json.loads(await ws.recv())
    assert welcome["position"]
    # Events published while the client is away, before it ever received one.
    for _ in range(5):
        await producer.send(topics.approvals, "APPROVAL_PENDING", "org-a", key="k")
    await consumed_reaches(w2, 5)
    back = collect(
        w2.ws, keys.token(["org-a"], "alice"), last_id=welcome["position"], extra_headers=ORIGIN
    )
    await settle(producer, [w2], [back], topics.bcast)
    assert back.seqs() == [1, 2, 3, 4, 5, 6]


@pytest.mark.parametrize("write_path", ["direct", "asgi"], indirect=True)
async def test_disconnects_are_counted_by_their_real_code(
    write_path: str, start_worker: StartWorker, keys: Keys
) -> None:
    """1009 and 1006 were counted as 1000; an error frame now precedes the 1009."""
    worker = start_worker(limits={"maxClientFrameBytes": 1024})
    headers = {**ORIGIN, "Authorization": f"Bearer {keys.token(['org-a'], 'alice')}"}
    async with connect(worker.ws, additional_headers=headers) as big:
        assert json.loads(await big.recv())["type"] == "welcome"
        await big.send(json.dumps({"type": "subscribe", "eventTypes": ["x" * 2000]}))
        error = json.loads(await asyncio.wait_for(big.recv(), 10))
        assert (error["type"], error["code"]) == ("error", 1009)
        assert await _close_code(big) == 1009
    dropped = await connect(worker.ws, additional_headers=headers)
    assert json.loads(await dropped.recv())["type"] == "welcome"
    dropped.transport.abort()  # no close frame: a lost connection
    await metric_reaches(
        worker, "clarion_worker_disconnects_total", 1, transport="websocket", code="1009"
    )
    await metric_reaches(
        worker, "clarion_worker_disconnects_total", 1, transport="websocket", code="1006"
    )
    assert (
        worker.metric("clarion_worker_disconnects_total", transport="websocket", code="1000") == 0
    )


async def test_a_slow_client_that_still_reads_receives_its_4008(
    start_worker: StartWorker,
    topics: ChannelTopics,
    keys: Keys,
    producer: Producer,
) -> None:
    """It reads, just far slower than events come (a weak mobile link): the error frame
    and 4008 wait behind what is already in the socket's buffers, which no server can
    recall. It must still get them, not a 1006 because the close was aborted two seconds
    in while it was reading its way there."""
    worker = start_worker(
        limits={"queueMaxEvents": 64, "queueMaxBytes": 512 * 1024, "maxRecordBytes": 256 * 1024}
    )
    token = keys.token(["org-a"], "alice")
    slow = await _reluctant_reader(worker, token, max_size=None)
    seen: list[dict[str, Any]] = []
    reading = asyncio.Event()

    async def read_slowly() -> int:
        try:
            while True:
                seen.append(json.loads(await slow.recv()))
                reading.set()
                await asyncio.sleep(1.0)  # 150 kB/s of 150 kB events
        except websockets.exceptions.ConnectionClosed as closed:
            return closed.rcvd.code if closed.rcvd else 1006

    reader = asyncio.create_task(read_slowly())
    big = json.dumps({"type": "PAD", "organizationId": None, "data": "x" * 150_000}).encode()
    try:
        # First what the socket's buffers can hold: 450 kB, under the queue's 512 kB even
        # if they come in one fetch, so they are written, not dropped with the queue. (The
        # flood alone can overflow the queue in its first fetch, before anything is
        # written: then the error frame comes first, and the test shows nothing.)
        for _ in range(3):
            await producer.raw(topics.bcast, big)
        reading.clear()
        await asyncio.wait_for(reading.wait(), 20)  # the first of them is being read
        for _ in range(100):  # 15 MB at once: far more than it can take
            await producer.raw(topics.bcast, big)
        code = await asyncio.wait_for(reader, 60)
    finally:
        reader.cancel()
        slow.transport.abort()
    assert code == 4008, f"closed with {code} after {len(seen)} frames"
    assert seen[-1] == {"type": "error", "code": 4008, "message": "outbound queue overflowed"}
    # More than 2 s of reading (the old fixed deadline) was ahead of the close.
    assert len(seen) > 3, [frame["type"] for frame in seen]
