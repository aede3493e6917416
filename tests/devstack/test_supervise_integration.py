"""The supervised kube-controller-manager on a real stack: restarted after it exits, back
in charge through leader election, and nothing of it left after ``down``.

The test brings up a stack of its own (KWOK only, in a temporary folder) rather than
using the shared one: it kills a control-plane process and takes the stack down.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from clarion_devstack import stack
from clarion_devstack.procs import alive, wait_until
from clarion_devstack.settings import DevstackSettings
from clarion_devstack.suite import EXCLUSIVE

# Exclusive: it starts a whole second stack (Kafka, etcd, an API server...) on a machine
# of two cores, which would slow the tests running beside it past their timeouts.
pytestmark = [pytest.mark.integration, getattr(pytest.mark, EXCLUSIVE)]

CM = "kube-controller-manager"


@pytest.fixture
def private_stack(tmp_path: Path) -> Iterator[tuple[DevstackSettings, stack.StackEnv]]:
    private = {"CLARION_STATE_DIR": str(tmp_path / "s"), "CLARION_REAL_NODE": "0"}
    environ = {**os.environ, **private}  # noqa: TID251 - test-process edge
    settings = DevstackSettings.from_environ(environ)
    try:
        yield settings, stack.up(settings)
    finally:
        stack.down(settings, quiet=True)


def children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(p) for p in text.split()]


def kubectl(env: stack.StackEnv, *args: str) -> str:
    result = subprocess.run(
        [env["kubectl"], f"--kubeconfig={env['kubeconfig']}", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def lease_holder(env: stack.StackEnv) -> str:
    lease = json.loads(kubectl(env, "get", "lease", "-n", "kube-system", CM, "-o", "json"))
    return str(lease["spec"].get("holderIdentity") or "")


def test_a_controller_manager_that_exits_is_restarted_and_down_leaves_nothing(
    private_stack: tuple[DevstackSettings, stack.StackEnv],
) -> None:
    settings, env = private_stack
    supervisor = env["components"][CM]["pid"]
    log = Path(env["components"][CM]["log"])
    (first,) = children(supervisor)
    wait_until(lambda: lease_holder(env) != "", what="first lease", timeout=60)
    holder = lease_holder(env)

    os.kill(first, signal.SIGKILL)  # as if it crashed, or lost its lease and exited

    wait_until(lambda: children(supervisor) not in ([], [first]), what="a new child", timeout=30)
    (second,) = children(supervisor)
    wait_until(lambda: f"{CM}: started pid {second}" in log.read_text(), what="log", timeout=10)
    assert f"{CM}: pid {first} was killed by SIGKILL after" in log.read_text()
    # The fresh process waits out its predecessor's lease (5 s), then takes it and acts:
    # a new Deployment gets its ReplicaSet.
    wait_until(lambda: lease_holder(env) not in ("", holder), what="lease taken", timeout=90)
    kubectl(env, "create", "deployment", "after-restart", "--image=registry.k8s.io/pause:3.10")
    wait_until(
        lambda: "after-restart" in kubectl(env, "get", "replicasets", "-o", "name"),
        what="ReplicaSet of a Deployment created after the restart",
        timeout=60,
    )
    assert alive(supervisor)

    stack.down(settings, quiet=True)

    for pid in (supervisor, second):
        assert not alive(pid)
    assert stack.stray_pids(settings) == []
    assert not [p for p in Path("/proc").iterdir() if p.name.isdigit() and _names(p, settings)]


def _names(proc: Path, settings: DevstackSettings) -> bool:
    """The process's command line names this stack's state folder."""
    if int(proc.name) == os.getpid():
        return False
    try:
        return str(settings.state_dir).encode() in (proc / "cmdline").read_bytes()
    except OSError:
        return False
