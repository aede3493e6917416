"""Bring the whole local stack up, report on it, and take it down.

``up`` is idempotent: with a healthy stack already recorded in ``env.json`` it
only reports it. Every component's command line names the state folder, so
``down`` also finds and stops any stray process of this checkout's stack.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import time
from pathlib import Path
from typing import NotRequired, TypedDict

from . import images, install, kafka, kube, node, pki, versions
from .components import ComponentRecord, Launch
from .procs import StackError, alive, spawn, stop, wait_until
from .progress import say, step
from .settings import DevstackSettings

#: Start order; ``down`` stops in the reverse order (the real node's first: node.ORDER).
ORDER = ("kafka", "etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok")


class StackEnv(TypedDict):
    """The contents of ``.clarion/env.json``: what tests and tools connect to."""

    kafka_bootstrap: str
    kafka_version: str
    kubeconfig: str
    kubernetes_version: str
    api_server: str
    kubectl: str
    state_dir: str
    logs_dir: str
    started_at: float
    components: dict[str, ComponentRecord]
    #: Kafka's listener on the real node's bridge, for its pods (None: no real node).
    kafka_pod_bootstrap: NotRequired[str | None]
    #: The real node (None: KWOK only, and ``node_unavailable`` says why).
    node: NotRequired[node.NodeRecord | None]
    node_unavailable: NotRequired[str | None]


def read_env(settings: DevstackSettings) -> StackEnv | None:
    try:
        data: StackEnv = json.loads(settings.env_file.read_text())
    except (OSError, ValueError):
        return None
    return data


def healthy(env: StackEnv) -> bool:
    return all(alive(rec["pid"]) for rec in env["components"].values())


def _start(launch: Launch, records: dict[str, ComponentRecord]) -> int:
    proc = spawn(launch.argv, launch.log, cwd=launch.cwd)
    records[launch.name] = launch.record(proc.pid)
    return proc.pid


def _node_file(settings: DevstackSettings) -> Path:
    # Written as soon as the host is changed, so that a crash before env.json exists
    # still lets ``down`` put the machine back.
    return settings.state_dir / "node.json"


def _write_node_record(settings: DevstackSettings, record: node.NodeRecord) -> None:
    _node_file(settings).write_text(json.dumps(record, indent=2))


def _node_plan(settings: DevstackSettings, data: Path) -> tuple[node.NodePlan | None, str | None]:
    if not settings.real_node:
        return None, "disabled (CLARION_REAL_NODE=0)"
    reasons = node.preflight(data / "node")
    if reasons:
        return None, "; ".join(reasons)
    return node.plan(data / "node"), None


def up(settings: DevstackSettings) -> StackEnv:
    """Start every component (building what is missing) and write ``env.json``."""
    existing = read_env(settings)
    if existing is not None and healthy(existing):
        say(f"the local stack is already up (started {time.ctime(existing['started_at'])})")
        return existing
    if existing is not None or _node_file(settings).exists():
        say("a previous stack is only partly alive: stopping what is left of it")
        down(settings, quiet=True)

    tools = install.ensure_all(settings)
    data = settings.state_dir / "data"
    shutil.rmtree(data, ignore_errors=True)
    shutil.rmtree(settings.logs_dir, ignore_errors=True)
    settings.logs_dir.mkdir(parents=True)
    logs = settings.logs_dir
    records: dict[str, ComponentRecord] = {}
    node_plan, unavailable = _node_plan(settings, data)
    node_record: node.NodeRecord | None = None
    if unavailable is not None:
        say(f"no real node: {unavailable}; pods run on KWOK's fake node only")
    try:
        if node_plan is not None:
            with step(f"create the real node's bridge {node.BRIDGE} ({node.POD_CIDR})"):
                node_record = node.new_record(
                    node_plan, tools.binary("crictl"), tools.binary("kube-proxy")
                )
                _write_node_record(settings, node_record)
                node.prepare_host(node_plan, node_record)
                _write_node_record(settings, node_record)
        with step("format Kafka storage"):
            broker = kafka.prepare(
                settings.java,
                tools.kafka_libs,
                data / "kafka",
                pods_address=node.GATEWAY if node_plan is not None else None,
            )
        kafka_launch = kafka.launch(settings.java, tools.kafka_libs, broker, logs / "kafka.log")
        kafka_pid = _start(kafka_launch, records)

        cp = kube.plan(data / "kube", pki.generate(data / "kube" / "pki", kube.SERVICE_IP))
        with step("start etcd"):
            pid = _start(kube.etcd(tools.binary("etcd"), cp, logs / "etcd.log"), records)
            wait_until(
                lambda: kube.etcd_ready(cp), what="etcd", timeout=60, pid=pid, log=logs / "etcd.log"
            )
        with step("start kube-apiserver"):
            pid = _start(
                kube.apiserver(tools.binary("kube-apiserver"), cp, logs / "kube-apiserver.log"),
                records,
            )
            wait_until(
                lambda: kube.apiserver_ready(cp),
                what="kube-apiserver",
                timeout=180,
                pid=pid,
                log=logs / "kube-apiserver.log",
            )
        kube.write_kubeconfig(cp)
        with step("start kube-controller-manager, kube-scheduler and KWOK"):
            waits = []
            for make, name, port in (
                (kube.controller_manager, "kube-controller-manager", cp.cm_port),
                (kube.scheduler, "kube-scheduler", cp.scheduler_port),
            ):
                log = logs / f"{name}.log"
                waits.append((name, port, _start(make(tools.binary(name), cp, log), records), log))
            _start(kube.kwok(tools.binary("kwok"), cp, logs / "kwok.log"), records)
            for name, port, pid, log in waits:
                wait_until(
                    functools.partial(kube.healthz, port), what=name, timeout=120, pid=pid, log=log
                )
        kubectl = tools.binary("kubectl")
        with step("register the KWOK node and wait for it and the default ServiceAccount"):
            kube.register_fake_node(kubectl, cp)
            wait_until(
                lambda: kube.node_ready(kubectl, cp),
                what="KWOK node Ready",
                timeout=120,
                pid=records["kwok"]["pid"],
                log=logs / "kwok.log",
            )
            wait_until(
                lambda: kube.default_service_account(kubectl, cp),
                what="default ServiceAccount",
                timeout=120,
                pid=records["kube-controller-manager"]["pid"],
                log=logs / "kube-controller-manager.log",
            )
        with step("wait for Kafka"):
            wait_until(
                lambda: kafka.ready(broker.port, kafka_launch.log, 0),
                what="Kafka",
                timeout=120,
                pid=kafka_pid,
                log=kafka_launch.log,
            )
        if node_plan is not None and node_record is not None:
            archives = [node.ensure_pause_archive(settings.cache_dir)]
            archives += list(images.ensure_images(settings).values())
            with step(f"start the real node {node.NODE_NAME}: containerd, kubelet, kube-proxy"):
                node.start(
                    node_plan,
                    node_record,
                    tools=node.NodeTools(
                        kubelet=tools.binary("kubelet"),
                        kube_proxy=tools.binary("kube-proxy"),
                        crictl=tools.binary("crictl"),
                        kubectl=kubectl,
                    ),
                    pki=cp.pki,
                    api_url=cp.api_url,
                    kubeconfig=cp.kubeconfig,
                    logs=logs,
                    archives=archives,
                    records=records,
                )
                _write_node_record(settings, node_record)
        env: StackEnv = {
            "kafka_bootstrap": broker.bootstrap,
            "kafka_version": kafka.version(kafka_launch.log),
            "kubeconfig": str(cp.kubeconfig),
            "kubernetes_version": kube.server_version(cp),
            "api_server": cp.api_url,
            "kubectl": str(kubectl),
            "state_dir": str(settings.state_dir),
            "logs_dir": str(settings.logs_dir),
            "started_at": time.time(),
            "components": {
                name: records[name] for name in (*ORDER, *node.ORDER) if name in records
            },
            "kafka_pod_bootstrap": broker.pods_bootstrap,
            "node": node_record,
            "node_unavailable": unavailable,
        }
    except BaseException:
        if node_record is not None:
            node.stop(node_record, records, say)
            _node_file(settings).unlink(missing_ok=True)
        for rec in reversed(records.values()):
            if alive(rec["pid"]):
                stop(rec["pid"])
        raise
    if env["kafka_version"] != versions.KAFKA:
        raise StackError(f"Kafka reports {env['kafka_version']}, pinned {versions.KAFKA}")
    settings.env_file.write_text(json.dumps(env, indent=2))
    return env


def stop_component(env: StackEnv, name: str) -> None:
    """Stop one component (for outage tests); ``start_component`` brings it back."""
    stop(env["components"][name]["pid"])


def start_component(settings: DevstackSettings, env: StackEnv, name: str) -> StackEnv:
    """Start a stopped component again with its recorded command line and data."""
    launch = Launch.from_record(name, env["components"][name])
    offset = launch.log.stat().st_size if launch.log.exists() else 0
    proc = spawn(launch.argv, launch.log, cwd=launch.cwd)
    env["components"][name] = launch.record(proc.pid)
    if name == "kafka":
        port = int(env["kafka_bootstrap"].rsplit(":", 1)[1])
        wait_until(
            lambda: kafka.ready(port, launch.log, offset),
            what="Kafka",
            timeout=120,
            pid=proc.pid,
            log=launch.log,
        )
    settings.env_file.write_text(json.dumps(env, indent=2))
    return env


def stray_pids(settings: DevstackSettings) -> list[int]:
    """Processes whose command line names this stack's state folder."""
    marker = str(settings.state_dir / "data").encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if marker in cmdline:
            found.append(int(entry.name))
    return found


