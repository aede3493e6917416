"""Secret rotation: how soon a RealtimeChannel shows a change of the Secret its
``spec.kafka.security`` names, with the operator watching Secrets.

    .venv/bin/python bench/secret_follow.py --trials 3 --output secret-follow.json

Starts its own three-node Kafka (``clarion_devstack.kafka_cluster``: TLS from the stack's
CA, SCRAM-SHA-512 users) on free 127.0.0.1 ports and stops it afterwards; uses the running
local stack's API server (started as ``make env-up`` does when none runs), a fresh
namespace and the real operator as a process (``clarion_devstack.e2e.deploy``). It stops
nothing of the stack. A channel on the SASL_SSL listener is made Ready with the right
password first; then each trial replaces the password in the Secret with a wrong one, waits
for ``Ready=False KafkaAuthorizationFailed``, puts the right one back and waits for
``Ready=True``, all seen by a watch of the channel. Reported per trial, from the moment the
Secret's replacement was sent to the API server: when the operator logged that it reconciles
the channel for the Secret (the watch's share), and when the channel's condition changed
(the reconcile's SCRAM login and topic describe included). Without the watch a fixed
password showed at the refusal's retry, 120 s later.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes import watch
from result_json import emit  # type: ignore[import-not-found]  # bench/result_json.py, beside this
from w5 import ensure_stack, process_settings  # type: ignore[import-not-found]  # bench/w5.py

from clarion_devstack import install, kafka_cluster
from clarion_devstack.e2e import deploy

Json = dict[str, Any]
GROUP, VERSION, PLURAL = "realtime.clarion.dev", "v1alpha1", "realtimechannels"
USER = "clarion-worker"
WAIT = 120.0


def say(text: str) -> None:
    print(f"[secret-follow] {text}", file=sys.stderr, flush=True)


def ready(obj: Json) -> tuple[str, str]:
    for c in (obj.get("status") or {}).get("conditions") or []:
        if c.get("type") == "Ready":
            return str(c.get("status")), str(c.get("reason"))
    return "", ""


def is_state(goal: tuple[str, str], obj: Json) -> bool:
    return ready(obj) == goal


class Seen:
    """Every state of one channel, from a watch in a thread (as the tests' ChannelWatch)."""

    def __init__(self, api: k8s.ApiClient, namespace: str, name: str) -> None:
        self.states: list[tuple[float, Json]] = []
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._args = (api, namespace, name)
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        api, namespace, name = self._args
        custom = k8s.CustomObjectsApi(api)
        while not self._stop.is_set():
            try:
                for event in watch.Watch().stream(
                    custom.list_namespaced_custom_object,
                    GROUP,
                    VERSION,
                    namespace,
                    PLURAL,
                    field_selector=f"metadata.name={name}",
                    timeout_seconds=5,
                ):
                    with self._cond:
                        self.states.append((time.monotonic(), event["object"]))
                        self._cond.notify_all()
            except Exception:  # the API server busy: watch again
                self._stop.wait(0.5)

    def after(self, since: float, predicate: Callable[[Json], bool], what: str) -> float:
        """The first instant at or after ``since`` of a state for which ``predicate`` holds."""
        deadline = time.monotonic() + WAIT
        with self._cond:
            while True:
                for at, obj in self.states:
                    if at >= since and predicate(obj):
                        return at
                left = deadline - time.monotonic()
                if left <= 0:
                    last = ready(self.states[-1][1]) if self.states else None
                    raise RuntimeError(f"{what} not within {WAIT:g} s; last Ready: {last}")
                self._cond.wait(left)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


def log_instant(operator: deploy.OperatorProcess, text: str, since_wall: float) -> float | None:
    """Wall time of the first operator log line containing ``text`` after ``since_wall``."""
    for line in operator.log_lines():
        stamp = line.get("timestamp")
        if not isinstance(stamp, str) or text not in str(line.get("message")):
            continue
        at = datetime.fromisoformat(stamp).timestamp()
        if at >= since_wall:
            return at
    return None


def run(trials: int, directory: Path) -> Json:
    settings = process_settings()
    env, started = ensure_stack(settings, say)
    namespace = f"secret-follow-{uuid.uuid4().hex[:6]}"
    kube = deploy.Kube.of(env)
    deploy.install_crd(kube)
    deploy.ensure_namespace(kube, namespace)
    cluster = kafka_cluster.prepare(
        settings.java, install.ensure_kafka(settings), directory / "kafka"
    )
    api = k8s_config.new_client_from_config(config_file=env["kubeconfig"])
    core = k8s.CoreV1Api(api)
    log = Path(env["logs_dir"]) / f"operator-{namespace}.log"
    operator = deploy.OperatorProcess(env["kubeconfig"], namespace, log)
    seen = None
    result: Json = {
        "workload": "secret-follow",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "namespace": namespace,
        "stack": {"state_dir": env["state_dir"], "started_by_this_run": started},
        "trials": [],
    }
    right = cluster.users[USER].password

    def secret(password: str) -> k8s.V1Secret:
        return k8s.V1Secret(
            metadata=k8s.V1ObjectMeta(name="kafka-user", namespace=namespace),
            string_data={"username": USER, "password": password},
        )

    def replace(password: str) -> tuple[float, float]:
        """The instants (monotonic, wall) the replacement was sent at."""
        mono, wall = time.monotonic(), time.time()
        core.replace_namespaced_secret("kafka-user", namespace, secret(password))
        return mono, wall

    try:
        say("starting three Kafka nodes")
        cluster.start_all()
        core.create_namespaced_secret(namespace, secret(right))
        core.create_namespaced_secret(
            namespace,
            k8s.V1Secret(
                metadata=k8s.V1ObjectMeta(name="cluster-ca", namespace=namespace),
                string_data={"ca.crt": cluster.ca_file.read_text()},
            ),
        )
        operator.start()
        seen = Seen(api, namespace, "sec")
        prefix = f"sf-{uuid.uuid4().hex[:6]}"
        body = {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "RealtimeChannel",
            "metadata": {"name": "sec", "namespace": namespace},
            "spec": {
                "kafka": {
                    "bootstrapServers": cluster.secure_bootstrap,
                    "security": {
                        "protocol": "SASL_SSL",
                        "saslMechanism": "SCRAM-SHA-512",
                        "credentialsSecret": {"name": "kafka-user"},
                        "tlsSecret": {"name": "cluster-ca"},
                    },
                },
                "topics": [{"name": f"{prefix}.events", "partitions": 3, "replicationFactor": 3}],
                "auth": {"mode": "none"},
                "workers": {"replicas": 1},
            },
        }
        t0 = time.monotonic()
        k8s.CustomObjectsApi(api).create_namespaced_custom_object(
            GROUP, VERSION, namespace, PLURAL, body
        )
        seen.after(t0, lambda o: ready(o)[0] == "True", "Ready at first")
        say(f"channel Ready after {time.monotonic() - t0:.1f} s")
        reconciling = f"Secret {namespace}/kafka-user changed: reconciling channel(s) sec"
        for n in range(trials):
            trial: Json = {"trial": n + 1}
            for phase, password, goal in (
                ("wrong", "not-the-password", ("False", "KafkaAuthorizationFailed")),
                ("fixed", right, ("True", "Reconciled")),
            ):
                mono, wall = replace(password)
                at = seen.after(mono, partial(is_state, goal), f"Ready {goal}")
                logged = log_instant(operator, reconciling, wall)
                trial[f"{phase}_ready_{goal[0].lower()}_after_s"] = round(at - mono, 3)
                trial[f"{phase}_reconcile_logged_after_s"] = (
                    None if logged is None else round(logged - wall, 3)
                )
            say(f"trial {n + 1}: {trial}")
            result["trials"].append(trial)
        for key in result["trials"][0] if result["trials"] else ():
            values = [t[key] for t in result["trials"] if t[key] is not None]
            if key != "trial" and values:
                result[f"max_{key}"] = max(values)
    finally:
        if seen is not None:
            seen.stop()
        if operator.alive():  # it releases the channel's finalizer
            deploy.delete_channel(kube, namespace, "sec")
        operator.stop()
        kube.run("delete", "namespace", namespace, "--wait=false")
        cluster.close()
    return result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--trials", type=int, default=3)
    p.add_argument("--output", type=Path)
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="secret-follow-") as tmp:
        result = run(args.trials, Path(tmp))
    emit(result, args.output)


if __name__ == "__main__":
    main()
