"""Fixtures for the worker's integration tests: real topics on the real broker, real
worker processes, tokens signed three ways, real clients (``clarion_devstack.harness``)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer

from clarion_client.client import ClarionClient
from clarion_devstack import harness
from clarion_devstack.harness import (
    ChannelTopics,
    Collector,
    Keys,
    Producer,
    WorkerProcess,
    start_worker_process,
)
from clarion_devstack.pytest_plugin import LocalStack


@pytest.fixture
async def topics(kafka_bootstrap: str, unique_name: Callable[[str], str]) -> ChannelTopics:
    return await harness.create_topics(kafka_bootstrap, ChannelTopics.named(unique_name("ch")))


@pytest.fixture
def keys(tmp_path: Path) -> Keys:
    return Keys(tmp_path)


@pytest.fixture
def write_path(request: pytest.FixtureRequest) -> str:
    """How workers write to WebSocket clients: "direct" (the write pass, the default) or
    "asgi" (one ASGI send per frame, ``server.directWrites: false``). Tests parametrize
    it indirectly to prove both paths."""
    return str(getattr(request, "param", "direct"))


@pytest.fixture
def start_worker(
    local_stack: LocalStack, topics: ChannelTopics, keys: Keys, tmp_path: Path, write_path: str
) -> Iterator[Callable[..., WorkerProcess]]:
    """Start real worker processes on the test's channel; all are stopped afterwards."""
    started: list[WorkerProcess] = []

    def start(name: str = "w1", **options: Any) -> WorkerProcess:
        server = {"directWrites": write_path == "direct", **options.pop("server", {})}
        worker = start_worker_process(
            server=server,
            name=name,
            kafka_bootstrap=local_stack.kafka_bootstrap,
            topics=topics,
            keys=keys,
            directory=tmp_path,
            **options,
        )
        started.append(worker)
        return worker

    yield start
    for worker in started:
        worker.stop()


@pytest.fixture
async def producer(kafka_bootstrap: str) -> AsyncIterator[Producer]:
    kafka = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, linger_ms=0)
    await kafka.start()
    try:
        yield Producer(kafka)
    finally:
        await kafka.stop()


@pytest.fixture
async def collect() -> AsyncIterator[Callable[..., Collector]]:
    """Start collectors (``collect(url, token, **client_options)``); all stop afterwards."""
    collectors: list[Collector] = []

    def start(url: str, token: str | None = None, **options: Any) -> Collector:
        options.setdefault("backoff_base", 0.05)
        options.setdefault("backoff_cap", 0.5)
        collector = Collector(ClarionClient(url, token, **options))
        collectors.append(collector)
        return collector

    yield start
    for collector in collectors:
        await collector.stop()