def down(settings: DevstackSettings, quiet: bool = False) -> None:
    env = read_env(settings)
    node_record = env.get("node") if env is not None else None
    if node_record is None and _node_file(settings).exists():
        node_record = json.loads(_node_file(settings).read_text())
    if node_record is not None:
        node.stop(node_record, env["components"] if env else {}, say if not quiet else _silent)
        _node_file(settings).unlink(missing_ok=True)
    if env is not None:
        for name in reversed(ORDER):
            record = env["components"].get(name)
            if record and alive(record["pid"]):
                if not quiet:
                    say(f"stopping {name} (pid {record['pid']})")
                stop(record["pid"])
    for pid in stray_pids(settings):
        if not quiet:
            say(f"stopping stray process {pid}")
        stop(pid)
    settings.env_file.unlink(missing_ok=True)


def _silent(message: str) -> None:
    return None


def status(settings: DevstackSettings) -> str:
    env = read_env(settings)
    if env is None:
        return "the local stack is down (no env.json)"
    lines = [
        f"kafka_bootstrap    {env['kafka_bootstrap']}  (Apache Kafka {env['kafka_version']})",
        f"api_server         {env['api_server']}  (Kubernetes {env['kubernetes_version']})",
        f"kubeconfig         {env['kubeconfig']}",
        f"kubectl            {env['kubectl']}",
        f"logs               {env['logs_dir']}",
    ]
    real = env.get("node")
    if real is not None:
        lines.insert(
            2,
            f"real node          {real['name']}  pods {real['pod_cidr']} on {real['bridge']}, "
            f"Kafka for pods {env.get('kafka_pod_bootstrap')}",
        )
    else:
        lines.insert(2, f"real node          none ({env.get('node_unavailable') or 'not started'})")
    for name, rec in env["components"].items():
        state = "running" if alive(rec["pid"]) else "DEAD"
        lines.append(f"  {name:<24} pid {rec['pid']:<8} {state:<8} {rec['log']}")
    return "\n".join(lines)


