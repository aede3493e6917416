"""``AiokafkaFactory``: one use of the shared admin client is bounded in time.

A reconcile's Kafka steps run under its channel's lock; a call that never returns would
hold the lock, and a delete behind it, for good. The use fails as a ``TimeoutError``
(classified unreachable, so retried) and the client is dropped.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from clarion_operator.core.errors import classify_kafka_exception
from clarion_operator.core.reasons import Reason
from clarion_operator.kafka_admin import AiokafkaFactory
from clarion_operator.ports import KafkaConnection

CONNECTION = KafkaConnection(bootstrap_servers="127.0.0.1:9", client_id="test")


class _NeverAnswers:
    """An admin client whose describe never returns (what a hung call looks like)."""

    def __init__(self) -> None:
        self.closed = False

    async def describe_topics(self, topics: list[str]) -> list[dict[str, Any]]:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    async def close(self) -> None:
        self.closed = True


def test_a_use_may_take_the_describes_attempts_and_a_bootstrap_probe() -> None:
    # 6 attempts of a describe, 2 more requests, 5 s to ask why a bootstrap refused.
    assert AiokafkaFactory(3000)._use_seconds == pytest.approx(29.0)
    assert AiokafkaFactory(10_000)._use_seconds == pytest.approx(85.0)


async def test_a_call_that_never_returns_ends_the_use_as_unreachable_and_drops_the_client(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    factory = AiokafkaFactory(3000, use_seconds=0.3)
    client = _NeverAnswers()
    factory._clients[CONNECTION] = client  # type: ignore[assignment]
    started = time.monotonic()
    with pytest.raises(TimeoutError) as ended:
        async with factory(CONNECTION) as admin:
            await admin.describe(["t"])
    assert time.monotonic() - started < 5
    assert client.closed
    assert CONNECTION not in factory._clients
    names = [c.__name__ for c in type(ended.value).__mro__]
    assert classify_kafka_exception(names).reason is Reason.KAFKA_UNREACHABLE
