"""A three-node Kafka cluster with TLS and SCRAM, for the tests of this folder only.

Session-scoped and separate from ``local_stack`` so that the default stack stays one
fast broker; started on free 127.0.0.1 ports and stopped by PID afterwards. Also the
producers the tests write to it with.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer

from clarion_devstack import install, kafka_cluster
from clarion_devstack.harness import Producer
from clarion_devstack.settings import DevstackSettings

#: ``await kafka_producer(**options)``: a started producer on the cluster.
StartProducer = Callable[..., Awaitable[Producer]]


@pytest.fixture(scope="session")
def kafka_cluster_3(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[kafka_cluster.KafkaCluster]:
    settings = DevstackSettings.from_environ(os.environ)  # noqa: TID251 - test-process edge
    libs = install.ensure_kafka(settings)
    directory: Path = tmp_path_factory.mktemp("kafka-cluster")
    cluster = kafka_cluster.prepare(settings.java, libs, directory)
    try:
        cluster.start_all()
        yield cluster
    finally:
        cluster.close()


@pytest.fixture
async def kafka_producer(
    kafka_cluster_3: kafka_cluster.KafkaCluster,
) -> AsyncIterator[StartProducer]:
    """Starts producers on the cluster (every write acknowledged by all in-sync replicas,
    sent at once), with ``options`` of aiokafka's on top; each is stopped afterwards."""
    started: list[AIOKafkaProducer] = []

    async def start(**options: Any) -> Producer:
        kafka = AIOKafkaProducer(
            bootstrap_servers=kafka_cluster_3.bootstrap,
            acks="all",
            linger_ms=0,
            request_timeout_ms=30000,
            **options,
        )
        await kafka.start()
        started.append(kafka)
        return Producer(kafka)

    yield start
    for kafka in started:
        await kafka.stop()