def _node_tools(settings: DevstackSettings, env: StackEnv) -> node.NodeTools:
    tools = install.ensure_all(settings)
    return node.NodeTools(
        kubelet=tools.binary("kubelet"),
        kube_proxy=tools.binary("kube-proxy"),
        crictl=tools.binary("crictl"),
        kubectl=Path(env["kubectl"]),
    )


def stop_node(settings: DevstackSettings, env: StackEnv) -> StackEnv:
    """Take only the real node down (the rest keeps running); ``start_node`` brings it
    back. For tests of the node's own teardown on a running stack."""
    record = env.get("node")
    if record is None:
        raise StackError("this stack has no real node")
    node.stop(record, env["components"], _silent)
    shutil.rmtree(record["home"], ignore_errors=True)
    _node_file(settings).unlink(missing_ok=True)
    for name in node.ORDER:
        env["components"].pop(name, None)
    env["node"] = None
    env["node_unavailable"] = "stopped by stop_node"
    settings.env_file.write_text(json.dumps(env, indent=2))
    return env


def start_node(settings: DevstackSettings, env: StackEnv) -> StackEnv:
    """Start the real node again on a stack whose node ``stop_node`` took down. Kafka's
    listener for pods stays bound to the gateway address, which comes back with the
    bridge."""
    if env.get("node") is not None:
        raise StackError("the real node is already up")
    home = settings.state_dir / "data" / "node"
    reasons = node.preflight(home)
    if reasons:
        raise StackError("; ".join(reasons))
    tools = _node_tools(settings, env)
    plan = node.plan(home)
    record = node.new_record(plan, tools.crictl, tools.kube_proxy)
    _write_node_record(settings, record)
    records: dict[str, ComponentRecord] = {}
    try:
        node.prepare_host(plan, record)
        archives = [node.ensure_pause_archive(settings.cache_dir)]
        archives += list(images.ensure_images(settings).values())
        pki_dir = settings.state_dir / "data" / "kube" / "pki"
        node.start(
            plan,
            record,
            tools=tools,
            pki=pki.Pki(*(pki_dir / n for n in pki.FILES)),
            api_url=env["api_server"],
            kubeconfig=Path(env["kubeconfig"]),
            logs=settings.logs_dir,
            archives=archives,
            records=records,
        )
    except BaseException:
        node.stop(record, records, _silent)
        _node_file(settings).unlink(missing_ok=True)
        raise
    _write_node_record(settings, record)
    env["components"].update(records)
    env["node"] = record
    env["node_unavailable"] = None
    settings.env_file.write_text(json.dumps(env, indent=2))
    return env
