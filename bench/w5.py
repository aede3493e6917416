"""W5 operator: N RealtimeChannels applied at once; time until all are Ready, operator CPU
and RSS, then the time the operator and the cluster take to clean them all up.

    CLARION_STATE_DIR=.clarion-w5 .venv/bin/python bench/w5.py --channels 200 --output w5.json

Against the local stack (reused when ``env.json`` names a healthy one, otherwise started
the way ``make env-up`` does, and left running): the CRD is installed, a fresh namespace
created, and the real operator process started exactly as the end-to-end harness does
(``clarion_devstack.e2e.deploy.OperatorProcess``: ``python -m clarion_operator
--standalone --namespace <ns>``, production defaults otherwise), pinned to CPU 0 like the
servers of ``bench/run.py``, and left to settle until idle. Then N distinct channels are
created at once: every POST is submitted together to a pool of up to 32 threads of the
kubernetes client. Each channel owns its own topics (1 partition, replication factor 1,
``deletionPolicy: Delete``), ``auth.mode: none`` and ``--replicas`` workers (the CRD's
default, 2, unless told otherwise); KWOK turns its pods Running and Ready.

Nothing is waited for with sleeps: one watch on the namespace's RealtimeChannels (a
thread of the kubernetes client) timestamps each channel's milestones as their events
arrive: the operator's finalizer, the first status, ``TopicsReady=True`` and
``Ready=True`` for the current generation, which the operator sets only when the topics
match the spec and the worker Deployment is fully rolled out and available
(``core/conditions.py``). Then every channel is deleted at once, and the same watch times
the finalizers' release; the Deployments (garbage-collected through their owner
references) and the topics (deleted by the operator's finalizer) are polled every 0.2 s
until gone, with a deadline.

The operator's CPU is utime+stime of its process tree from ``/proc`` (plus reaped
children), its RSS is sampled from ``/proc/<pid>/status`` every 0.2 s. The result is one
JSON document: stdout, and ``--output`` when given.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import re
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final, cast

import httpx
from aiokafka.admin import AIOKafkaAdminClient
from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes import watch
from kubernetes.client.exceptions import ApiException
from procstat import (  # type: ignore[import-not-found]  # bench/procstat.py, beside this
    cpu_seconds as tree_cpu_seconds,
)
from procstat import (
    loadavg,
    process_tree,
    rss_kib,
    thread_count,
)
from result_json import emit  # type: ignore[import-not-found]  # bench/result_json.py, beside this

from clarion_devstack import stack
from clarion_devstack.e2e import deploy
from clarion_devstack.settings import DevstackSettings
from clarion_devstack.stack import StackEnv

Json = dict[str, Any]
Say = Callable[[str], None]

GROUP: Final = "realtime.clarion.dev"
VERSION: Final = "v1alpha1"
PLURAL: Final = "realtimechannels"
KIND: Final = "RealtimeChannel"
#: The operator runs on this core, as the servers of bench/run.py do.
OPERATOR_CPU: Final = 0
#: Threads submitting the creates and deletes (and HTTP connections to the API server).
API_CONCURRENCY: Final = 32
#: Interval of the /proc sampler (peak RSS) and of the cleanup polls.
SAMPLE_SECONDS: Final = 0.2
#: Server-side timeout of one watch request; bounds how long stopping the watch takes.
WATCH_SECONDS: Final = 2
WORKER_LABEL: Final = "app.kubernetes.io/name=clarion-worker"


# ---- the machine, from /proc -----------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """CPU of ``pid``'s tree, including children it has reaped (the operator's helpers)."""
    return float(tree_cpu_seconds(pid, reaped=True))


def machine_ticks() -> dict[str, tuple[int, int]]:
    """(busy, total) jiffies of the whole machine ("cpu") and of each core, from /proc/stat."""
    out: dict[str, tuple[int, int]] = {}
    for line in Path("/proc/stat").read_text().splitlines():
        if line.startswith("cpu"):
            name, *values = line.split()
            ticks = [int(v) for v in values[:8]]
            idle = ticks[3] + ticks[4]  # idle + iowait
            out[name] = (sum(ticks) - idle, sum(ticks))
    return out


def stack_cpu(env: StackEnv) -> dict[str, float]:
    """CPU seconds used so far by each process of the local stack, and by this driver."""
    used = {name: cpu_seconds(rec["pid"]) for name, rec in env["components"].items()}
    return {**used, "w5-driver": time.process_time()}


def cpu_delta(before: Mapping[str, float], after: Mapping[str, float]) -> dict[str, float]:
    return {name: round(after[name] - before.get(name, 0.0), 2) for name in after}


def busy_percent(
    before: Mapping[str, tuple[int, int]], after: Mapping[str, tuple[int, int]]
) -> Json:
    """How busy the machine and each core were between two ``machine_ticks``: the share
    the rest of the machine (the stack, anything else running) left to the operator."""
    out: Json = {}
    for name, (busy, total) in after.items():
        if name in before:
            spent = total - before[name][1]
            out[name] = round(100 * (busy - before[name][0]) / spent, 1) if spent else None
    return out


def pin(pid: int, cpu: int) -> list[int]:
    """Pin every thread of ``pid`` and its descendants to ``cpu``; threads they start
    later inherit it. Returns the CPUs the process is then allowed."""
    for one in process_tree(pid):
        with contextlib.suppress(OSError):
            for task in Path(f"/proc/{one}/task").iterdir():
                with contextlib.suppress(OSError):
                    os.sched_setaffinity(int(task.name), {cpu})
    return sorted(os.sched_getaffinity(pid))


def allowed_cpus(pid: int) -> list[str]:
    """Cpus_allowed_list of every thread of ``pid`` (to check the pinning held)."""
    seen: set[str] = set()
    with contextlib.suppress(OSError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            with contextlib.suppress(OSError):
                for line in (task / "status").read_text().splitlines():
                    if line.startswith("Cpus_allowed_list:"):
                        seen.add(line.split()[1])
    return sorted(seen)


@dataclass
class Meter:
    """Samples the operator's RSS and threads every SAMPLE_SECONDS; CPU on demand."""

    pid: int
    started: float = field(default_factory=time.monotonic)
    peak_rss_kib: int = 0
    peak_threads: int = 0
    #: [seconds since start, cpu seconds, RSS KiB], about one per second.
    series: list[list[float]] = field(default_factory=list)

    def sample(self) -> int:
        rss = rss_kib(self.pid)
        self.peak_rss_kib = max(self.peak_rss_kib, rss)
        self.peak_threads = max(self.peak_threads, int(thread_count(self.pid)))
        return int(rss)

    async def run(self) -> None:
        last = -math.inf
        while True:
            rss = self.sample()
            now = time.monotonic() - self.started
            if now - last >= 1.0:
                self.series.append([round(now, 1), round(cpu_seconds(self.pid), 2), rss])
                last = now
            await asyncio.sleep(SAMPLE_SECONDS)


