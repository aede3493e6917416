"""Clarion's benchmarks: workloads W1-W5 and the peers, driven against the local stack.

    CLARION_STATE_DIR=.clarion-bench .venv/bin/python bench/run.py --smoke
    CLARION_STATE_DIR=.clarion-bench .venv/bin/python bench/run.py --workloads w1,w2,w3,w4

Servers are pinned to core 0 and the Go load generator (bench/loadgen, built into the
user cache by the devstack's ensure_go) to core 1. Events carry {"seq","key","t"} in
their data: seq counts per key from 1, t is the producer's clock in microseconds, so the
load generator measures latency from produce to receive and checks sequence integrity.
The result is one JSON document (stdout, and bench/results/<date>.json unless --smoke).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import hashlib
import json
import os
import platform
import resource
import selectors
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import jwt
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from latency import latency_schedule  # type: ignore[import-not-found]  # bench/latency.py
from procstat import cpu_seconds, loadavg, process_tree, rss_kib  # type: ignore[import-not-found]
from websockets.asyncio.client import ClientConnection, connect

from clarion_devstack.harness import AUDIENCE, ISSUER, ChannelTopics, Keys
from clarion_devstack.install import GoBuild, ensure_go
from clarion_devstack.settings import DevstackSettings

BENCH = Path(__file__).resolve().parent
CHECKOUT = BENCH.parent
SERVER_CPU = 0
LOADGEN_CPU = 1
CENTRIFUGO_VERSION = "6.9.1"
CENTRIFUGO_API_KEY = "bench-api-key"
#: Pads event data so Clarion's envelope is about 200 bytes, like the calibration's.
PAD = "x" * 48

Json = dict[str, Any]


# ---- builds ---------------------------------------------------------------------------


def _tree_hash(folder: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(folder.rglob("*")):
        if path.is_file() and path.suffix in (".go", ".mod", ".sum"):
            digest.update(path.name.encode() + path.read_bytes())
    return digest.hexdigest()[:12]


def build_loadgen(settings: DevstackSettings) -> Path:
    """The Go load generator, rebuilt when any of its files changes."""
    build = GoBuild(
        name="bench",
        version=_tree_hash(BENCH / "loadgen"),
        module="bench/loadgen",
        packages=("clarion.local/bench/loadgen",),
    )
    return ensure_go(settings, build) / "loadgen"


def build_centrifugo(settings: DevstackSettings) -> Path:
    build = GoBuild(
        name="centrifugo",
        version=CENTRIFUGO_VERSION,
        module="bench/peers/centrifugo",
        packages=("github.com/centrifugal/centrifugo/v6",),
    )
    # go build names a /vN module path after the element before the version suffix.
    return ensure_go(settings, build) / "centrifugo"


# ---- processes ------------------------------------------------------------------------


def pin(pid: int, cpu: int) -> None:
    for one in process_tree(pid):
        subprocess.run(
            ["taskset", "-a", "-p", "-c", str(cpu), str(one)],
            check=False,
            stdout=subprocess.DEVNULL,
        )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Server:
    """A server under test: its process, the URL clients use, and its CPU meter."""

    name: str
    proc: subprocess.Popen[bytes]
    url: str
    http: str
    log: Path
    _cpu_mark: float = 0.0
    _time_mark: float = 0.0

    @property
    def pid(self) -> int:
        return self.proc.pid

    def mark(self) -> None:
        self._cpu_mark = cpu_seconds(self.pid)
        self._time_mark = time.monotonic()

    def cpu_percent(self) -> float:
        elapsed = time.monotonic() - self._time_mark
        used = float(cpu_seconds(self.pid)) - self._cpu_mark
        return round(100 * used / max(elapsed, 1e-9), 1)

    def stop(self, sig: int = signal.SIGKILL) -> None:
        if self.proc.poll() is None:
            for one in reversed(process_tree(self.pid)):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(one, sig)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=15)


def start_server(
    name: str, argv: list[str], url: str, ready: str, workdir: Path, env: dict[str, str]
) -> Server:
    log = workdir / f"{name}.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            ["taskset", "-c", str(SERVER_CPU), *argv],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=workdir,
        )
    http = ready.rsplit("/", 1)[0]
    deadline = time.monotonic() + 90
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"{name} exited: {log.read_text()[-2000:]}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(ready, timeout=1).status_code < 500:
                break
        if time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError(f"{name} not ready in 90 s: {log}")
        time.sleep(0.2)
    time.sleep(0.5)  # let a server that forks workers finish starting them
    pin(proc.pid, SERVER_CPU)
    server = Server(name, proc, url, http, log)
    server.mark()
    return server


class Loadgen:
    """One Go load generator process, controlled by lines on its stdin."""

    def __init__(self, binary: Path, args: list[str], log: Path) -> None:
        self.argv = ["taskset", "-c", str(LOADGEN_CPU), str(binary), *args]
        self._stderr = log.open("wb")
        self.proc = subprocess.Popen(
            self.argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._stderr
        )
        self._sel = selectors.DefaultSelector()
        assert self.proc.stdout is not None
        self._sel.register(self.proc.stdout, selectors.EVENT_READ)
        self._buffer = b""

    def _line(self, timeout: float) -> Json:
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        while b"\n" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not self._sel.select(left):
                raise TimeoutError(f"load generator silent for {timeout} s")
            chunk = os.read(self.proc.stdout.fileno(), 1 << 20)
            if not chunk:
                raise RuntimeError(f"load generator exited ({self.proc.poll()})")
            self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        result: Json = json.loads(line)
        return result

    def ready(self, timeout: float = 180) -> Json:
        return self._line(timeout)

    def command(self, text: str, timeout: float = 30) -> Json:
        assert self.proc.stdin is not None
        self.proc.stdin.write(text.encode() + b"\n")
        self.proc.stdin.flush()
        return self._line(timeout)

    def mark(self, label: str) -> Json:
        return self.command(f"mark {label}")

    def peek(self) -> Json:
        return self.command("peek")

    def close(self) -> Json | None:
        final = None
        with contextlib.suppress(Exception):
            final = self.command("quit")
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=10)
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._stderr.close()
        return final


# ---- publishers -----------------------------------------------------------------------


@dataclass
class Publisher:
    """Numbers events per key and sends them through one server's ingestion path."""

    send: Callable[[str, str | None, str], Awaitable[None]]
    flush: Callable[[], Awaitable[None]]
    produced: dict[str, int] = field(default_factory=dict)

    async def publish(self, key: str, org: str | None) -> None:
        seq = self.produced.get(key, 0) + 1
        self.produced[key] = seq
        data = {"seq": seq, "key": key, "t": time.time_ns() // 1000, "pad": PAD}
        await self.send(key, org, json.dumps(data, separators=(",", ":")))


async def paced(
    publisher: Publisher, rate: float, seconds: float, pick: Callable[[int], tuple[str, str | None]]
) -> int:
    """Publish ``rate`` events/s for ``seconds``; ``pick(n)`` gives the n-th key and org."""
    started = time.monotonic()
    sent = 0
    while True:
        elapsed = time.monotonic() - started
        if elapsed >= seconds:
            break
        due = int(rate * elapsed) + 1
        while sent < due:
            key, org = pick(sent)
            await publisher.publish(key, org)
            sent += 1
        await asyncio.sleep(0.005)
    await publisher.flush()
    return sent


async def kafka_publisher(
    bootstrap: str, topics: ChannelTopics
) -> tuple[Publisher, AIOKafkaProducer]:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=2, acks=1)
    await producer.start()
    # The first send to a new topic waits for its metadata and leader: do it before any
    # measured event (a warm-up carries no seq, so the load generator ignores it).
    for topic, org in ((topics.bcast, "null"), (topics.approvals, '"org-warm-up"')):
        warm = f'{{"type":"WARMUP","organizationId":{org},"data":{{}}}}'
        await producer.send_and_wait(topic, warm.encode(), key=b"warm-up")

    async def send(key: str, org: str | None, data: str) -> None:
        topic = topics.bcast if org is None else topics.approvals
        org_json = json.dumps(org)
        value = f'{{"type":"TICK","organizationId":{org_json},"data":{data}}}'
        await producer.send(topic, value.encode(), key=key.encode())

    async def flush() -> None:
        await producer.flush()

    return Publisher(send, flush), producer


