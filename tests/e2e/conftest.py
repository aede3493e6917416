"""The end-to-end arrangement, once per module: operator, UnionFlow channel, three worker
processes configured from the rendered ConfigMap, HAProxy in front (clarion_devstack.e2e)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

import pytest

from clarion_devstack.e2e import clients, pods
from clarion_devstack.e2e.clients import Viewer
from clarion_devstack.e2e.cluster import Deployment
from clarion_devstack.e2e.events import UnionFlowProducer
from clarion_devstack.e2e.pods import PodChannel
from clarion_devstack.pytest_plugin import LocalStack
from clarion_devstack.stack import StackEnv


@pytest.fixture(scope="module")
def deployment(
    local_stack: LocalStack, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Deployment]:
    workdir = tmp_path_factory.mktemp("e2e")
    dep = Deployment(
        local_stack.env,
        workdir,
        namespace=f"e2e-{uuid.uuid4().hex[:8]}",
        replicas=3,
        drain_window_seconds=2,
        quiet=True,
    )
    with dep:
        yield dep


@pytest.fixture
def healthy(deployment: Deployment) -> Deployment:
    """The deployment with every replica up (a previous test may have failed midway)."""
    deployment.ensure_all_up()
    return deployment


@pytest.fixture(scope="module")
def real_node(local_stack: LocalStack) -> StackEnv:
    """The stack's environment, if it has a real node; the module is skipped if not."""
    reason = pods.unavailable_reason(local_stack.env)
    if reason is not None:
        pytest.skip(f"no real node in this stack: {reason}")
    return local_stack.env


Channel = TypeVar("Channel", bound=PodChannel)


@pytest.fixture(scope="module")
def make_pod_channel(
    real_node: StackEnv, tmp_path_factory: pytest.TempPathFactory
) -> Callable[..., PodChannel]:
    """``make_pod_channel(cls, prefix, **options)``: a channel of worker pods on the real
    node (``cls``: :class:`PodChannel` or a subclass), in a namespace of its own
    (``<prefix>-<8 hex>``) with a working folder of its own; the caller brings it up."""

    def make(cls: type[Channel], prefix: str, **options: Any) -> Channel:
        workdir = tmp_path_factory.mktemp(prefix)
        return cls(real_node, workdir, namespace=f"{prefix}-{uuid.uuid4().hex[:8]}", **options)

    return make


@pytest.fixture
async def producer(local_stack: LocalStack) -> AsyncIterator[UnionFlowProducer]:
    p = UnionFlowProducer(local_stack.kafka_bootstrap)
    yield p
    p.flush(30)


@pytest.fixture
def exact_and_isolated(
    producer: UnionFlowProducer,
) -> Callable[[Sequence[Viewer], str, str], Awaitable[None]]:
    """``await exact_and_isolated(viewers, tag, title)`` once the traffic is sent: every
    viewer got exactly its events (the settled report, its totals printed under ``tag`` and
    ``title``) and, read from the events themselves, none of an organization it is not in
    nor of another user."""

    async def check(viewers: Sequence[Viewer], tag: str, title: str) -> None:
        totals, problems = await clients.settled_report(producer, viewers)
        clients.print_totals(tag, title, totals)
        assert not problems, problems
        for v in viewers:
            orgs = set(v.person.organizations)
            assert {e["organizationId"] for e in v.events if e["organizationId"]} <= orgs
            assert {e.get("userId") for e in v.events} <= {None, v.person.user}

    return check


@pytest.fixture
def artifacts(local_stack: LocalStack) -> Path:
    path = Path(local_stack.env["logs_dir"]) / "e2e"
    path.mkdir(parents=True, exist_ok=True)
    return path
