"""The real node leaves the machine as it found it: after ``down`` no process, link,
route, firewall rule, mount, cgroup or folder of it is left, and every sysctl it or the
kubelet changed holds its original value again."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from clarion_devstack import node, stack
from clarion_devstack.procs import alive
from clarion_devstack.settings import DevstackSettings

pytestmark = pytest.mark.integration

_POD = {
    "apiVersion": "v1",
    "kind": "Pod",
    "metadata": {"name": "pause"},
    "spec": {
        "containers": [
            {"name": "pause", "image": node.PAUSE_IMAGE, "imagePullPolicy": "IfNotPresent"}
        ],
        "terminationGracePeriodSeconds": 1,
    },
}


def _run_a_pod(env: stack.StackEnv) -> dict[str, Any]:
    """A namespace pinned to the real node and a pod in it that really runs; the
    machine's snapshot while it does."""
    kubectl = [env["kubectl"], f"--kubeconfig={env['kubeconfig']}"]
    name = f"leak-{uuid.uuid4().hex[:6]}"
    ns = {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": name, "annotations": node.namespace_annotations()},
    }

    def run(*args: str, stdin: str | None = None) -> str:
        return subprocess.run(
            [*kubectl, *args], input=stdin, check=True, capture_output=True, text=True
        ).stdout

    run("apply", "-f", "-", stdin=json.dumps(ns))
    run("apply", "-n", name, "-f", "-", stdin=json.dumps(_POD))
    run("wait", "-n", name, "pod/pause", "--for=condition=Ready", "--timeout=2m")
    pod = json.loads(run("get", "-n", name, "pod/pause", "-o", "json"))
    assert pod["spec"]["nodeName"] == node.NODE_NAME
    during = node.host_snapshot()
    run("delete", "namespace", name, "--wait=false")
    return during


def _assert_in_use(during: dict[str, Any]) -> None:
    assert node.BRIDGE in during["links"]
    assert any(line.startswith("nat: -N KUBE-SERVICES") for line in during["iptables"])
    assert during["kubepods_cgroups"]


def _assert_same(before: dict[str, Any], after: dict[str, Any]) -> None:
    for key in before:
        assert after[key] == before[key], key


@pytest.fixture
def state_dir() -> Iterator[Path]:
    # Short: the node's unix sockets live under it (pytest's tmp_path is too deep).
    path = Path(tempfile.mkdtemp(prefix="cn-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.mark.exclusive  # stops the running stack's node: nothing else may use it meanwhile
def test_down_leaves_nothing_of_the_real_node(state_dir: Path) -> None:
    """On the running stack's node when there is one (one node per machine: stop it,
    snapshot, start it, run a pod, stop it, compare, start it again for the tests that
    follow); otherwise on a private stack brought up and down for this test."""
    shared = DevstackSettings.from_environ(os.environ)  # noqa: TID251 - test-process edge
    env = stack.read_env(shared)
    if env is not None and stack.healthy(env) and env.get("node") is not None:
        env = stack.stop_node(shared, env)
        before = node.host_snapshot()
        try:
            env = stack.start_node(shared, env)
            record = env.get("node")
            assert record is not None
            pids = [env["components"][n]["pid"] for n in node.ORDER]
            _assert_in_use(_run_a_pod(env))
            env = stack.stop_node(shared, env)
            after = node.host_snapshot()
        finally:
            if env.get("node") is None:
                stack.start_node(shared, env)
        assert not [pid for pid in pids if alive(pid)]
        assert not node.pids_naming(record["containerd_socket"])
        _assert_same(before, after)
        # What this start created is gone again, mounts included (/run/netns, which the
        # CNI plugins mount onto itself, stayed mounted before).
        assert not [d for d in record["host_dirs_created"] if os.path.lexists(d)]
        return
    reasons = node.preflight(state_dir / "data" / "node")
    if reasons:
        pytest.skip(f"this machine cannot run the real node: {'; '.join(reasons)}")
    settings = DevstackSettings.from_environ(
        {**os.environ, "CLARION_STATE_DIR": str(state_dir)}  # noqa: TID251
    )
    if not settings.real_node:
        pytest.skip("the real node is switched off (CLARION_REAL_NODE=0)")
    before = node.host_snapshot()
    private = stack.up(settings)
    try:
        assert private.get("node") is not None, private.get("node_unavailable")
        _assert_in_use(_run_a_pod(private))
        pids = [rec["pid"] for rec in private["components"].values()]
    finally:
        stack.down(settings)
    after = node.host_snapshot()
    assert not [pid for pid in pids if alive(pid)]
    assert not node.pids_naming(str(state_dir))
    _assert_same(before, after)
