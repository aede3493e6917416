"""Operator recovery: how long after the API server, etcd or the Kafka broker comes back
are all channels Ready again, and what the operator logged meanwhile.

    CLARION_STATE_DIR=/work/state-recovery .venv/bin/python bench/recovery.py \\
        --outages 30,90 --output recovery.json

Against a private local stack (started when ``CLARION_STATE_DIR`` names no running one,
and left running): it stops and restarts components, so never point it at a shared stack.
The real operator runs as in production (``clarion_devstack.e2e.deploy.OperatorProcess``,
default drift interval). ``--channels`` channels are applied and Ready first; then, for
each component and outage length, ``--fresh`` new channels are applied and the component
is stopped at once (the operator is in the middle of creating them), kept down for the
outage, and started again with its recorded command line and data. "Back" is the moment
``/readyz`` answers ok again (API server, etcd) or the broker is ready (Kafka, as the stack
checks it); the recovery time is from then until every channel (the old ones and the
fresh ones) is seen Ready for its current generation by a watch. "Reconciled" is the
operator's part: every channel's topics in sync and its children applied without an API
error; Ready needs the controller-manager, the scheduler and KWOK to roll the Deployments
out after their own reconnect too (after an outage longer than their leader election's
renew deadline, 4 s, the stack's supervisor restarts the first two once the API server is
ready, and each waits out its predecessor's 5 s Lease before it acts, as in a real cluster
with its 15 s). Each scenario records the machine's load average. The operator's log lines of
the window are counted by level, with the most frequent warnings and errors.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from kubernetes import client as k8s
from kubernetes import config as k8s_config
from result_json import emit  # type: ignore[import-not-found]  # bench/result_json.py, beside this
from w5 import (  # type: ignore[import-not-found]  # bench/w5.py, beside this
    GROUP,
    PLURAL,
    VERSION,
    ChannelWatch,
    ensure_stack,
    is_true,
    log_summary,
    process_settings,
)

from clarion_devstack import stack
from clarion_devstack.e2e import deploy
from clarion_devstack.stack import StackEnv

Json = dict[str, Any]
COMPONENTS = ("kube-apiserver", "etcd", "kafka")


def say(message: str) -> None:
    print(f"[recovery] {message}", file=sys.stderr, flush=True)


class Board:
    """The latest state of every channel of a namespace, fed by ``w5.ChannelWatch``."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.objects: dict[str, Json] = {}
        self._lock = threading.Lock()
        self._loop = loop
        self._changed = asyncio.Event()

    def observe(self, kind: str, obj: Mapping[str, Any], when: float) -> None:
        name = str((obj.get("metadata") or {}).get("name"))
        with self._lock:
            if kind == "DELETED":
                self.objects.pop(name, None)
            else:
                self.objects[name] = dict(obj)
        self._loop.call_soon_threadsafe(self._changed.set)

    def listed(self, items: Sequence[Mapping[str, Any]], when: float) -> None:
        with self._lock:
            self.objects = {str((i.get("metadata") or {}).get("name")): dict(i) for i in items}
        self._loop.call_soon_threadsafe(self._changed.set)

    def not_ready(
        self, names: Sequence[str], check: Callable[[Json], bool] | None = None
    ) -> list[str]:
        test = check or (lambda obj: bool(is_true(obj, "Ready")))
        with self._lock:
            return [n for n in names if n not in self.objects or not test(self.objects[n])]

    def reasons(self, names: Sequence[str]) -> dict[str, str]:
        out: dict[str, str] = {}
        with self._lock:
            for name in names:
                for c in (self.objects.get(name, {}).get("status") or {}).get("conditions") or []:
                    if c.get("type") == "Ready":
                        out[name] = f"{c.get('status')} {c.get('reason')}"
        return out

    async def empty(self, deadline: float) -> None:
        """Until every channel is gone (its finalizer released), or the deadline."""
        while self.objects and time.monotonic() < deadline:
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), deadline - time.monotonic())

    async def all_ready(
        self, names: Sequence[str], deadline: float, check: Callable[[Json], bool] | None = None
    ) -> float | None:
        """When every channel was Ready (or passed ``check``; monotonic), None at the deadline."""
        while self.not_ready(names, check):
            self._changed.clear()
            if not self.not_ready(names, check):
                break
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), remaining)
        return time.monotonic()


def reconciled(obj: Json) -> bool:
    """The operator reconciled the current generation without an API error: topics in sync,
    children applied, the Deployment read (rolling it out is the controller-manager's)."""
    generation = (obj.get("metadata") or {}).get("generation")
    found = {c.get("type"): c for c in (obj.get("status") or {}).get("conditions") or []}
    topics, workers = found.get("TopicsReady") or {}, found.get("WorkersReady") or {}
    return (
        topics.get("status") == "True"
        and topics.get("observedGeneration") == generation
        and workers.get("reason") in ("WorkersReady", "WorkersProgressing")
    )


def api_ready(env: StackEnv) -> bool:
    try:
        result = subprocess.run(
            [env["kubectl"], f"--kubeconfig={env['kubeconfig']}", "get", "--raw", "/readyz"],
            capture_output=True,
            text=True,
            timeout=10,
        )
    except subprocess.TimeoutExpired:
        return False  # an API server still starting may hold the request
    return result.returncode == 0 and result.stdout.strip() == "ok"


async def wait_back(env: StackEnv, component: str, deadline: float) -> float:
    """When the component serves again: /readyz ok (the stack waits for Kafka itself)."""
    if component != "kafka":
        while not await asyncio.to_thread(api_ready, env):
            if time.monotonic() > deadline:
                raise RuntimeError(f"{component}: the API server is not ready again")
            await asyncio.sleep(0.1)
    return time.monotonic()


