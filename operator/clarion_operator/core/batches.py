"""Coalescing concurrent Kafka admin calls into one request each: which calls go into the
next request, and which part of its answer goes back to each call.

A Kafka broker handles the requests of one connection one at a time (it stops reading the
connection until the response is sent), and the operator shares one admin connection per
Kafka cluster. 200 channels starting at once sent 400 single-topic CreateTopics and as
many Metadata and DescribeConfigs requests down that one connection, one after the other;
the last waited longer than the request timeout, aiokafka closed the connection and every
request in flight failed. One request for the calls that arrive together carries the same
work in a few round trips (``kafka_batch.py`` drives it; this module decides).

Every answer these requests get is per topic (an error code per topic or resource), so a
call's result is the part of the merged answer that names its topics. A call stays whole
in one request. CreateTopics refuses a request naming a topic twice (``INVALID_REQUEST``
for both), so ``distinct`` requests never merge two calls naming the same topic: the
later one waits for the next request (and meets ``TOPIC_ALREADY_EXISTS`` there, as it
would alone); describes of the same topic merge into one item.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

P = TypeVar("P")
R = TypeVar("R")


@dataclass(frozen=True)
class Call(Generic[P]):
    """One caller's items: topic (or resource) name -> what the request says of it."""

    items: tuple[tuple[str, P], ...]

    @property
    def names(self) -> frozenset[str]:
        return frozenset(name for name, _ in self.items)


@dataclass(frozen=True)
class Batch(Generic[P]):
    """The next request: the positions (in the queue) of the calls it answers, and its
    items, each name once, in the order the calls named them."""

    taken: tuple[int, ...]
    items: tuple[tuple[str, P], ...]


def take_batch(queue: Sequence[Call[P]], *, limit: int, distinct: bool) -> Batch[P]:
    """The calls of ``queue`` (oldest first) that go into one request of at most ``limit``
    items; a call larger than ``limit`` goes alone. ``distinct``: no two calls naming the
    same topic (CreateTopics). The calls left wait for the next request, in their order."""
    taken: list[int] = []
    items: dict[str, P] = {}
    for index, call in enumerate(queue):
        names = call.names
        if distinct and names & items.keys():
            continue
        if taken and len(items.keys() | names) > limit:
            continue
        taken.append(index)
        for name, payload in call.items:
            items.setdefault(name, payload)
    return Batch(tuple(taken), tuple(items.items()))


def distribute(call: Call[P], answers: Mapping[str, R], missing: R) -> dict[str, R]:
    """The part of a merged answer that belongs to ``call``: each of its names' answer,
    ``missing`` for a name the answer does not mention."""
    return {name: answers.get(name, missing) for name, _ in call.items}