async def wait_idle(
    pid: int, *, window: float = 1.0, below: float = 0.03, limit: float = 30
) -> Json:
    """Until the operator uses less than ``below`` CPU seconds per ``window`` twice running."""
    started = time.monotonic()
    quiet = 0
    used = 0.0
    while time.monotonic() - started < limit:
        before = cpu_seconds(pid)
        await asyncio.sleep(window)
        used = cpu_seconds(pid) - before
        quiet = quiet + 1 if used < below else 0
        if quiet >= 2:
            return {"idle": True, "seconds": round(time.monotonic() - started, 2)}
    return {"idle": False, "seconds": round(time.monotonic() - started, 2), "last_cpu": used}


# ---- what is applied ----------------------------------------------------------------------


def topic_names(run: str, index: int, per_channel: int) -> list[str]:
    return [f"w5-{run}-c{index:03d}-t{t}" for t in range(per_channel)]


def channel_body(
    name: str, namespace: str, bootstrap: str, topics: Sequence[str], replicas: int
) -> Json:
    """A small channel: its own topics (1 partition, RF 1, deleted with it), no auth."""
    audiences = ("organization", "broadcast", "user")
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": KIND,
        "metadata": {"name": name, "namespace": namespace, "labels": {"bench": "w5"}},
        "spec": {
            "kafka": {"bootstrapServers": bootstrap},
            "topics": [
                {
                    "name": topic,
                    "partitions": 1,
                    "replicationFactor": 1,
                    "audience": audiences[i % len(audiences)],
                    "deletionPolicy": "Delete",
                }
                for i, topic in enumerate(topics)
            ],
            "auth": {"mode": "none"},
            "workers": {"replicas": replicas},
        },
    }