async def ws_publisher(url: str) -> tuple[Publisher, ClientConnection]:
    conn = await connect(url, compression=None)

    async def send(_key: str, _org: str | None, data: str) -> None:
        await conn.send(
            '{"type":"event","id":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAA","topic":"bench.bcast",'
            f'"eventType":"TICK","organizationId":null,"data":{data},"ts":0}}'
        )

    async def flush() -> None:
        return None

    return Publisher(send, flush), conn


def centrifugo_publisher(http: str, client: httpx.AsyncClient) -> Publisher:
    async def send(_key: str, _org: str | None, data: str) -> None:
        response = await client.post(
            f"{http}/api/publish",
            content=f'{{"channel":"bcast","data":{data}}}',
            headers={"X-API-Key": CENTRIFUGO_API_KEY, "Content-Type": "application/json"},
        )
        response.raise_for_status()

    async def flush() -> None:
        return None

    return Publisher(send, flush)


# ---- the bench context ----------------------------------------------------------------


@dataclass
class Bench:
    settings: DevstackSettings
    bootstrap: str
    loadgen_bin: Path
    workdir: Path
    keys: Keys
    log: list[str] = field(default_factory=list)

    def say(self, text: str) -> None:
        line = f"[bench {time.strftime('%H:%M:%S')}] {text}"
        self.log.append(line)
        print(line, file=sys.stderr, flush=True)

    async def topics(self) -> ChannelTopics:
        run = uuid.uuid4().hex[:8]
        topics = ChannelTopics(f"bench-{run}-org", f"bench-{run}-user", f"bench-{run}-bcast")
        admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap)
        await admin.start()
        try:
            await admin.create_topics(
                [
                    NewTopic(topics.approvals, 4, 1),
                    NewTopic(topics.notify, 1, 1),
                    NewTopic(topics.bcast, 1, 1),
                ]
            )
        finally:
            await admin.close()
        return topics

    def worker_config(self, name: str, topics: ChannelTopics) -> Path:
        doc = {
            "apiVersion": "clarion.dev/worker-config/v1",
            "channel": "bench",
            "kafka": {"bootstrapServers": self.bootstrap},
            "topics": topics.config(),
            "auth": {
                "mode": "jwt",
                "hmacSecretFile": str(self.keys.hmac_file),
                "algorithms": ["HS256"],
                "audience": AUDIENCE,
                "issuer": ISSUER,
                "allowedOrigins": ["https://app.unionflow.test"],
            },
            "limits": {"maxConnections": 40000},
            "drain": {"windowSeconds": 2},
        }
        path = self.workdir / f"{name}.json"
        path.write_text(json.dumps(doc))
        return path

    def env(self, **extra: str) -> dict[str, str]:
        # The worker rejects unknown CLARION_* variables (CLARION_STATE_DIR is the stack's).
        inherited = {
            key: value
            for key, value in os.environ.items()  # noqa: TID251 - child process env
            if not key.startswith("CLARION_")
        }
        return {**inherited, "CLARION_LOG_LEVEL": "warning", **extra}

    def clarion(self, name: str, topics: ChannelTopics, server: str = "uvicorn") -> Server:
        config = self.worker_config(name, topics)
        port = free_port()
        python = str(CHECKOUT / ".venv/bin/python")
        env = self.env(CLARION_REPLICA_ID=name, CLARION_CONFIG=str(config))
        if server == "uvicorn":
            argv = [python, "-m", "clarion_worker", "--config", str(config)]
            argv += ["--host", "127.0.0.1", "--port", str(port)]
        else:
            argv = [str(CHECKOUT / ".venv/bin/granian"), "--interface", "asgi", "--factory"]
            argv += ["--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
            argv += ["--loop", "uvloop", "--no-ws" if server == "granian-nows" else "--ws"]
            argv += ["--working-dir", str(BENCH / "peers"), "granian_app:create"]
        ws = f"ws://127.0.0.1:{port}/ws/dashboard"
        return start_server(
            f"{name}-{server}", argv, ws, f"http://127.0.0.1:{port}/readyz", self.workdir, env
        )

    def tokens(self, count: int, orgs: int) -> Path:
        """One HS256 token per connection: organization i mod orgs, user u<i>."""
        path = self.workdir / f"tokens-{count}-{orgs}.txt"
        if not path.exists():
            lines = [
                self.keys.token([org_of(i, orgs)], f"u{i}", ttl=6 * 3600) for i in range(count)
            ]
            path.write_text("\n".join(lines) + "\n")
        return path

    def loadgen(self, name: str, url: str, conns: int, *extra: str) -> Loadgen:
        args = ["-url", url, "-conns", str(conns), *extra]
        return Loadgen(self.loadgen_bin, args, self.workdir / f"loadgen-{name}.log")


def org_of(i: int, orgs: int) -> str:
    return f"org-{i % orgs:03d}"


def recipients(conns: int, orgs: int) -> dict[str, int]:
    counts: dict[str, int] = {}
    for i in range(conns):
        counts[org_of(i, orgs)] = counts.get(org_of(i, orgs), 0) + 1
    return counts


def losses(stats: Json, produced: dict[str, int], audience: dict[str, int]) -> int:
    """Deliveries expected minus deliveries seen in order, over every key (cumulative)."""
    keys: dict[str, Json] = stats.get("keys", {})
    lost = 0
    for key, count in produced.items():
        expected = count * audience[key]
        lost += expected - int(keys.get(key, {}).get("delivered", 0))
    return lost


def settle(gen: Loadgen, produced: dict[str, int], audience: dict[str, int], within: float) -> Json:
    """Wait (bounded) until every expected delivery arrived or nothing moves for 10 s."""
    deadline = time.monotonic() + within
    last = -1
    still_since = time.monotonic()
    while True:
        peek = gen.peek()
        lost = losses(peek, produced, audience)
        if lost <= 0 or time.monotonic() > deadline:
            return peek
        if lost != last:
            last, still_since = lost, time.monotonic()
        elif time.monotonic() - still_since > 10:
            return peek
        time.sleep(0.2)


def summary(stats: Json) -> Json:
    return {k: v for k, v in stats.items() if k != "keys"}


def pick_bcast(_n: int) -> tuple[str, str | None]:
    return "all", None


# ---- workloads ------------------------------------------------------------------------


async def w1_dashboard(
    bench: Bench, conns: int, orgs: int, rate: float, seconds: float, profile: bool = False
) -> Json:
    """Organization-scoped events over many organizations: each reaches conns/orgs clients."""
    topics = await bench.topics()
    server = bench.clarion("w1", topics)
    publisher, producer = await kafka_publisher(bench.bootstrap, topics)
    gen = bench.loadgen(
        "w1", server.url, conns, "-tokens", str(bench.tokens(conns, orgs)), "-batch"
    )
    try:
        ready = gen.ready()
        bench.say(f"W1 connected: {ready}")
        audience = recipients(conns, orgs)
        server.mark()
        gen.mark("warm")
        load = loadavg()

        def pick(n: int) -> tuple[str, str | None]:
            org = org_of(n * 7919, orgs)  # spread over organizations
            return org, org

        spy = start_profile(bench, server.pid, seconds, "profile-w1") if profile else None
        await paced(publisher, rate, seconds, pick)
        server_cpu = server.cpu_percent()
        if spy is not None:
            spy.wait()
        settle(gen, publisher.produced, audience, 30)
        stats = gen.mark("w1")
        lost = losses(stats, publisher.produced, audience)
        return {
            "workload": "W1 dashboard",
            "server": "clarion-uvicorn",
            "connections": ready["connected"],
            "organizations": orgs,
            "events_per_s": rate,
            "seconds": seconds,
            "server_cpu_percent": server_cpu,
            "server_rss_kib": rss_kib(server.pid),
            "losses": lost,
            **measured(spy, load, stats),
        }
    finally:
        gen.close()
        await producer.stop()
        server.stop()


@dataclass
class Target:
    """One server under W2, with how to publish to it and how clients talk to it."""

    name: str
    server: Server
    publisher: Publisher
    loadgen_args: list[str]
    close: Callable[[], Awaitable[None]]
    #: Called at the end of every step; what it returns is added to the step.
    step_extra: Callable[[], Json] | None = None


@dataclass
class Profile:
    """py-spy sampling a server's Python stacks into ``folded`` (``start_profile``)."""

    spy: subprocess.Popen[bytes]
    folded: Path

    def wait(self, timeout: float = 30) -> None:
        self.spy.wait(timeout=timeout)

    def summary(self, top: int = 25) -> Json | None:
        """What it sampled (``profile_summary``); None when py-spy wrote nothing."""
        return profile_summary(self.folded, top) if self.folded.exists() else None

    def finish(self, timeout: float = 30, top: int = 25) -> Json | None:
        """Wait for py-spy, then what it sampled."""
        self.wait(timeout)
        return self.summary(top)


def start_profile(bench: Bench, pid: int, seconds: float, name: str) -> Profile:
    """py-spy, sampling the server's Python stacks (collapsed format) for ``seconds``."""
    out = bench.workdir / f"{name}.folded"
    argv = [str(CHECKOUT / ".venv/bin/py-spy"), "record", "--pid", str(pid), "--format", "raw"]
    argv += ["--duration", str(int(seconds)), "--rate", "200", "--nonblocking", "-o", str(out)]
    spy = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return Profile(spy, out)


def measured(spy: Profile | None, load: str, stats: Json) -> Json:
    """What a workload's result ends with: the server's profile (when one was taken), the
    load average at its start, and the load generator's summary."""
    return {
        "profile": spy.summary() if spy is not None else None,
        "loadavg": load,
        "loadgen": summary(stats),
    }


def profile_summary(folded: Path, top: int = 25) -> Json:
    """Self time by function and inclusive time by function, in percent of samples."""
    own: dict[str, int] = {}
    inclusive: dict[str, int] = {}
    total = 0
    for line in folded.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack:
            continue
        count = int(count_text)
        frames = [
            frame.split(" (")[0] + " " + frame.split(" (")[-1].split(":")[0].rsplit("/", 1)[-1]
            for frame in stack.split(";")
        ]
        total += count
        own[frames[-1]] = own.get(frames[-1], 0) + count
        for frame in set(frames):
            inclusive[frame] = inclusive.get(frame, 0) + count

    def ranked(table: dict[str, int]) -> list[tuple[str, float]]:
        best = sorted(table.items(), key=lambda item: -item[1])[:top]
        return [(name, round(100 * n / max(total, 1), 1)) for name, n in best]

    return {"samples": total, "self": ranked(own), "inclusive": ranked(inclusive)}


def fan_out_seconds(server: Server) -> tuple[float, float, float] | None:
    """A Clarion worker's fan-out time so far: write-pass seconds, dispatch seconds (an
    event alone in its fetch is written to its clients there) and events dispatched.
    None for other servers."""
    try:
        text = httpx.get(f"{server.http}/metrics", timeout=5).text
    except httpx.HTTPError:
        return None
    found: dict[str, float] = {}
    for line in text.splitlines():
        for name in ("write_pass_duration_seconds_sum", "broadcast_duration_seconds_sum",
                     "broadcast_duration_seconds_count"):  # fmt: skip
            if line.startswith(f"clarion_worker_{name} "):
                found[name] = float(line.rsplit(" ", 1)[1])
    if len(found) != 3:
        return None
    return (
        found["write_pass_duration_seconds_sum"],
        found["broadcast_duration_seconds_sum"],
        found["broadcast_duration_seconds_count"],
    )


async def w2_steps(
    bench: Bench,
    target: Target,
    conns: int,
    rates: list[float],
    seconds: float,
    label: str,
    profile_rate: float | None = None,
    every_rate: bool = False,
) -> Json:
    """Raise the broadcast rate step by step on one target until it saturates
    (``every_rate``: measure every rate asked, saturated or not, as the latency table
    wants each one)."""
    gen = bench.loadgen(f"w2-{label}", target.server.url, conns, *target.loadgen_args)
    steps: list[Json] = []
    profile: Json | None = None
    try:
        ready = gen.ready()
        bench.say(f"W2 {label}: {ready}")
        audience = {"all": int(ready["connected"])}
        gen.mark("warm")
        for rate in rates:
            load = loadavg()
            target.server.mark()
            started = time.monotonic()
            fan_out_before = fan_out_seconds(target.server)
            spy = None
            if rate == profile_rate and not every_rate:
                spy = start_profile(bench, target.server.pid, seconds, f"profile-{label}")
            sent = await paced(target.publisher, rate, seconds, pick_bcast)
            cpu = target.server.cpu_percent()
            if spy is not None:
                spy.wait()
                sampled = spy.summary()
                if sampled is not None:
                    profile = {"rate": rate, **sampled}
            peek = settle(gen, target.publisher.produced, audience, 20)
            catch_up = time.monotonic() - started - seconds
            stats = gen.mark(f"{rate}")
            fan_out_after = fan_out_seconds(target.server)
            lost = losses(peek, target.publisher.produced, audience)
            # What was really published: a slow publish API can fall short of the rate.
            offered = sent / seconds * audience["all"]
            step = {
                "rate": rate,
                "published": sent,
                "offered_per_s": offered,
                "deliveries_per_s": round(stats["events"] / seconds),
                "catch_up_s": round(catch_up, 2),
                "server_cpu_percent": cpu,
                "server_rss_kib": rss_kib(target.server.pid),
                "cumulative_losses": lost,
                "loadavg": load,
                "loadgen": summary(stats),
            }
            if target.step_extra is not None:
                step.update(target.step_extra())
            if fan_out_before and fan_out_after and fan_out_after[2] > fan_out_before[2]:
                # At a low rate each event reaches every client on its own, written either
                # by its dispatch (alone in its fetch) or by one write pass: one round is
                # dispatch plus pass time per event.
                spent = sum(fan_out_after[:2]) - sum(fan_out_before[:2])
                step["round_ms_mean"] = round(
                    1000 * spent / (fan_out_after[2] - fan_out_before[2]), 1
                )
            steps.append(step)
            bench.say(
                f"W2 {label} rate {rate}/s: {step['deliveries_per_s']}/s "
                f"p99 {stats['latency_ms']['p99']:.1f} ms catch-up {catch_up:.1f}s cpu {cpu}% "
                f"lost {lost} loadgen cpu {stats['cpu_percent']:.0f}%"
            )
            saturated = lost > 0 or catch_up > 5 or stats["connected"] < audience["all"]
            if saturated and not every_rate:
                break  # saturated: clients were dropped or the backlog did not drain
            await asyncio.sleep(1)
        if every_rate and profile_rate is not None:
            # The latency table's figures are never taken under the profiler (py-spy
            # costs the server CPU): its profile comes from one more step of its own.
            spy = start_profile(bench, target.server.pid, seconds, f"profile-{label}")
            await paced(target.publisher, profile_rate, seconds, pick_bcast)
            spy.wait()
            sampled = spy.summary()
            if sampled is not None:
                profile = {"rate": profile_rate, "apart_from_the_steps": True, **sampled}
            settle(gen, target.publisher.produced, audience, 20)
    finally:
        gen.close()
    sustained = [
        s
        for s in steps
        if s["cumulative_losses"] <= 0 and s["catch_up_s"] <= 2 and s["loadgen"]["gaps"] == 0
    ]
    best = max(sustained, key=lambda s: s["deliveries_per_s"], default=None)
    return {
        "target": target.name,
        "clients": label,
        "connections": conns,
        "steps": steps,
        "max_sustained_per_s": best["deliveries_per_s"] if best else 0,
        "at_rate": best["rate"] if best else None,
        "p99_ms_at_max": best["loadgen"]["latency_ms"]["p99"] if best else None,
        "overload_deliveries_per_s": max((s["deliveries_per_s"] for s in steps), default=0),
        "profile": profile,
    }


class KafkaHop:
    """Produce-to-consume time of the broadcast topic, seen by a consumer of our own.

    The worker's latency includes this hop; the peers, fed through a WebSocket, have
    none. Measured beside the worker in the same steps so it can be stated (issue 17).
    """

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
        self.topic = topic
        self.samples: list[int] = []
        self.task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        partition = TopicPartition(self.topic, 0)
        await self.consumer.start()
        self.consumer.assign([partition])
        await self.consumer.seek_to_end(partition)
        self.task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        while True:
            record = await self.consumer.getone()
            sent = json.loads(record.value or b"{}").get("data", {}).get("t")
            if sent:
                self.samples.append(time.time_ns() // 1000 - int(sent))

    def take(self) -> Json:
        """p50/p99 of the hop (ms) since the last take."""
        samples, self.samples = sorted(self.samples), []
        if not samples:
            return {"kafka_hop_ms": None}

        def q(p: float) -> float:
            return round(samples[min(len(samples) - 1, int(p * len(samples)))] / 1000, 1)

        return {"kafka_hop_ms": {"p50": q(0.5), "p99": q(0.99), "samples": len(samples)}}

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
        await self.consumer.stop()


async def clarion_target(bench: Bench, server_kind: str, hop: bool = False) -> Target:
    topics = await bench.topics()
    server = bench.clarion("w2", topics, server_kind)
    publisher, producer = await kafka_publisher(bench.bootstrap, topics)
    probe = KafkaHop(bench.bootstrap, topics.bcast) if hop else None
    if probe is not None:
        await probe.start()

    async def close() -> None:
        if probe is not None:
            await probe.stop()
        await producer.stop()
        server.stop()

    extra = probe.take if probe is not None else None
    return Target(f"clarion-{server_kind}", server, publisher, [], close, extra)


async def python_peer_target(bench: Bench, script: str, name: str) -> Target:
    """A Python peer (``bench/peers/<script>``) on a free port, fed through its publisher
    WebSocket (loadgen dialect "plain")."""
    port = free_port()
    argv = [str(CHECKOUT / ".venv/bin/python"), str(BENCH / "peers" / script)]
    argv += ["--port", str(port)]
    server = start_server(
        Path(script).stem.replace("_", "-"),
        argv,
        f"ws://127.0.0.1:{port}/ws",
        f"http://127.0.0.1:{port}/healthz",
        bench.workdir,
        bench.env(),
    )
    publisher, conn = await ws_publisher(f"ws://127.0.0.1:{port}/publish")

    async def close() -> None:
        await conn.close()
        server.stop()

    return Target(name, server, publisher, ["-dialect", "plain"], close)


async def centrifugo_target(bench: Bench, binary: Path, conns: int) -> Target:
    port = free_port()
    secret = "bench-centrifugo-secret-0123456789"
    config = {
        "client": {
            "token": {"hmac_secret_key": secret},
            "allowed_origins": ["*"],
        },
        "channel": {"without_namespace": {"allow_subscribe_for_client": True}},
        "http_api": {"key": CENTRIFUGO_API_KEY},
        "http_server": {"address": "127.0.0.1", "port": str(port)},
        "log": {"level": "error"},
        "health": {"enabled": True},
    }
    path = bench.workdir / "centrifugo.json"
    path.write_text(json.dumps(config))
    server = start_server(
        "centrifugo",
        [str(binary), "--config", str(path)],
        f"ws://127.0.0.1:{port}/connection/websocket",
        f"http://127.0.0.1:{port}/health",
        bench.workdir,
        # One core, like the Python servers (GOMAXPROCS follows the affinity anyway).
        bench.env(GOMAXPROCS="1"),
    )
    tokens = bench.workdir / "centrifugo-tokens.txt"
    exp = int(time.time()) + 6 * 3600
    tokens.write_text(
        "\n".join(
            jwt.encode({"sub": f"u{i}", "exp": exp}, secret, algorithm="HS256")
            for i in range(min(conns, 1000))
        )
        + "\n"
    )
    client = httpx.AsyncClient(timeout=10)
    publisher = centrifugo_publisher(server.http, client)

    async def close() -> None:
        await client.aclose()
        server.stop()

    args = ["-dialect", "centrifugo", "-tokens", str(tokens), "-channel", "bcast"]
    return Target(f"centrifugo-{CENTRIFUGO_VERSION}", server, publisher, args, close)


async def w2_run(
    bench: Bench,
    make: Callable[[], Awaitable[Target]],
    conns: int,
    rates: list[float],
    seconds: float,
    batch: bool | None,
    profile_rate: float | None = None,
    every_rate: bool = False,
) -> Json:
    target = await make()
    try:
        args = list(target.loadgen_args)
        label = "native"
        if batch is not None:
            args += ["-tokens", str(bench.tokens(conns, 100))]
            label = "batch" if batch else "one-per-frame"
            if batch:
                args.append("-batch")
        target.loadgen_args = args
        return await w2_steps(bench, target, conns, rates, seconds, label, profile_rate, every_rate)
    finally:
        await target.close()


#: The Python peers, fed through a publisher WebSocket (loadgen dialect "plain").
PEERS: dict[str, Callable[[Bench], Awaitable[Target]]] = {
    # The floor (issue 17): frames built once, one transport.write per client, uvloop.
    "bare_asyncio": functools.partial(
        python_peer_target, script="bare_asyncio.py", name="bare-asyncio"
    ),
    "ws_broadcast": functools.partial(
        python_peer_target, script="ws_broadcast.py", name="websockets.broadcast"
    ),
}


def peer_maker(bench: Bench, kind: str) -> Callable[[], Awaitable[Target]]:
    def make() -> Awaitable[Target]:
        return PEERS[kind](bench)

    return make


async def latency_runs(
    bench: Bench,
    conns: int,
    rates: list[float],
    seconds: float,
    profile_rate: float | None,
    rounds: int = 1,
) -> Json:
    """Issue 17's latency table: the worker (both kinds of client, Kafka hop measured
    beside it), the bare asyncio floor and websockets.broadcast, at the same connection
    count and broadcast rates, in the same run (bench/report.py prints the table and the
    verdicts).

    ``rounds`` times over, each round starting every target afresh in an order rotated by
    one: a single run of each server swings by more than the differences being judged
    (websockets.broadcast's p99 at 5/s went from 145 to 640 ms between runs on one
    machine), and a fixed order would give whichever runs first the quieter machine.
    bench/latency.py judges the median of the rounds and counts the rounds that met.
    """
    started = loadavg()
    runs: list[Json] = []
    for round_index, kind, batch in latency_schedule(rounds):
        bench.say(f"latency round {round_index + 1}/{rounds}: {kind} batch={batch}")
        if batch is None:
            make = peer_maker(bench, kind)
            run = await w2_run(bench, make, conns, rates, seconds, None, None, True)
        else:

            async def make_clarion() -> Target:
                return await clarion_target(bench, "uvicorn", hop=True)

            # py-spy on the worker at profile_rate (first round, one-per-frame
            # clients): where the pass goes.
            spy = profile_rate if round_index == 0 and not batch else None
            run = await w2_run(bench, make_clarion, conns, rates, seconds, batch, spy, True)
        runs.append({**run, "round": round_index})
    return {
        "connections": conns,
        "rates": rates,
        "seconds": seconds,
        "rounds": rounds,
        "runs": runs,
        "loadavg_start": started,
        "loadavg_end": loadavg(),
    }


async def w3_idle(bench: Bench, conns: int, profile: bool = False) -> Json:
    """Idle connections: RSS per connection, and one broadcast's latency with all open."""
    topics = await bench.topics()
    server = bench.clarion("w3", topics)
    publisher, producer = await kafka_publisher(bench.bootstrap, topics)
    before = rss_kib(server.pid)
    gen = bench.loadgen("w3", server.url, conns, "-tokens", str(bench.tokens(conns, 100)))
    try:
        ready = gen.ready(timeout=400)
        bench.say(f"W3 connected: {ready}")
        server.mark()
        spy = start_profile(bench, server.pid, 10, "profile-w3-idle") if profile else None
        await asyncio.sleep(10)
        idle_cpu = server.cpu_percent()  # nothing published: heartbeats and timers only
        if spy is not None:
            spy.wait()
        after = rss_kib(server.pid)
        connected = int(ready["connected"])
        gen.mark("warm")
        load = loadavg()
        server.mark()
        await paced(publisher, 1, 5, pick_bcast)
        settle(gen, publisher.produced, {"all": connected}, 30)
        stats = gen.mark("w3")
        return {
            "workload": "W3 idle",
            "server": "clarion-uvicorn",
            "connections": connected,
            "connect_seconds": ready["seconds"],
            "rss_before_kib": before,
            "rss_after_kib": after,
            "kib_per_connection": round((after - before) / max(connected, 1), 2),
            "idle_cpu_percent": idle_cpu,
            "idle_profile": spy.summary() if spy is not None else None,
            "broadcast_1_per_s": summary(stats),
            "losses": losses(stats, publisher.produced, {"all": connected}),
            "loadavg": load,
        }
    finally:
        gen.close()
        await producer.stop()
        server.stop()


async def w4_storm(bench: Bench, conns: int, orgs: int, rate: float, profile: bool = False) -> Json:
    """Kill the worker holding every client; they resume on a second worker with lastId."""
    topics = await bench.topics()
    first = bench.clarion("w4a", topics)
    second = bench.clarion("w4b", topics)
    publisher, producer = await kafka_publisher(bench.bootstrap, topics)
    tokens = str(bench.tokens(conns, orgs))
    gen = bench.loadgen(
        "w4",
        first.url,
        conns,
        "-tokens",
        tokens,
        "-batch",
        "-reconnect-url",
        second.url,
        "-reconnect-jitter",
        "1s",
    )
    audience = recipients(conns, orgs)

    def pick(n: int) -> tuple[str, str | None]:
        org = org_of(n * 7919, orgs)
        return org, org

    try:
        ready = gen.ready()
        bench.say(f"W4 connected: {ready}")
        load = loadavg()
        await paced(publisher, rate, 3, pick)
        producing = asyncio.create_task(paced(publisher, rate, 50, pick))
        await asyncio.sleep(2)
        killed_at = time.monotonic()
        first.stop(signal.SIGKILL)
        bench.say("W4: first worker killed")
        spy = start_profile(bench, second.pid, 15, "profile-w4") if profile else None
        storm: Json = {}
        while time.monotonic() - killed_at < 45:
            await asyncio.sleep(1)
            storm = gen.peek().get("storm", {})
            if storm.get("event_after", 0) >= conns:
                break
        await producing
        if spy is not None:
            spy.wait()
        settle(gen, publisher.produced, audience, 30)
        stats = gen.mark("w4")
        return {
            "workload": "W4 reconnect storm",
            "connections": ready["connected"],
            "events_per_s": rate,
            "storm": stats.get("storm", storm),
            "losses": losses(stats, publisher.produced, audience),
            "gaps": stats["gaps"],
            "duplicates": stats["duplicates"],
            "resets": stats.get("resets", 0),
            "second_worker_cpu_percent": second.cpu_percent(),
            **measured(spy, load, stats),
        }
    finally:
        gen.close()
        await producer.stop()
        first.stop()
        second.stop()


async def smoke_peer(bench: Bench, kind: str, conns: int = 100) -> Json:
    """One peer in miniature: every broadcast reaches every client, in order."""
    target = await PEERS[kind](bench)
    gen = bench.loadgen(f"smoke-{kind}", target.server.url, conns, *target.loadgen_args)
    try:
        ready = gen.ready()
        gen.mark("warm")
        await paced(target.publisher, 20, 2, pick_bcast)
        audience = {"all": int(ready["connected"])}
        settle(gen, target.publisher.produced, audience, 20)
        stats = gen.mark(kind)
        return {
            "connections": ready["connected"],
            "produced": sum(target.publisher.produced.values()),
            "losses": losses(stats, target.publisher.produced, audience),
            **summary(stats),
        }
    finally:
        gen.close()
        await target.close()


async def smoke(bench: Bench) -> Json:
    """Everything in miniature, under a minute: one worker, both client kinds, no loss."""
    topics = await bench.topics()
    server = bench.clarion("smoke", topics)
    publisher, producer = await kafka_publisher(bench.bootstrap, topics)
    conns, orgs = 200, 10
    tokens = str(bench.tokens(conns, orgs))
    gens = {
        "batch": bench.loadgen("smoke-batch", server.url, conns, "-tokens", tokens, "-batch"),
        "one-per-frame": bench.loadgen("smoke-one", server.url, conns, "-tokens", tokens),
    }
    audience = {key: 2 * n for key, n in recipients(conns, orgs).items()}
    audience["all"] = 2 * conns

    def pick(n: int) -> tuple[str, str | None]:
        if n % 10 == 0:
            return "all", None
        org = org_of(n, orgs)
        return org, org

    try:
        readies = {name: gen.ready() for name, gen in gens.items()}
        for gen in gens.values():
            gen.mark("warm")
        load = loadavg()
        server.mark()
        await paced(publisher, 200, 4, pick)
        cpu = server.cpu_percent()
        results: dict[str, Json] = {}
        for name, gen in gens.items():
            half = {key: n // 2 for key, n in audience.items()}
            settle(gen, publisher.produced, half, 20)
            stats = gen.mark(name)
            stats["losses"] = losses(stats, publisher.produced, half)
            results[name] = summary(stats)
        peer = await smoke_peer(bench, "bare_asyncio")
        return {
            "workload": "smoke",
            "peers": {"bare-asyncio": peer},
            "connections": {name: ready["connected"] for name, ready in readies.items()},
            "produced": sum(publisher.produced.values()),
            "server_cpu_percent": cpu,
            "losses": sum(int(r["losses"]) for r in results.values()),
            "gaps": sum(int(r["gaps"]) for r in results.values()),
            "duplicates": sum(int(r["duplicates"]) for r in results.values()),
            "clients": results,
            "loadavg": load,
        }
    finally:
        for gen in gens.values():
            gen.close()
        await producer.stop()
        server.stop()


# ---- main -----------------------------------------------------------------------------


def versions(centrifugo: bool) -> Json:
    def version(module: str) -> str:
        from importlib.metadata import PackageNotFoundError
        from importlib.metadata import version as dist_version

        try:
            return dist_version(module)
        except PackageNotFoundError:
            return "not installed"

    go = subprocess.run(["go", "version"], capture_output=True, text=True, check=False).stdout
    out: Json = {
        "python": platform.python_version(),
        "kernel": platform.release(),
        "cpus": os.cpu_count(),
        "go": go.strip(),
        **{
            name: version(name)
            for name in ("uvicorn", "websockets", "starlette", "uvloop", "aiokafka", "granian")
        },
    }
    if centrifugo:
        out["centrifugo"] = CENTRIFUGO_VERSION
    return out


@contextlib.contextmanager
def bench_context(args: argparse.Namespace) -> Iterator[Bench]:
    settings = DevstackSettings.from_environ(os.environ)  # noqa: TID251 - the process edge
    env = json.loads(settings.env_file.read_text())
    loadgen_bin = build_loadgen(settings)
    with tempfile.TemporaryDirectory(prefix="clarion-bench-") as tmp:
        workdir = Path(tmp)
        if args.keep:
            workdir = CHECKOUT / "bench/results/tmp"
            workdir.mkdir(parents=True, exist_ok=True)
        yield Bench(settings, env["kafka_bootstrap"], loadgen_bin, workdir, Keys(workdir))


async def run(args: argparse.Namespace, bench: Bench) -> Json:
    wanted = set(args.workloads.split(","))
    result: Json = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": " ".join(sys.argv),
        "loadavg_start": loadavg(),
        "pinning": {"servers": f"cpu {SERVER_CPU}", "loadgen": f"cpu {LOADGEN_CPU}"},
    }
    if args.smoke:
        result["smoke"] = await smoke(bench)
        result["loadavg_end"] = loadavg()
        return result
    conns = args.conns
    rates = [float(r) for r in args.rates.split(",")]
    if "w1" in wanted:
        bench.say("W1 dashboard")
        result["w1"] = await w1_dashboard(
            bench, conns, 100, 500, args.seconds, bool(args.profile_rate)
        )
    if "w2" in wanted:
        w2: list[Json] = []
        for kind in args.servers.split(","):
            bench.say(f"W2 {kind}")
            if kind in ("uvicorn", "granian"):

                async def make(kind: str = kind) -> Target:
                    return await clarion_target(bench, kind)

                profile = args.profile_rate if kind == "uvicorn" and args.profile_rate else None
                w2.append(await w2_run(bench, make, conns, rates, args.seconds, True, profile))
                w2.append(await w2_run(bench, make, conns, rates, args.seconds, False, profile))
            elif kind in PEERS:
                w2.append(
                    await w2_run(bench, peer_maker(bench, kind), conns, rates, args.seconds, None)
                )
            elif kind == "centrifugo":
                binary = build_centrifugo(bench.settings)

                async def make_centrifugo(binary: Path = binary) -> Target:
                    return await centrifugo_target(bench, binary, conns)

                w2.append(
                    await w2_run(
                        bench,
                        make_centrifugo,
                        conns,
                        rates,
                        args.seconds,
                        None,
                    )
                )
        result["w2"] = w2
    if "lat" in wanted and args.latency_rates:
        bench.say("latency table (issue 17)")
        result["latency"] = await latency_runs(
            bench,
            conns,
            [float(r) for r in args.latency_rates.split(",")],
            args.latency_seconds,
            args.profile_rate or None,
            args.latency_rounds,
        )
    if args.scaling:
        # Deliveries/s against connections: Clarion both ways, and Centrifugo.
        scaling: list[Json] = []
        for count in (int(n) for n in args.scaling.split(",")):

            async def make_clarion() -> Target:
                return await clarion_target(bench, "uvicorn")

            for batch in (True, False):
                bench.say(f"W2 scaling: clarion {count} batch={batch}")
                scaling.append(await w2_run(bench, make_clarion, count, rates, args.seconds, batch))
            if "centrifugo" in args.servers:
                binary = build_centrifugo(bench.settings)

                async def make_peer(binary: Path = binary, count: int = count) -> Target:
                    return await centrifugo_target(bench, binary, count)

                bench.say(f"W2 scaling: centrifugo {count}")
                scaling.append(await w2_run(bench, make_peer, count, rates, args.seconds, None))
        result["w2_scaling"] = scaling
    if "w3" in wanted:
        bench.say("W3 idle")
        idle = args.idle_conns
        if idle is None:
            # Past the hard open-file limit (not raisable without root privileges) the
            # server could not accept more: measure up to it, and say so.
            hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
            idle = 25000 if hard == resource.RLIM_INFINITY else min(25000, hard - 50)
        result["w3"] = await w3_idle(bench, idle, bool(args.profile_rate))
    if "w4" in wanted:
        bench.say("W4 reconnect storm")
        result["w4"] = await w4_storm(bench, conns, 100, 200, bool(args.profile_rate))
    if "soak" in wanted:
        import soak  # type: ignore[import-not-found]  # bench/soak.py, beside this script

        plan = (
            soak.SHORT
            if args.soak_short
            else soak.SoakPlan(minutes=args.soak_minutes, warmup_minutes=args.soak_minutes / 2)
        )
        bench.say(f"soak: {plan.minutes} min of churn")
        result["soak"] = await soak.soak(bench, plan, args.soak_pythonpath)
    if "w5" in wanted:
        bench.say(f"W5 operator, {args.channels} channels")
        import w5  # type: ignore[import-not-found]  # bench/w5.py, beside this script

        result["w5"] = await w5.w5_operator(args.channels, bench.say, settings=bench.settings)
    result["versions"] = versions("centrifugo" in args.servers)
    result["loadavg_end"] = loadavg()
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--smoke", action="store_true", help="a short run (< 60 s) for tests")
    parser.add_argument("--workloads", default="w1,w2,lat,w3,w4,soak,w5")
    parser.add_argument(
        "--soak-minutes", type=float, default=20, help="soak: minutes of load (then idle)"
    )
    parser.add_argument(
        "--soak-short", action="store_true", help="soak: the one-minute version (tests)"
    )
    parser.add_argument(
        "--soak-pythonpath",
        default=None,
        help="soak: PYTHONPATH for the worker (another checkout's worker/, to compare)",
    )
    parser.add_argument("--channels", type=int, default=200, help="W5: channels applied at once")
    parser.add_argument("--servers", default="uvicorn,bare_asyncio,ws_broadcast,centrifugo,granian")
    parser.add_argument(
        "--latency-rates",
        default="2,5",
        help="lat: broadcasts/s of the latency table (worker, bare asyncio, websockets)",
    )
    parser.add_argument("--latency-seconds", type=float, default=8, help="lat: seconds per rate")
    parser.add_argument(
        "--latency-rounds",
        type=int,
        default=3,
        help="lat: rounds of all four servers, in rotated order (the table judges their median)",
    )
    parser.add_argument("--conns", type=int, default=10000)
    parser.add_argument(
        "--idle-conns",
        type=int,
        default=None,
        help="W3 connections (default: 25000, or 50 under the open-file hard limit)",
    )
    parser.add_argument("--rates", default="1,2,4,8,16,32,64,128,256,512")
    parser.add_argument("--seconds", type=float, default=6)
    parser.add_argument(
        "--profile-rate",
        type=float,
        default=2,
        help="py-spy the uvicorn worker at this W2 rate (and W1, W3, W4); 0: no profiles",
    )
    parser.add_argument(
        "--scaling", default="1000,5000", help="W2 also at these connection counts ('': none)"
    )
    parser.add_argument("--keep", action="store_true", help="keep logs in bench/results/tmp")
    parser.add_argument("--output", help="result file (default bench/results/<date>.json)")
    args = parser.parse_args(argv)
    # Servers and the load generator inherit this; 20k+ sockets need more than the usual
    # hard limit of 20000 (raising the hard limit needs root; otherwise keep what we have).
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (200_000, 200_000))
    with bench_context(args) as bench:
        result = asyncio.run(run(args, bench))
    text = json.dumps(result, indent=2)
    print(text)
    if not args.smoke or args.output:
        out = Path(args.output or BENCH / f"results/{datetime.now(UTC):%Y-%m-%d}.json")
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
