"""The real node leaves the machine as it found it: after ``down`` no process, link,
route, firewall rule, mount, cgroup or folder of it is left, and every sysctl it or the
kubelet changed holds its original value again."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

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


@pytest.fixture
def state_dir() -> Iterator[Path]:
    # Short: the node's unix sockets live under it (pytest's tmp_path is too deep).
    path = Path(tempfile.mkdtemp(prefix="cn-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def test_down_leaves_nothing_of_the_real_node(state_dir: Path) -> None:
    reasons = node.preflight(state_dir / "data" / "node")
    if reasons:
        pytest.skip(f"this machine cannot run the real node: {'; '.join(reasons)}")
    settings = DevstackSettings.from_environ(
        {**os.environ, "CLARION_STATE_DIR": str(state_dir)}  # noqa: TID251
    )
    if not settings.real_node:
        pytest.skip("the real node is switched off (CLARION_REAL_NODE=0)")
    before = node.host_snapshot()
    env = stack.up(settings)
    try:
        real = env.get("node")
        assert real is not None, env.get("node_unavailable")
        kubectl = [env["kubectl"], f"--kubeconfig={env['kubeconfig']}"]
        # A namespace pinned to the real node, and a pod in it that really runs.
        ns = {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {"name": "leak", "annotations": node.namespace_annotations()},
        }
        for body, extra in ((ns, []), (_POD, ["-n", "leak"])):
            subprocess.run(
                [*kubectl, "apply", *extra, "-f", "-"],
                input=json.dumps(body),
                check=True,
                capture_output=True,
                text=True,
            )
        subprocess.run(
            [
                *kubectl,
                "wait",
                "-n",
                "leak",
                "pod/pause",
                "--for=condition=Ready",
                "--timeout=120s",
            ],
            check=True,
            capture_output=True,
            text=True,
        )
        pod = json.loads(
            subprocess.run(
                [*kubectl, "get", "-n", "leak", "pod/pause", "-o", "json"],
                check=True,
                capture_output=True,
                text=True,
            ).stdout
        )
        assert pod["spec"]["nodeName"] == node.NODE_NAME
        during = node.host_snapshot()
        assert node.BRIDGE in during["links"]
        assert any(line.startswith("nat: -N KUBE-SERVICES") for line in during["iptables"])
        assert during["kubepods_cgroups"]
        pids = [rec["pid"] for rec in env["components"].values()]
    finally:
        stack.down(settings)
    after = node.host_snapshot()
    assert not [pid for pid in pids if alive(pid)]
    assert not node.pids_naming(str(state_dir))
    for key in before:
        assert after[key] == before[key], key