def condition(obj: Mapping[str, Any], type_: str) -> Json:
    for c in (obj.get("status") or {}).get("conditions") or []:
        if isinstance(c, Mapping) and c.get("type") == type_:
            return dict(c)
    return {}


def is_true(obj: Mapping[str, Any], type_: str) -> bool:
    """``type_`` is True for the object's current generation."""
    generation = (obj.get("metadata") or {}).get("generation")
    c = condition(obj, type_)
    return c.get("status") == "True" and c.get("observedGeneration") == generation


# ---- timestamps from one watch --------------------------------------------------------------


@dataclass
class Channel:
    name: str
    created: float | None = None
    at: dict[str, float] = field(default_factory=dict)
    last: Json = field(default_factory=dict)

    def mark(self, milestone: str, when: float) -> None:
        self.at.setdefault(milestone, when)

    @property
    def origin(self) -> float | None:
        """When the channel existed: its create call returned, or the watch saw it first."""
        known = [t for t in (self.created, self.at.get("seen")) if t is not None]
        return min(known) if known else None

    def since_created(self, milestone: str) -> float | None:
        origin = self.origin
        if origin is None or milestone not in self.at:
            return None
        return self.at[milestone] - origin


class Tracker:
    """Milestones per channel, fed by the watch thread; the event loop awaits changes."""

    def __init__(self, names: Iterable[str], loop: asyncio.AbstractEventLoop) -> None:
        self.channels = {name: Channel(name) for name in names}
        self._lock = threading.Lock()
        self._loop = loop
        self._changed = asyncio.Event()

    def observe(self, kind: str, obj: Mapping[str, Any], when: float) -> None:
        meta = obj.get("metadata") or {}
        channel = self.channels.get(str(meta.get("name")))
        if channel is None:
            return
        with self._lock:
            if kind == "DELETED":
                channel.mark("gone", when)
            else:
                channel.last = dict(obj)
                channel.mark("seen", when)
                if meta.get("finalizers"):
                    channel.mark("finalizer", when)
                if (obj.get("status") or {}).get("conditions"):
                    channel.mark("status", when)
                if is_true(obj, "TopicsReady"):
                    channel.mark("topics_ready", when)
                if is_true(obj, "Ready"):
                    channel.mark("ready", when)
                if meta.get("deletionTimestamp"):
                    channel.mark("deleting", when)
        self._loop.call_soon_threadsafe(self._changed.set)

    def listed(self, items: Sequence[Mapping[str, Any]], when: float) -> None:
        """A fresh list: what is in it is observed, what was seen before and is not, gone."""
        present = {str((i.get("metadata") or {}).get("name")) for i in items}
        for item in items:
            self.observe("ADDED", item, when)
        with self._lock:
            for channel in self.channels.values():
                if channel.last and channel.name not in present:
                    channel.mark("gone", when)
        self._loop.call_soon_threadsafe(self._changed.set)

    def created(self, name: str, when: float) -> None:
        with self._lock:
            self.channels[name].created = when

    def count(self, milestone: str) -> int:
        with self._lock:
            return sum(1 for c in self.channels.values() if milestone in c.at)

    async def wait_all(self, milestone: str, deadline: float) -> bool:
        """Until every channel reached ``milestone`` (True) or the deadline (False)."""
        while self.count(milestone) < len(self.channels):
            self._changed.clear()
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), remaining)
        return True


