"""The aiokafka adapter's describe: a broker that just died is drawn at random by aiokafka
for a request; the adapter asks another instead of failing the reconcile."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
from aiokafka.errors import KafkaConnectionError, NodeNotReadyError

from clarion_operator.core.topics import PartitionState, TopicHealth
from clarion_operator.kafka_admin import AiokafkaAdmin

ENTRY_DYNAMIC, ENTRY_DEFAULT = 1, 5


class FlakyClient:
    """describe_topics/describe_configs answered like aiokafka, after ``fail`` refusals."""

    def __init__(self, fail: int) -> None:
        self.fail = fail
        self.calls = 0

    def _maybe_fail(self) -> None:
        self.calls += 1
        if self.fail:
            self.fail -= 1
            raise NodeNotReadyError("Attempt to send a request to node which is not ready (2)")

    async def describe_topics(self, names: list[str]) -> list[dict[str, Any]]:
        self._maybe_fail()
        parts = [
            {"error_code": 0, "partition": 0, "leader": 1, "replicas": [1, 2, 3], "isr": [1, 3]},
            {"error_code": 5, "partition": 1, "leader": -1, "replicas": [2], "isr": []},
        ]
        return [{"error_code": 0, "topic": n, "partitions": parts} for n in names]

    async def describe_configs(self, resources: list[Any]) -> list[Any]:
        self._maybe_fail()
        entries = [
            ("retention.ms", "1000", False, ENTRY_DYNAMIC, False),
            ("min.insync.replicas", "2", False, ENTRY_DEFAULT, False),
        ]
        return [SimpleNamespace(resources=[(0, None, 2, r.name, entries) for r in resources])]


async def test_describe_asks_another_broker_and_reads_leaders_and_isr() -> None:
    client = FlakyClient(fail=4)
    observed = await AiokafkaAdmin(client).describe(["orders"])
    topic = observed["orders"]
    assert topic is not None
    assert (topic.partitions, topic.replication_factor) == (2, 3)
    assert topic.dynamic_configs == {"retention.ms": "1000"}
    assert topic.health == TopicHealth(
        "orders",
        (PartitionState(0, 1, (1, 2, 3), (1, 3)), PartitionState(1, -1, (2,), ())),
        2,
    )
    assert client.calls == 6


async def test_describe_gives_up_after_six_draws() -> None:
    client = FlakyClient(fail=6)
    with pytest.raises(NodeNotReadyError):
        await AiokafkaAdmin(client).describe(["orders"])
    assert client.calls == 6


async def test_a_connection_lost_mid_request_is_asked_again() -> None:
    client = FlakyClient(fail=0)
    answer = client.describe_topics
    failed: list[bool] = []

    async def once_broken(names: list[str]) -> list[dict[str, Any]]:
        if not failed:
            failed.append(True)
            raise KafkaConnectionError("Connection at 127.0.0.1:9092 closed")
        return await answer(names)

    client.describe_topics = once_broken  # type: ignore[method-assign]
    observed = await AiokafkaAdmin(client).describe(["orders"])
    assert observed["orders"] is not None