def channel(name: str, namespace: str, bootstrap: str, topic: str) -> Json:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "RealtimeChannel",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "kafka": {"bootstrapServers": bootstrap},
            "topics": [
                {"name": topic, "partitions": 1, "replicationFactor": 1, "deletionPolicy": "Delete"}
            ],
            "auth": {"mode": "none"},
            "workers": {"replicas": 1},
        },
    }


def window_log(path: Path, offset: int) -> Json:
    """``w5.log_summary`` of the lines written after ``offset``."""
    cut = path.with_suffix(".window.log")
    with path.open("rb") as log:
        log.seek(offset)
        cut.write_bytes(log.read())
    summary: Json = log_summary(cut, top=6)
    summary.pop("path", None)
    return summary


async def run(
    channels: int, fresh: int, outages: Sequence[float], components: Sequence[str]
) -> Json:
    settings = process_settings()
    env, started = await asyncio.to_thread(ensure_stack, settings, say)
    run_id = uuid.uuid4().hex[:6]
    namespace = f"recovery-{run_id}"
    kube = deploy.Kube.of(env)
    await asyncio.to_thread(deploy.install_crd, kube)
    await asyncio.to_thread(deploy.ensure_namespace, kube, namespace)
    log = Path(env["logs_dir"]) / f"operator-{namespace}.log"
    operator = deploy.OperatorProcess(env["kubeconfig"], namespace, log)
    api = k8s_config.new_client_from_config(config_file=env["kubeconfig"])
    custom = k8s.CustomObjectsApi(api)
    board = Board(asyncio.get_running_loop())
    watch = ChannelWatch(api, namespace, board)
    result: Json = {
        "workload": "operator-recovery",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "namespace": namespace,
        "channels_before": channels,
        "fresh_per_outage": fresh,
        "stack": {"state_dir": env["state_dir"], "started_by_this_run": started},
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
        "scenarios": [],
    }
    names: list[str] = []
    topics: list[str] = []

    async def apply(prefix: str, count: int) -> list[str]:
        made = []
        for i in range(count):
            name, topic = f"{prefix}-{i}", f"recovery-{run_id}-{prefix}-{i}"
            body = channel(name, namespace, env["kafka_bootstrap"], topic)
            await asyncio.to_thread(
                custom.create_namespaced_custom_object, GROUP, VERSION, namespace, PLURAL, body
            )
            made.append(name)
            topics.append(topic)
        return made

    try:
        await asyncio.to_thread(operator.start)
        watch.start()
        names += await apply("base", channels)
        t0 = time.monotonic()
        if await board.all_ready(names, t0 + 300) is None:
            raise RuntimeError(f"not Ready: {board.reasons(board.not_ready(names))}")
        say(f"{channels} channels Ready after {time.monotonic() - t0:.1f} s")
        for outage in outages:
            for component in components:
                label = f"{component}-{outage:g}s"
                offset = log.stat().st_size
                names += await apply(label.replace(".", "-"), fresh)
                down = time.monotonic()
                await asyncio.to_thread(stack.stop_component, env, component)
                say(f"{component} stopped for {outage:g} s")
                await asyncio.sleep(max(0.0, down + outage - time.monotonic()))
                during = board.reasons(names)
                env = await asyncio.to_thread(stack.start_component, settings, env, component)
                back = await wait_back(env, component, time.monotonic() + 180)
                done = await board.all_ready(names, back + 180, reconciled)
                ready = await board.all_ready(names, back + 180)
                scenario: Json = {
                    "component": component,
                    "outage_s": outage,
                    "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
                    "restart_to_back_s": round(back - down - outage, 2),
                    "all_reconciled_after_back_s": None if done is None else round(done - back, 2),
                    "all_ready_after_back_s": None if ready is None else round(ready - back, 2),
                    "channels": len(names),
                    "not_ready_during": sorted(
                        {v for v in during.values() if not v.startswith("True")}
                    ),
                    "not_ready_at_end": board.reasons(board.not_ready(names)),
                    "operator_log": window_log(log, offset),
                }
                result["scenarios"].append(scenario)
                say(
                    f"{label}: all {len(names)} reconciled "
                    f"{scenario['all_reconciled_after_back_s']} s and Ready "
                    f"{scenario['all_ready_after_back_s']} s after it was back; log "
                    f"{scenario['operator_log']['by_level']}"
                )
        result["operator_alive"] = operator.alive()
    finally:
        watch.stop()
        for name in names:
            with contextlib.suppress(Exception):
                await asyncio.to_thread(
                    custom.delete_namespaced_custom_object, GROUP, VERSION, namespace, PLURAL, name
                )
        await board.empty(time.monotonic() + 120)
        operator.stop()
        api.close()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--channels", type=int, default=10)
    parser.add_argument("--fresh", type=int, default=5, help="channels applied at each outage")
    parser.add_argument("--outages", default="30,90", help="seconds, comma-separated")
    parser.add_argument("--components", default=",".join(COMPONENTS))
    parser.add_argument("--output", type=Path)
    args = parser.parse_args()
    if "CLARION_STATE_DIR" not in os.environ:  # noqa: TID251 - benchmark entry point
        raise SystemExit("it stops components: set CLARION_STATE_DIR to a private stack folder")
    outages = [float(x) for x in args.outages.split(",") if x]
    components = [c for c in args.components.split(",") if c]
    result = asyncio.run(run(args.channels, args.fresh, outages, components))
    emit(result, args.output)


if __name__ == "__main__":
    main()