class ChannelWatch:
    """List then watch the namespace's RealtimeChannels in a thread, feeding a Tracker."""

    def __init__(self, api: k8s.ApiClient, namespace: str, tracker: Tracker) -> None:
        self._custom = k8s.CustomObjectsApi(api)
        self._namespace = namespace
        self._tracker = tracker
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="w5-watch", daemon=True)
        self.restarts = 0
        self.errors: list[str] = []

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=WATCH_SECONDS + 30)

    def _run(self) -> None:
        args = (GROUP, VERSION, self._namespace, PLURAL)
        version: str | None = None
        while not self._stop.is_set():
            try:
                if version is None:
                    listed = cast(Json, self._custom.list_namespaced_custom_object(*args))
                    self._tracker.listed(listed.get("items") or [], time.monotonic())
                    version = str(listed["metadata"]["resourceVersion"])
                stream = watch.Watch()
                for event in stream.stream(
                    self._custom.list_namespaced_custom_object,
                    *args,
                    resource_version=version,
                    timeout_seconds=WATCH_SECONDS,
                    allow_watch_bookmarks=True,
                ):
                    when = time.monotonic()
                    if not isinstance(event, dict):
                        continue
                    obj = event.get("raw_object") or {}
                    version = str((obj.get("metadata") or {}).get("resourceVersion") or version)
                    if event["type"] in ("ADDED", "MODIFIED", "DELETED"):
                        self._tracker.observe(event["type"], obj, when)
                    if self._stop.is_set():
                        stream.stop()
                self.restarts += 1
            except ApiException as exc:
                # 410 Gone (the version is too old) or anything else: list again.
                if exc.status != 410:
                    self.errors.append(f"{exc.status}: {exc.reason}")
                version = None
                self._stop.wait(0.1)
            except Exception as exc:  # connection reset and the like: list again
                self.errors.append(f"{type(exc).__name__}: {exc}")
                version = None
                self._stop.wait(0.1)


# ---- the Kubernetes API, blocking calls run on a thread pool -------------------------------


class Api:
    """The kubernetes client with a connection pool as wide as the thread pool."""

    def __init__(self, kubeconfig: str) -> None:
        configuration = k8s.Configuration()
        k8s_config.load_kube_config(config_file=kubeconfig, client_configuration=configuration)
        configuration.connection_pool_maxsize = API_CONCURRENCY + 8
        self.client = k8s.ApiClient(configuration)
        self.custom = k8s.CustomObjectsApi(self.client)
        self.apps = k8s.AppsV1Api(self.client)
        self.core = k8s.CoreV1Api(self.client)
        self.policy = k8s.PolicyV1Api(self.client)
        self.pool = ThreadPoolExecutor(API_CONCURRENCY, thread_name_prefix="w5-api")

    async def call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.pool, lambda: fn(*args, **kwargs))

    def close(self) -> None:
        self.pool.shutdown(wait=True)
        self.client.close()

    async def children_left(self, namespace: str) -> dict[str, int]:
        """The worker objects still in the namespace, by kind."""
        listed = await asyncio.gather(
            self.call(self.apps.list_namespaced_deployment, namespace, label_selector=WORKER_LABEL),
            self.call(self.core.list_namespaced_service, namespace, label_selector=WORKER_LABEL),
            self.call(self.core.list_namespaced_config_map, namespace, label_selector=WORKER_LABEL),
            self.call(
                self.policy.list_namespaced_pod_disruption_budget,
                namespace,
                label_selector=WORKER_LABEL,
            ),
        )
        kinds = ("deployments", "services", "configmaps", "poddisruptionbudgets")
        return {kind: len(result.items) for kind, result in zip(kinds, listed, strict=True)}


async def kafka_topics(bootstrap: str, prefix: str) -> set[str]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10000)
    await admin.start()
    try:
        return {str(name) for name in await admin.list_topics() if str(name).startswith(prefix)}
    finally:
        await admin.close()


async def poll_until(
    probe: Callable[[], Any], done: Callable[[Any], bool], deadline: float
) -> tuple[bool, Any]:
    """``await probe()`` every SAMPLE_SECONDS until ``done(value)`` or the deadline."""
    while True:
        value = await probe()
        if done(value):
            return True, value
        if time.monotonic() >= deadline:
            return False, value
        await asyncio.sleep(SAMPLE_SECONDS)


