"""pytest fixtures that give integration tests the real local stack.

The stack comes up once per test session, or an already running one (``make
env-up``, or the one ``make test``'s runner started: ``clarion_devstack.suite``) is reused
from ``.clarion/env.json`` and left running afterwards. When an integration test fails,
its report names the folder holding every component's log.

A test that stops Kafka, etcd, the API server or the real node asks for ``own_stack``:
it runs only where nobody else may be using the stack, and is marked ``exclusive`` so that
``make test`` runs it alone, after the tests that run side by side.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client as k8s
from kubernetes import config as k8s_config

from . import kube, stack
from .settings import DevstackSettings
from .suite import BACKGROUND, EXCLUSIVE, STARTED_BY_RUN

INTEGRATION = "integration"


@dataclass(frozen=True)
class LocalStack:
    """The running stack as integration tests see it."""

    settings: DevstackSettings
    env: stack.StackEnv
    #: This pytest session started the stack (it stops it at the end).
    started_here: bool = False

    @property
    def disposable(self) -> bool:
        """Nobody else may be using this stack: a private ``CLARION_STATE_DIR``, or the
        checkout's stack when this session or ``make test``'s runner started it."""
        if self.settings.state_dir.resolve() != (self.settings.checkout / ".clarion").resolve():
            return True
        given = os.environ.get(STARTED_BY_RUN)  # noqa: TID251 - test-process edge
        return self.started_here or given == repr(self.env["started_at"])

    @property
    def kafka_bootstrap(self) -> str:
        return self.env["kafka_bootstrap"]

    @property
    def kubeconfig(self) -> Path:
        return Path(self.env["kubeconfig"])

    @property
    def logs_dir(self) -> Path:
        return Path(self.env["logs_dir"])

    def kubectl(self, *args: str, stdin: str | None = None, check: bool = True) -> str:
        """Run the pinned kubectl against the stack; return stdout (stderr too on failure)."""
        result = kube.run_kubectl(self.env["kubectl"], self.kubeconfig, *args, stdin=stdin)
        if check and result.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed:\n{result.stderr}")
        return result.stdout if result.returncode == 0 else result.stderr

    def delete_all(self, kind: str, namespace: str, timeout: float = 10) -> list[str]:
        """Delete every ``kind`` object of ``namespace`` at once, then read them back until
        they are gone; those still there at ``timeout``, whose YAML then goes to
        ``<logs>/leftover-<kind>-<namespace>.yaml``. (Such a file showed why channels had
        stayed 30 s after the operator processed their deletion: kopf kept the finalizer
        until a running timer ended, polling every 60 s; the operator now polls every
        second.)"""
        self.kubectl("delete", kind, "--all", "-n", namespace, "--wait=false", check=False)
        deadline = time.monotonic() + timeout
        while True:
            left = self.kubectl("get", kind, "-n", namespace, "-o", "name", check=False).split()
            if not left or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        if left:
            found = self.kubectl("get", kind, "-n", namespace, "-o", "yaml", check=False)
            (self.logs_dir / f"leftover-{kind}-{namespace}.yaml").write_text(found)
        return left


_LOGS_KEY = pytest.StashKey[Path]()


@pytest.fixture(scope="session")
def local_stack(request: pytest.FixtureRequest) -> Iterator[LocalStack]:
    settings = DevstackSettings.from_environ(os.environ)  # noqa: TID251 - test-process edge
    env = stack.read_env(settings)
    owned = env is None or not stack.healthy(env)
    if owned and os.environ.get("PYTEST_XDIST_WORKER"):  # noqa: TID251 - test-process edge
        # Each xdist worker would start its own stack in the same folder at once.
        pytest.fail(
            "pytest -n needs a running stack: make env-up first, or run make test "
            "(python -m clarion_devstack.suite), which starts one for all its workers",
            pytrace=False,
        )
    if owned:
        env = stack.up(settings)
    assert env is not None
    request.config.stash[_LOGS_KEY] = Path(env["logs_dir"])
    try:
        yield LocalStack(settings, env, started_here=owned)
    finally:
        if owned:
            stack.down(settings, quiet=True)


@pytest.fixture
def own_stack(local_stack: LocalStack) -> LocalStack:
    """The stack, for a test that stops or freezes one of its components."""
    if not local_stack.disposable:
        pytest.skip(
            "stops or freezes a component of the stack: runs only on a stack this run "
            "started (make test, or CLARION_STATE_DIR=<a fresh folder>), never on a shared one"
        )
    return local_stack


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        f"{EXCLUSIVE}: stops or measures a shared component; make test runs it alone, "
        "after the tests that run side by side (every test that asks for own_stack)",
    )
    config.addinivalue_line(
        "markers",
        f"{BACKGROUND}: make test runs it beside the first phase, in a pytest worker of its "
        "own (every test of tests/e2e/ and tests/kafka/, and tests that wait minutes on a "
        "timer)",
    )


#: Folders whose files run one after another as one work unit: ``tests/e2e/`` shares fixed
#: names on the stack (the UnionFlow channel's topics, as its producers write them), and
#: ``tests/kafka/`` one costly session fixture (a three-broker cluster: three JVMs, built
#: once per worker that needs it).
SERIAL_FOLDERS = ("tests/e2e/", "tests/kafka/")
#: Work units that take longest, started first so that the side-by-side phase does not end
#: waiting on one of them.
LONGEST_FIRST = ("tests/e2e/", "tests/kafka/", "tests/clients/")
#: Folders whose tests are all ``background``, each folder one work unit
#: (:data:`SERIAL_FOLDERS`): tests/e2e/'s share the UnionFlow topics by name, and
#: tests/kafka/'s one three-broker cluster, so each folder runs one test after another
#: anyway; both mostly wait (on pods, proxies, rollouts, brokers restarting). Beside the
#: first phase they cost it little and the run their minutes.
BACKGROUND_FOLDERS = SERIAL_FOLDERS
#: Files that are a work unit of their own although their folder is one: they share no
#: name with the folder's other tests (the Traefik idle test's 200 s on a timer, beside
#: the rest of tests/e2e/).
OWN_UNITS = ("tests/e2e/test_traffic_entry_idle.py",)


def work_unit(nodeid: str) -> str:
    """The test file, or the folder for the files of :data:`SERIAL_FOLDERS` (except
    :data:`OWN_UNITS`)."""
    path = nodeid.split("::", 1)[0]
    if path in OWN_UNITS:
        return path
    return next((folder for folder in SERIAL_FOLDERS if path.startswith(folder)), path)


def _start_rank(item: pytest.Item) -> int:
    path = item.nodeid.split("::", 1)[0]
    return next((i for i, f in enumerate(LONGEST_FIRST) if path.startswith(f)), len(LONGEST_FIRST))


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # Before ``-m`` selects: a test that asks for ``own_stack`` is exclusive by nature.
    for item in items:
        if "own_stack" in getattr(item, "fixturenames", ()):
            item.add_marker(EXCLUSIVE)
        if item.nodeid.startswith(BACKGROUND_FOLDERS):
            item.add_marker(BACKGROUND)
    if getattr(config.option, "dist", "no") != "no":  # side by side only
        items.sort(key=_start_rank)  # stable: each file keeps its order


@pytest.hookimpl(optionalhook=True)  # xdist's hook: absent with -p no:xdist
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """With ``--dist loadfile`` (make test's first phase), a file per work unit except
    :data:`SERIAL_FOLDERS`, each one unit (xdist's documented extension point)."""
    if config.getoption("dist", None) != "loadfile":
        return None
    from xdist.scheduler import LoadScopeScheduling  # type: ignore[import-untyped]

    class ByFileSerialFoldersTogether(LoadScopeScheduling):  # type: ignore[misc]
        def _split_scope(self, nodeid: str) -> str:
            return work_unit(nodeid)

    return ByFileSerialFoldersTogether(config, log)


@pytest.fixture(scope="session")
def kafka_bootstrap(local_stack: LocalStack) -> str:
    return local_stack.kafka_bootstrap


@pytest.fixture(scope="session")
def kube_api(local_stack: LocalStack) -> Iterator[k8s.ApiClient]:
    api = k8s_config.new_client_from_config(config_file=str(local_stack.kubeconfig))
    try:
        yield api
    finally:
        api.close()


@pytest.fixture
def namespace(kube_api: k8s.ApiClient) -> Iterator[str]:
    """A fresh namespace for one test, deleted afterwards."""
    name = f"t-{uuid.uuid4().hex[:10]}"
    core = k8s.CoreV1Api(kube_api)
    core.create_namespace(k8s.V1Namespace(metadata=k8s.V1ObjectMeta(name=name)))
    try:
        yield name
    finally:
        core.delete_namespace(name)


@pytest.fixture
def unique_name() -> Callable[[str], str]:
    """Names that no other test, or earlier run on a reused stack, has taken."""
    return lambda prefix: f"{prefix}-{uuid.uuid4().hex[:8]}"


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    logs = item.config.stash.get(_LOGS_KEY, None)
    if report.failed and logs is not None and item.get_closest_marker(INTEGRATION):
        report.sections.append(
            ("local stack", f"component logs (Kafka, etcd, Kubernetes, KWOK): {logs}")
        )
    return report
