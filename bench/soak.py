"""Churn soak (issue 19): a worker as a mobile fleet uses it, for many minutes.

One worker (pinned like every bench server) on a fresh channel; events at a steady rate
over N organizations, keyed and numbered per organization. Against it:

* long-lived clients (the Go load generator): exact sequences per key, latency per
  window; they stay until the end, then all leave at once;
* churn clients (this process), a few a second: half resume with an id seen earlier
  (some seconds old: from the worker's window; some minutes old: read back from Kafka),
  half connect fresh; each leaves after a while in one of the ways mobile clients do:
  a clean close, a TCP reset, a FIN without a close frame, a stalled read (the socket
  stops being read, then is dropped) or in the middle of the handshake. A resume from an
  id this client saw itself is checked: its first event of the key continues at last+1;
* a burst of connects every ``burst_every`` seconds (held a few seconds, then dropped).

The retained-memory statistic is the least-squares slope of the RSS sampled just before
each burst, after the warm-up: the same phase of every burst cycle. RSS moves in a cycle
of the burst period (40-60 MiB between its low, just after a burst, and its high, in the
minute before the next one, in the runs of 2026-11-30), so samples at any moment measure
where they fell in the cycle as much as growth; the sample before a burst is the cycle's
high point, the conservative one. The every-10-seconds samples' slope is reported beside it.

Every ``window`` seconds: the worker's RSS and open descriptors (from /proc), the slowest
``/healthz`` answer (a probe every 100 ms: what the event loop makes everyone wait), the
worker's own ``event_loop_lag_seconds`` p99 and ``readbacks_open`` when it exports them,
and the long-lived clients' latency quantiles. The report gives the RSS and descriptor
slopes after the warm-up (least squares), RSS when every client has gone, the count of
``Unclosed AIOKafkaConsumer`` lines in the worker's log, and the sequence check.

``worker_pythonpath`` runs another checkout's worker code (a before/after comparison:
``git worktree add /tmp/before <commit>``, then ``--soak-pythonpath /tmp/before/worker``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import re
import socket
import struct
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from procstat import cpu_seconds, loadavg, rss_kib  # type: ignore[import-not-found]
from websockets.asyncio.client import ClientConnection, connect

Json = dict[str, Any]
Say = Callable[[str], None]

ORIGIN = "https://app.unionflow.test"
LEAVE_MODES = ("close", "reset", "fin", "stall", "handshake")
#: Retained memory "within noise of zero" (issue 19): the slope of the RSS before bursts
#: after the warm-up, at most this many MiB a minute.
RSS_SLOPE_THRESHOLD = 1.0


@dataclass(frozen=True)
class SoakPlan:
    minutes: float = 20.0
    #: The first half: in the 20-minute run of 2026-11-30 13:08 (docs/benchmarks.md) the
    #: RSS between bursts levelled off after 10-12 minutes (read-back buffers, allocator
    #: arenas and the recent-event windows reaching their working set).
    warmup_minutes: float = 10.0
    conns: int = 1000
    orgs: int = 20
    rate: float = 100.0
    churn_per_s: float = 10.0
    burst: int = 200
    burst_every: float = 120.0
    window: float = 60.0
    #: Recent events per partition the worker keeps (the rest is read back from Kafka).
    window_events: int = 2000
    #: Ids at least this old are "minutes old" (beyond the window: read back from Kafka).
    old_after: float = 90.0
    idle_wait: float = 30.0


#: The version ``make test`` runs (tests/bench/test_soak_smoke.py): about a minute.
SHORT = SoakPlan(
    minutes=0.75,
    warmup_minutes=0.25,
    conns=100,
    orgs=10,
    rate=50,
    churn_per_s=8,
    burst=50,
    burst_every=20,
    window=15,
    window_events=100,
    old_after=12,
    idle_wait=8,
)


@dataclass(frozen=True)
class Sighting:
    """An id a churn client received, with what it had seen of its key until then."""

    at: float
    event_id: str
    org: str
    seq: int


@dataclass
class Churn:
    started: int = 0
    modes: dict[str, int] = field(default_factory=dict)
    fresh: int = 0
    resumed_recent: int = 0
    resumed_old: int = 0
    resets: int = 0
    continued: int = 0
    broken: int = 0
    refused: int = 0
    errors: int = 0
    sightings: deque[Sighting] = field(default_factory=lambda: deque(maxlen=4000))

    def as_json(self) -> Json:
        out = {k: v for k, v in self.__dict__.items() if k != "sightings"}
        out["modes"] = dict(self.modes)
        return out


def fd_count(pid: int) -> int:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return 0


def slope_per_minute(points: list[tuple[float, float]]) -> float | None:
    """Least-squares slope of (seconds, value) points, per minute."""
    if len(points) < 3:
        return None
    n = len(points)
    mean_t = sum(t for t, _ in points) / n
    mean_v = sum(v for _, v in points) / n
    den = sum((t - mean_t) ** 2 for t, _ in points)
    if den == 0:
        return None
    num = sum((t - mean_t) * (v - mean_v) for t, v in points)
    return round(60 * num / den, 3)


def gauge(text: str, name: str) -> float | None:
    match = re.search(rf"^{name} (\S+)$", text, re.M)
    return float(match.group(1)) if match else None


def buckets_of(text: str, name: str) -> list[tuple[float, float]]:
    return [
        (float(m.group(1)), float(m.group(2)))
        for m in re.finditer(rf'^{name}_bucket\{{le="([^"]+)"\}} (\S+)$', text, re.M)
    ]


def window_quantile(
    now: list[tuple[float, float]], before: list[tuple[float, float]], q: float
) -> float | None:
    """A quantile of what a cumulative histogram gained between two scrapes (bucket bound)."""
    if not now:
        return None
    old = dict(before)
    gained = [(bound, count - old.get(bound, 0.0)) for bound, count in now]
    total = gained[-1][1]
    if total <= 0:
        return 0.0
    for bound, count in gained:
        if count >= q * total:
            return bound
    return float("inf")


class ChurnDriver:
    """Connects, resumes and leaves clients of one worker, in every way the issue lists."""

    def __init__(
        self, url: str, token: Callable[[str, str], str], plan: SoakPlan, rng: random.Random
    ) -> None:
        self.url = url
        self.token = token
        self.plan = plan
        self.rng = rng
        self.stats = Churn()
        self._tasks: set[asyncio.Task[None]] = set()
        self._n = 0

    def spawn(self, *, hold: float | None = None) -> None:
        self._n += 1
        task = asyncio.create_task(self._client(self._n, hold))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def _pick_resume(self, org: str) -> Sighting | None:
        """Half of the clients resume: from a recent id, or one minutes old."""
        if self.rng.random() < 0.5 or not self.stats.sightings:
            return None
        now = time.monotonic()
        same = [s for s in self.stats.sightings if s.org == org]
        if not same:
            return None
        if self.rng.random() < 0.5:
            old = [s for s in same if now - s.at > self.plan.old_after]
            if old:
                return self.rng.choice(old)
        return same[-1 - self.rng.randrange(min(len(same), 20))]

    async def _client(self, n: int, hold: float | None) -> None:
        stats = self.stats
        stats.started += 1
        org = f"org-{self.rng.randrange(self.plan.orgs):03d}"
        mode = self.rng.choice(LEAVE_MODES)
        stats.modes[mode] = stats.modes.get(mode, 0) + 1
        token = self.token(org, f"churn-{n}")
        if mode == "handshake":
            await self._half_handshake(token)
            return
        resume = self._pick_resume(org)
        url = self.url
        if resume is None:
            stats.fresh += 1
        else:
            url += f"?lastId={resume.event_id}"
            if time.monotonic() - resume.at > self.plan.old_after:
                stats.resumed_old += 1
            else:
                stats.resumed_recent += 1
        stay = hold if hold is not None else self.rng.uniform(0.2, 6.0)
        try:
            async with asyncio.timeout(30):
                ws = await connect(
                    url,
                    subprotocols=["clarion.v1", f"bearer.{token}"],  # type: ignore[list-item]
                    origin=ORIGIN,  # type: ignore[arg-type]
                    compression=None,
                    open_timeout=20,
                    max_size=None,
                    ping_interval=None,
                )
        except Exception:
            stats.refused += 1
            return
        try:
            await self._read(ws, org, resume, stay, mode)
        except asyncio.CancelledError:
            ws.transport.abort()
            raise
        except Exception:
            stats.errors += 1
        finally:
            await self._leave(ws, mode)

    async def _read(
        self, ws: ClientConnection, org: str, resume: Sighting | None, stay: float, mode: str
    ) -> None:
        stats = self.stats
        deadline = time.monotonic() + stay
        checked = resume is None
        last_seq = 0
        last_id = None
        if mode == "stall":
            deadline = time.monotonic() + min(stay, 1.0)
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            try:
                raw = await asyncio.wait_for(ws.recv(), left)
            except TimeoutError:
                break
            frame = json.loads(raw)
            kind = frame.get("type")
            if kind == "reset":
                stats.resets += 1
                checked = True
            elif kind == "event":
                data = frame.get("data") or {}
                seq = int(data.get("seq", 0))
                if data.get("key") == org and seq:
                    if not checked and resume is not None:
                        checked = True
                        if seq == resume.seq + 1 or resume.seq == 0:
                            stats.continued += 1
                        else:
                            stats.broken += 1
                    last_seq = seq
                    last_id = frame["id"]
        if last_id is not None:
            stats.sightings.append(Sighting(time.monotonic(), last_id, org, last_seq))
        if mode == "stall":
            # Stop reading: the worker's writes fill the socket, then the client is gone.
            ws.transport.pause_reading()
            await asyncio.sleep(self.rng.uniform(1.0, 5.0))

    async def _leave(self, ws: ClientConnection, mode: str) -> None:
        transport = ws.transport
        if mode == "close":
            with contextlib.suppress(Exception):
                async with asyncio.timeout(5):
                    await ws.close()
            return
        if mode == "reset":
            sock = transport.get_extra_info("socket")
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            transport.abort()
            return
        # fin (no close frame) and stall: the TCP connection just ends.
        transport.close()
        with contextlib.suppress(Exception):
            async with asyncio.timeout(5):
                await ws.wait_closed()
        transport.abort()

    async def _half_handshake(self, token: str) -> None:
        """Send part of the upgrade request, wait, drop the connection."""
        host, _, rest = self.url.removeprefix("ws://").partition("/")
        ip, _, port = host.partition(":")
        try:
            _reader, writer = await asyncio.open_connection(ip, int(port))
        except OSError:
            self.stats.refused += 1
            return
        try:
            head = (
                f"GET /{rest} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Protocol: clarion.v1, bearer.{token[:20]}"
            )
            writer.write(head.encode())
            await writer.drain()
            await asyncio.sleep(self.rng.uniform(0.5, 3.0))
        finally:
            writer.transport.abort()


class Sampler:
    """The worker seen from outside: /healthz answer times, /proc, /metrics."""

    def __init__(self, http: str, pid: int) -> None:
        self.http = http
        self.pid = pid
        self.slowest = 0.0
        self.failures = 0
        self._client = httpx.AsyncClient(timeout=10)

    async def probe(self) -> None:
        while True:
            started = time.monotonic()
            try:
                await self._client.get(f"{self.http}/healthz")
            except httpx.HTTPError:
                self.failures += 1
            self.slowest = max(self.slowest, time.monotonic() - started)
            await asyncio.sleep(0.1)

    def take_slowest(self) -> float:
        slowest, self.slowest = self.slowest, 0.0
        return round(slowest * 1000, 1)

    async def metrics(self) -> str:
        try:
            return (await self._client.get(f"{self.http}/metrics")).text
        except httpx.HTTPError:
            return ""

    async def close(self) -> None:
        await self._client.aclose()


def unclosed_consumers(log: Path) -> int:
    try:
        return log.read_text(errors="replace").count("Unclosed AIOKafkaConsumer")
    except OSError:
        return 0


async def soak(bench: Any, plan: SoakPlan, worker_pythonpath: str | None = None) -> Json:
    """Run the soak against one worker of ``bench`` (a ``run.Bench``); the result as JSON."""
    import run  # type: ignore[import-not-found]  # bench/run.py, beside this script

    topics = await bench.topics()
    env = {"CLARION_RESUME__WINDOW_EVENTS": str(plan.window_events)}
    if worker_pythonpath:
        env["PYTHONPATH"] = worker_pythonpath
    server = start_worker(bench, run, "soak", topics, env)
    sampler = Sampler(server.http, server.pid)
    publisher, producer = await run.kafka_publisher(bench.bootstrap, topics)
    rng = random.Random(19)

    def token(org: str, user: str) -> str:
        return str(bench.keys.token([org], user, ttl=6 * 3600))

    churn = ChurnDriver(server.url, token, plan, rng)
    audience = run.recipients(plan.conns, plan.orgs)
    rss_start = rss_kib(server.pid)

    def pick(n: int) -> tuple[str, str | None]:
        org = run.org_of(n * 7919, plan.orgs)
        return org, org

    tokens = str(bench.tokens(plan.conns, plan.orgs))
    gen = run.Loadgen(
        bench.loadgen_bin,
        ["-url", server.url, "-conns", str(plan.conns), "-tokens", tokens],
        bench.workdir / "loadgen-soak.log",
    )
    tasks: list[asyncio.Task[Any]] = []
    windows: list[Json] = []
    samples: list[tuple[float, int, int]] = []
    before_bursts: list[tuple[float, int]] = []
    try:
        ready = gen.ready(timeout=400)
        bench.say(f"soak: {ready['connected']} long-lived clients connected")
        rss_connected = rss_kib(server.pid)
        gen.mark("warm")
        started = time.monotonic()
        seconds = plan.minutes * 60
        producing = asyncio.create_task(run.paced(publisher, plan.rate, seconds, pick))
        tasks.append(asyncio.create_task(sampler.probe()))

        async def churning() -> None:
            interval = 1.0 / plan.churn_per_s
            next_burst = started + plan.burst_every
            while True:
                churn.spawn()
                if time.monotonic() >= next_burst:
                    next_burst += plan.burst_every
                    at = time.monotonic() - started
                    before_bursts.append((at, rss_kib(server.pid)))
                    for _ in range(plan.burst):
                        churn.spawn(hold=rng.uniform(2.0, 8.0))
                await asyncio.sleep(rng.expovariate(1.0 / interval))

        tasks.append(asyncio.create_task(churning()))
        previous = await sampler.metrics()
        sampler.take_slowest()
        cpu_mark, cpu_at = cpu_seconds(server.pid), time.monotonic()
        while not producing.done():
            window_end = time.monotonic() + plan.window
            slowest = 0.0
            while time.monotonic() < window_end and not producing.done():
                await asyncio.sleep(min(10.0, max(0.1, window_end - time.monotonic())))
                now = time.monotonic() - started
                samples.append((now, rss_kib(server.pid), fd_count(server.pid)))
            if not samples:
                samples.append((time.monotonic() - started, rss_kib(server.pid), 0))
            slowest = sampler.take_slowest()
            text = await sampler.metrics()
            stats = gen.mark(f"w{len(windows)}")
            cpu_now, now_at = cpu_seconds(server.pid), time.monotonic()
            cpu_percent = round(100 * (cpu_now - cpu_mark) / max(now_at - cpu_at, 1e-9), 1)
            cpu_mark, cpu_at = cpu_now, now_at
            lag_name = "clarion_worker_event_loop_lag_seconds"
            windows.append(
                {
                    "t_s": round(time.monotonic() - started),
                    "rss_mib": round(samples[-1][1] / 1024, 1),
                    "fds": samples[-1][2],
                    "healthz_slowest_ms": slowest,
                    "loop_lag_p99_ms": _ms(
                        window_quantile(
                            buckets_of(text, lag_name), buckets_of(previous, lag_name), 0.99
                        )
                    ),
                    "readbacks_open": gauge(text, "clarion_worker_readbacks_open"),
                    "latency_ms": stats["latency_ms"],
                    "gaps": stats["gaps"],
                    "duplicates": stats["duplicates"],
                    "churn_started": churn.stats.started,
                    "worker_cpu_percent": cpu_percent,
                    "loadavg": loadavg(),
                }
            )
            previous = text
            bench.say(f"soak window: {json.dumps(windows[-1])}")
        await producing
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await churn.stop()
        final = run.settle(gen, publisher.produced, audience, 60)
        lost = run.losses(final, publisher.produced, audience)
        rss_loaded = rss_kib(server.pid)
        gen.close()
        bench.say(f"soak: every client gone; waiting {plan.idle_wait:.0f} s")
        await asyncio.sleep(plan.idle_wait)
        text = await sampler.metrics()
        rss_idle = rss_kib(server.pid)
        fds_idle = fd_count(server.pid)
        warm = [(t, rss) for t, rss, _fds in samples if t >= plan.warmup_minutes * 60]
        warm_fds = [(t, fds) for t, _rss, fds in samples if t >= plan.warmup_minutes * 60]
        rss_slope = slope_per_minute([(t, rss / 1024) for t, rss in warm])
        steady = [(t, rss / 1024) for t, rss in before_bursts if t >= plan.warmup_minutes * 60]
        return {
            "workload": "soak (churn)",
            "plan": plan.__dict__,
            "worker_pythonpath": worker_pythonpath,
            "produced": sum(publisher.produced.values()),
            "long_lived": ready["connected"],
            "lost": lost,
            "gaps": sum(int(w["gaps"]) for w in windows),
            "duplicates": sum(int(w["duplicates"]) for w in windows),
            "churn": churn.stats.as_json(),
            "rss_mib": {
                "start_no_clients": round(rss_start / 1024, 1),
                "long_lived_connected": round(rss_connected / 1024, 1),
                "end_of_load": round(rss_loaded / 1024, 1),
                "all_gone": round(rss_idle / 1024, 1),
            },
            "rss_slope_mib_per_min_after_warmup": rss_slope,
            "rss_before_bursts_mib": [[round(t), round(v, 1)] for t, v in steady],
            "rss_slope_before_bursts_mib_per_min": slope_per_minute(steady),
            "rss_slope_threshold_mib_per_min": RSS_SLOPE_THRESHOLD,
            "fd_slope_per_min_after_warmup": slope_per_minute([(t, float(f)) for t, f in warm_fds]),
            "fds_all_gone": fds_idle,
            "readbacks_open_all_gone": gauge(text, "clarion_worker_readbacks_open"),
            "resumes": {
                outcome: gauge_labelled(text, "clarion_worker_resumes_total", outcome)
                for outcome in ("window", "kafka", "reset", "failed")
            },
            "unclosed_consumer_lines": unclosed_consumers(server.log),
            "healthz_failures": sampler.failures,
            "per_window_after_warmup": _spread(
                [w for w in windows if w["t_s"] > plan.warmup_minutes * 60]
            ),
            "windows": windows,
        }
    finally:
        for task in tasks:
            task.cancel()
        await churn.stop()
        gen.close()
        await producer.stop()
        await sampler.close()
        server.stop()


def _spread(windows: list[Json]) -> Json:
    """Median and worst over windows of the per-window figures."""

    def both(values: list[float]) -> Json:
        if not values:
            return {"median": None, "max": None}
        ordered = sorted(values)
        return {"median": ordered[len(ordered) // 2], "max": ordered[-1]}

    return {
        "healthz_slowest_ms": both([float(w["healthz_slowest_ms"]) for w in windows]),
        "loop_lag_p99_ms": both(
            [float(w["loop_lag_p99_ms"]) for w in windows if w["loop_lag_p99_ms"] is not None]
        ),
        "latency_p50_ms": both([float(w["latency_ms"]["p50"]) for w in windows]),
        "latency_p99_ms": both([float(w["latency_ms"]["p99"]) for w in windows]),
    }


def _ms(value: float | None) -> float | None:
    return None if value is None else round(value * 1000, 1)


def gauge_labelled(text: str, name: str, outcome: str) -> float | None:
    match = re.search(rf'^{name}\{{outcome="{outcome}"\}} (\S+)$', text, re.M)
    return float(match.group(1)) if match else None


def start_worker(bench: Any, run: Any, name: str, topics: Any, extra: dict[str, str]) -> Any:
    """``Bench.clarion`` with extra environment (the window size, another checkout)."""
    config = bench.worker_config(name, topics)
    port = run.free_port()
    python = str(run.CHECKOUT / ".venv/bin/python")
    env = bench.env(CLARION_REPLICA_ID=name, CLARION_CONFIG=str(config), **extra)
    argv = [python, "-m", "clarion_worker", "--config", str(config)]
    argv += ["--host", "127.0.0.1", "--port", str(port)]
    ws = f"ws://127.0.0.1:{port}/ws/dashboard"
    return run.start_server(
        f"{name}-uvicorn", argv, ws, f"http://127.0.0.1:{port}/readyz", bench.workdir, env
    )