# ---- summaries -------------------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100)."""
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def spread(values: Sequence[float]) -> Json | None:
    if not values:
        return None
    return {
        "count": len(values),
        "min": round(min(values), 3),
        "p50": round(percentile(values, 50), 3),
        "p95": round(percentile(values, 95), 3),
        "max": round(max(values), 3),
    }


def since(channels: Iterable[Channel], milestone: str) -> list[float]:
    out = []
    for channel in channels:
        value = channel.since_created(milestone)
        if value is not None:
            out.append(value)
    return out


def first_last(channels: Iterable[Channel], milestone: str, origin: float) -> Json:
    times = [c.at[milestone] - origin for c in channels if milestone in c.at]
    if not times:
        return {"first_s": None, "last_s": None}
    return {"first_s": round(min(times), 3), "last_s": round(max(times), 3)}


def brief_conditions(obj: Mapping[str, Any]) -> list[Json]:
    return [
        {k: c.get(k) for k in ("type", "status", "reason", "message", "observedGeneration")}
        for c in (obj.get("status") or {}).get("conditions") or []
        if isinstance(c, Mapping)
    ]


_METRIC = re.compile(r"^(clarion_operator_[a-z_]+)(\{[^}]*\})? ([0-9.eE+-]+|NaN)$")


def operator_metrics(text: str) -> Json:
    """The operator's own series: reconciles by result and trigger, reconcile durations
    (cumulative histogram buckets, and the mean per trigger), Kafka errors."""
    out: Json = {}
    for line in text.splitlines():
        match = _METRIC.match(line)
        if match is None or match.group(1).endswith("_created"):
            continue
        name, labels, value = match.group(1), match.group(2) or "", float(match.group(3))
        out[name.removeprefix("clarion_operator_") + labels] = value
    for key in [k for k in out if k.startswith("reconcile_duration_seconds_count")]:
        count = out[key]
        total = out.get(key.replace("_count", "_sum"), 0.0)
        mean_key = key.replace("_count", "_mean")
        out[mean_key] = round(total / count, 3) if count else None
    return out


def log_summary(path: Path, top: int = 12) -> Json:
    """Operator log lines by level, and the most frequent warning/error messages."""
    levels: Counter[str] = Counter()
    messages: Counter[tuple[str, str]] = Counter()
    lines = 0
    with contextlib.suppress(OSError), path.open(errors="replace") as log:
        for line in log:
            lines += 1
            try:
                record = json.loads(line)
            except ValueError:
                levels["unparsed"] += 1
                messages[("unparsed", line.strip()[:160])] += 1
                continue
            if not isinstance(record, dict):
                continue
            level = str(record.get("severity") or record.get("levelname") or "?").lower()
            levels[level] += 1
            if level in ("warning", "error", "critical"):
                # Channel names and numbers vary; the shape of the message is what repeats.
                text = re.sub(r"\d+(\.\d+)?", "N", str(record.get("message", "")))[:160]
                messages[(level, text)] += 1
    return {
        "path": str(path),
        "lines": lines,
        "by_level": dict(levels),
        "top_warnings_errors": [[n, lvl, msg] for (lvl, msg), n in messages.most_common(top)],
    }


# ---- the workload ----------------------------------------------------------------------------


def process_settings() -> DevstackSettings:
    """The stack settings of this process (CLARION_STATE_DIR, caches)."""
    return DevstackSettings.from_environ(os.environ)  # noqa: TID251 - benchmark entry point


def ensure_stack(settings: DevstackSettings, say: Say) -> tuple[StackEnv, bool]:
    """The running local stack, or one started as ``make env-up`` does (True: started)."""
    env = stack.read_env(settings)
    if env is not None and stack.healthy(env):
        return env, False
    say(f"starting the local stack in {settings.state_dir}")
    return stack.up(settings), True


