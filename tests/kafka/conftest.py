"""A three-node Kafka cluster with TLS and SCRAM, for the tests of this folder only.

Session-scoped and separate from ``local_stack`` so that the default stack stays one
fast broker; started on free 127.0.0.1 ports and stopped by PID afterwards.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from clarion_devstack import install, kafka_cluster
from clarion_devstack.settings import DevstackSettings


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