async def w5_operator(
    channels: int,
    say: Say,
    *,
    settings: DevstackSettings | None = None,
    replicas: int = 2,
    topics_per_channel: int = 2,
    phase_limit: float = 600.0,
) -> Json:
    """Apply ``channels`` RealtimeChannels at once to a fresh namespace watched by the real
    operator; time them to Ready, meter the operator, delete them and time the cleanup."""
    if channels < 1:
        raise ValueError("channels must be at least 1")
    wall = time.monotonic()
    env, started_stack = await asyncio.to_thread(ensure_stack, settings or process_settings(), say)
    run = uuid.uuid4().hex[:8]
    namespace = f"w5-{run}"
    prefix = f"w5-{run}-"
    names = [f"c{i:03d}" for i in range(channels)]
    bodies = [
        channel_body(
            name,
            namespace,
            env["kafka_bootstrap"],
            topic_names(run, i, topics_per_channel),
            replicas,
        )
        for i, name in enumerate(names)
    ]
    result: Json = {
        "workload": "w5-operator",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "channels": channels,
        "replicas_per_channel": replicas,
        "topics_per_channel": topics_per_channel,
        "topic_shape": {"partitions": 1, "replicationFactor": 1, "deletionPolicy": "Delete"},
        "apply_method": (
            f"every RealtimeChannel POSTed at once through the kubernetes client from a pool "
            f"of {min(API_CONCURRENCY, channels)} threads"
        ),
        "ready_means": (
            "condition Ready=True with observedGeneration == metadata.generation: TopicsReady "
            "(topics match the spec) and WorkersReady (worker Deployment updated, ready and "
            "available: KWOK marks its pods Ready)"
        ),
        "namespace": namespace,
        "stack": {
            "state_dir": env["state_dir"],
            "kafka_version": env["kafka_version"],
            "kubernetes_version": env["kubernetes_version"],
            "started_by_w5": started_stack,
        },
        "loadavg_start": loadavg(),
    }
    kube = deploy.Kube.of(env)
    api = Api(env["kubeconfig"])
    log = Path(env["logs_dir"]) / f"operator-{namespace}.log"
    operator = deploy.OperatorProcess(env["kubeconfig"], namespace, log)
    loop = asyncio.get_running_loop()
    tracker = Tracker(names, loop)
    watcher = ChannelWatch(api.client, namespace, tracker)
    meter: Meter | None = None
    sampler: asyncio.Task[None] | None = None
    try:
        say(f"namespace {namespace}: CRD, operator")
        await asyncio.to_thread(deploy.install_crd, kube)
        await asyncio.to_thread(deploy.ensure_namespace, kube, namespace)
        others = await api.call(api.custom.list_cluster_custom_object, GROUP, VERSION, PLURAL)
        result["stack"]["channels_elsewhere"] = len(others.get("items") or [])
        before = time.monotonic()
        await asyncio.to_thread(operator.start)
        assert operator.proc is not None
        pid = operator.proc.pid
        cpus = pin(pid, OPERATOR_CPU)
        result["operator"] = {
            "pid": pid,
            "argv": operator.proc.args if isinstance(operator.proc.args, list) else None,
            "pinned_cpus": cpus,
            "live_after_s": round(time.monotonic() - before, 2),
            "log": str(log),
        }
        meter = Meter(pid)
        sampler = asyncio.create_task(meter.run())
        result["operator"]["settle"] = await wait_idle(pid)
        rss_idle = meter.sample()
        watcher.start()
        topics_before = await kafka_topics(env["kafka_bootstrap"], prefix)
        if topics_before:
            raise RuntimeError(f"topics of this run exist already: {sorted(topics_before)[:5]}")

        # ---- apply everything at once, then wait for Ready ---------------------------------
        say(f"creating {channels} RealtimeChannels at once ({channels * replicas} worker pods)")
        cpu0 = cpu_seconds(pid)
        ticks0 = machine_ticks()
        stack0 = stack_cpu(env)
        t0 = time.monotonic()

        def post(body: Json) -> float:
            api.custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, body)
            return time.monotonic()  # in the API thread: the event loop may be busy

        async def create(body: Json) -> str | None:
            try:
                created = await api.call(post, body)
            except ApiException as exc:
                return f"{body['metadata']['name']}: {exc.status} {exc.reason}"
            tracker.created(body["metadata"]["name"], created)
            return None

        failures = [f for f in await asyncio.gather(*(create(b) for b in bodies)) if f]
        applied = time.monotonic()
        result["apply"] = {"seconds": round(applied - t0, 3), "failed": failures}
        if failures:
            raise RuntimeError(f"{len(failures)} creates failed: {failures[:5]}")
        say(f"created in {applied - t0:.2f} s; waiting for Ready (deadline {phase_limit:.0f} s)")
        all_ready = await tracker.wait_all("ready", t0 + phase_limit)
        done = time.monotonic()
        cpu_ready = cpu_seconds(pid)
        ticks_ready = machine_ticks()
        stack_ready = stack_cpu(env)
        rss_ready = meter.sample()
        chans = list(tracker.channels.values())
        ready_times = since(chans, "ready")
        result["ready"] = {
            "all_ready": all_ready,
            "ready_count": len(ready_times),
            "first_ready_s": first_last(chans, "ready", t0)["first_s"],
            "all_ready_s": first_last(chans, "ready", t0)["last_s"] if all_ready else None,
            "per_channel_s": spread(ready_times),
            "milestones_per_channel_s": {
                m: spread(since(chans, m)) for m in ("finalizer", "status", "topics_ready")
            },
            "not_ready": [
                {"name": c.name, "conditions": brief_conditions(c.last)}
                for c in chans
                if "ready" not in c.at
            ],
        }
        topics = await kafka_topics(env["kafka_bootstrap"], prefix)
        result["kafka_topics_created"] = len(topics)
        result["kafka_topics_expected"] = channels * topics_per_channel
        say(
            f"{len(ready_times)}/{channels} Ready, all after {done - t0:.1f} s; "
            f"{len(topics)} topics; operator CPU {cpu_ready - cpu0:.1f} s"
        )

        # ---- delete everything at once, then verify the cleanup ----------------------------
        say("deleting every channel at once")
        t1 = time.monotonic()

        async def delete(name: str) -> str | None:
            try:
                await api.call(
                    api.custom.delete_namespaced_custom_object,
                    GROUP,
                    VERSION,
                    namespace,
                    PLURAL,
                    name,
                )
            except ApiException as exc:
                if exc.status != 404:
                    return f"{name}: {exc.status} {exc.reason}"
            return None

        delete_failures = [f for f in await asyncio.gather(*(delete(n) for n in names)) if f]
        deadline = time.monotonic() + phase_limit
        all_gone = await tracker.wait_all("gone", deadline)
        gone = time.monotonic()
        cpu_deleted = cpu_seconds(pid)
        ticks_deleted = machine_ticks()
        stack_deleted = stack_cpu(env)
        topics_clean, topics_left = await poll_until(
            lambda: kafka_topics(env["kafka_bootstrap"], prefix), lambda left: not left, deadline
        )
        topics_gone = time.monotonic()
        children_clean, children = await poll_until(
            lambda: api.children_left(namespace),
            lambda left: not any(left.values()),
            deadline,
        )
        children_gone = time.monotonic()
        gone_times = [c.at["gone"] - t1 for c in chans if "gone" in c.at]
        result["cleanup"] = {
            "verified": all_gone and topics_clean and children_clean and not delete_failures,
            "delete_failed": delete_failures,
            "all_channels_gone_s": round(gone - t1, 3) if all_gone else None,
            "channel_gone_s": spread(gone_times),
            "topics_gone_s": round(topics_gone - t1, 3) if topics_clean else None,
            "topics_left": len(topics_left),
            "children_gone_s": round(children_gone - t1, 3) if children_clean else None,
            "children_left": children,
            "not_gone": [
                {"name": c.name, "conditions": brief_conditions(c.last)}
                for c in chans
                if "gone" not in c.at
            ],
        }
        say(
            f"cleanup: channels gone after {gone - t1:.1f} s, topics after "
            f"{topics_gone - t1:.1f} s, worker objects after {children_gone - t1:.1f} s"
        )
        cpu_end = cpu_seconds(pid)
        result["operator_usage"] = {
            "cpu_seconds_to_all_ready": round(cpu_ready - cpu0, 2),
            "cpu_percent_to_all_ready": round(100 * (cpu_ready - cpu0) / max(done - t0, 1e-9), 1),
            "cpu_seconds_delete": round(cpu_deleted - cpu_ready, 2),
            "cpu_seconds_total": round(cpu_end, 2),
            "rss_kib_idle": rss_idle,
            "rss_kib_all_ready": rss_ready,
            "rss_kib_peak": meter.peak_rss_kib,
            "rss_kib_end": meter.sample(),
            "threads_peak": meter.peak_threads,
            "allowed_cpus_of_threads": allowed_cpus(pid),
        }
        result["machine_busy_percent"] = {
            "to_all_ready": busy_percent(ticks0, ticks_ready),
            "delete": busy_percent(ticks_ready, ticks_deleted),
        }
        result["stack_cpu_seconds"] = {
            "to_all_ready": cpu_delta(stack0, stack_ready),
            "delete": cpu_delta(stack_ready, stack_deleted),
        }
        try:
            async with httpx.AsyncClient() as http:
                reply = await http.get(f"http://127.0.0.1:{operator.metrics_port}/metrics")
            result["operator_metrics"] = operator_metrics(reply.text)
        except httpx.HTTPError as exc:
            result["operator_metrics"] = {"error": str(exc)}
        result["operator_alive_at_end"] = operator.alive()
    finally:
        if sampler is not None:
            sampler.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sampler
        await asyncio.to_thread(_teardown, kube, operator, namespace, say)
        watcher.stop()
        api.close()
    result["watch"] = {"restarts": watcher.restarts, "errors": watcher.errors[:10]}
    result["operator_log"] = log_summary(log)
    if meter is not None:
        result["operator_samples"] = {
            "columns": ["seconds", "cpu_seconds", "rss_kib"],
            "rows": meter.series,
        }
    result["loadavg_end"] = loadavg()
    result["wall_seconds"] = round(time.monotonic() - wall, 2)
    return result


def _teardown(
    kube: deploy.Kube, operator: deploy.OperatorProcess, namespace: str, say: Say
) -> None:
    """Whatever happened: no channel left behind with a finalizer, no operator process."""
    try:
        left = kube.run("get", "rtc", "-n", namespace, "-o", "name").split()
    except deploy.DeployError:
        left = []
    if left:
        say(f"{len(left)} channels left: deleting them")
        if not operator.alive():
            for name in left:
                with contextlib.suppress(deploy.DeployError):
                    kube.run(
                        "patch", name, "-n", namespace, "--type=merge",
                        "-p", '{"metadata":{"finalizers":null}}',
                    )  # fmt: skip
        with contextlib.suppress(deploy.DeployError):
            kube.run("delete", "rtc", "--all", "-n", namespace, "--wait=true", "--timeout=120s")
    pid = operator.proc.pid if operator.proc is not None else None
    operator.stop()
    if pid is not None:
        # The operator runs in a session of its own: its process group must be empty now.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, 0)
            raise RuntimeError(f"a process of the operator's group {pid} is still running")
    with contextlib.suppress(deploy.DeployError):
        kube.run("delete", "namespace", namespace, "--wait=false", "--ignore-not-found")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--channels", type=int, default=200)
    parser.add_argument("--replicas", type=int, default=2, help="worker replicas per channel")
    parser.add_argument("--topics-per-channel", type=int, default=2)
    parser.add_argument(
        "--phase-limit", type=float, default=600, help="seconds allowed to Ready, and to cleanup"
    )
    parser.add_argument("--output", help="also write the result to this file")
    args = parser.parse_args(argv)

    def say(text: str) -> None:
        print(f"[w5 {time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)

    result = asyncio.run(
        w5_operator(
            args.channels,
            say,
            settings=process_settings(),
            replicas=args.replicas,
            topics_per_channel=args.topics_per_channel,
            phase_limit=args.phase_limit,
        )
    )
    result["command"] = " ".join(sys.argv)
    emit(result, args.output)
    ok = result["ready"]["all_ready"] and result["cleanup"]["verified"]
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
