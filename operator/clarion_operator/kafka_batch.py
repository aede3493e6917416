"""Concurrent Kafka admin calls coalesced into one request each, over one shared client.

The operator shares one aiokafka admin client per Kafka cluster, and a broker answers the
requests of one connection one at a time: 200 channels starting together queued 400
single-topic CreateTopics (and as many Metadata and DescribeConfigs) behind each other,
the last ones timed out, aiokafka closed the connection on the timeout and every request
in flight failed with it. Here the calls that arrive together (within
:data:`WINDOW_SECONDS`, or while the previous request of their kind is answered) go out as
one CreateTopics, DeleteTopics, Metadata or DescribeConfigs request, and each caller gets the
part of the answer naming its topics (``core/batches.py`` decides which calls go together
and splits the answer; every error in these answers is per topic, so one caller's
invalid topic is nobody else's error). A request that fails as a whole (the connection
lost, a timeout) fails every call in it, as it would have failed each of them alone.

At most one request of each kind is in flight per client: a second one would only wait
behind the first on the broker's side of the connection.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Final, Generic, Protocol, TypeVar

from aiokafka.admin import NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import KafkaConnectionError

from clarion_operator.core.batches import Call, distribute, take_batch
from clarion_operator.core.errors import NONE

P = TypeVar("P")
R = TypeVar("R")

#: How long the first call of a batch waits for others to join it. Calls arriving while a
#: request is in flight join the next one anyway; this only gathers a burst that begins
#: while the connection is idle.
WINDOW_SECONDS: Final = 0.01
#: Topics per CreateTopics (and DeleteTopics) request: the controller handles them in one
#: go, well within the request timeout.
CREATE_LIMIT: Final = 100
#: Topics per Metadata request, and topic resources per DescribeConfigs request.
DESCRIBE_LIMIT: Final = 200

#: One topic's configs as DescribeConfigs answers them: error code, error message, and
#: the entries ``(name, value, read_only, source, sensitive, ...)``.
ConfigsAnswer = tuple[int, str | None, Sequence[Sequence[Any]]]


class BatchedClient(Protocol):
    """The calls of ``AIOKafkaAdminClient`` that are coalesced."""

    async def create_topics(self, new_topics: list[NewTopic]) -> Any: ...

    async def delete_topics(self, topics: list[str]) -> Any: ...

    async def describe_topics(self, topics: list[str]) -> list[dict[str, Any]]: ...

    async def describe_configs(self, config_resources: list[ConfigResource]) -> list[Any]: ...


class Coalescer(Generic[P, R]):
    """Calls (name -> payload items) that arrive together, sent as one request by ``send``
    (the merged items -> an answer per name); each call gets its names' answers."""

    def __init__(
        self,
        send: Callable[[list[tuple[str, P]]], Awaitable[Mapping[str, R]]],
        *,
        missing: R,
        limit: int,
        distinct: bool = False,
        window: float = WINDOW_SECONDS,
    ) -> None:
        self._send = send
        self._missing = missing
        self._limit = limit
        self._distinct = distinct
        self._window = window
        self._queue: list[tuple[Call[P], asyncio.Future[dict[str, R]]]] = []
        self._runner: asyncio.Task[None] | None = None
        #: Requests sent so far (and calls answered): what the coalescing saved.
        self.requests = 0
        self.calls = 0

    async def __call__(self, items: Sequence[tuple[str, P]]) -> dict[str, R]:
        if not items:
            return {}
        loop = asyncio.get_running_loop()
        future: asyncio.Future[dict[str, R]] = loop.create_future()
        self._queue.append((Call(tuple(items)), future))
        self.calls += 1
        if self._runner is None:
            self._runner = loop.create_task(self._run())
        # A caller cancelled cancels only its own future: the request goes on for others.
        return await future

    async def _run(self) -> None:
        chosen: list[tuple[Call[P], asyncio.Future[dict[str, R]]]] = []
        try:
            await asyncio.sleep(self._window)
            while True:
                self._queue = [(c, f) for c, f in self._queue if not f.done()]
                if not self._queue:
                    return
                batch = take_batch(
                    [c for c, _ in self._queue], limit=self._limit, distinct=self._distinct
                )
                taken = set(batch.taken)
                chosen = [q for i, q in enumerate(self._queue) if i in taken]
                self._queue = [q for i, q in enumerate(self._queue) if i not in taken]
                self.requests += 1
                try:
                    answers = await self._send(list(batch.items))
                except Exception as exc:
                    for _, future in chosen:
                        if not future.done():
                            future.set_exception(exc)
                    continue
                for call, future in chosen:
                    if not future.done():
                        future.set_result(distribute(call, answers, self._missing))
                chosen = []
        finally:
            self._runner = None
            # Stopped (the client closing): nobody is left waiting for an answer.
            for _, future in [*chosen, *self._queue]:
                if not future.done():
                    future.set_exception(KafkaConnectionError("Kafka admin client closed"))
            self._queue = []

    async def close(self) -> None:
        runner = self._runner
        if runner is not None:
            runner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await runner


class AdminBatch:
    """CreateTopics, DeleteTopics, Metadata and DescribeConfigs of one admin client,
    coalesced."""

    def __init__(self, client: BatchedClient, *, window: float = WINDOW_SECONDS) -> None:
        self.client = client
        self.creates: Coalescer[NewTopic, int] = Coalescer(
            self._create, missing=NONE, limit=CREATE_LIMIT, distinct=True, window=window
        )
        self.deletes: Coalescer[None, int] = Coalescer(
            self._delete, missing=NONE, limit=CREATE_LIMIT, distinct=True, window=window
        )
        self.metadata: Coalescer[None, dict[str, Any] | None] = Coalescer(
            self._metadata, missing=None, limit=DESCRIBE_LIMIT, window=window
        )
        self.configs: Coalescer[None, ConfigsAnswer | None] = Coalescer(
            self._configs, missing=None, limit=DESCRIBE_LIMIT, window=window
        )

    async def create(self, topic: NewTopic) -> int:
        """Create one topic; its error code (a name the answer omits: 0, as aiokafka's)."""
        return (await self.creates([(topic.name, topic)]))[topic.name]

    async def delete(self, names: Sequence[str]) -> dict[str, int]:
        """Delete topics; each one's error code (a name the answer omits: 0)."""
        return await self.deletes([(name, None) for name in names])

    async def describe_topics(self, names: Sequence[str]) -> dict[str, dict[str, Any] | None]:
        """Each topic's metadata as ``describe_topics`` gives it (None: not answered)."""
        return await self.metadata([(name, None) for name in names])

    async def describe_configs(self, names: Sequence[str]) -> dict[str, ConfigsAnswer | None]:
        """Each topic's DescribeConfigs resource (None: not answered)."""
        return await self.configs([(name, None) for name in names])

    async def close(self) -> None:
        for coalescer in (self.creates, self.deletes, self.metadata, self.configs):
            await coalescer.close()

    async def _create(self, items: list[tuple[str, NewTopic]]) -> dict[str, int]:
        response = await self.client.create_topics([topic for _, topic in items])
        return {str(name): int(code) for name, code, *_ in response.topic_errors}

    async def _delete(self, items: list[tuple[str, None]]) -> dict[str, int]:
        response = await self.client.delete_topics([name for name, _ in items])
        return {str(name): int(code) for name, code in response.topic_error_codes}

    async def _metadata(self, items: list[tuple[str, None]]) -> dict[str, dict[str, Any]]:
        described = await self.client.describe_topics([name for name, _ in items])
        return {str(topic.get("topic")): topic for topic in described}

    async def _configs(self, items: list[tuple[str, None]]) -> dict[str, ConfigsAnswer]:
        responses = await self.client.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, name) for name, _ in items]
        )
        answers: dict[str, ConfigsAnswer] = {}
        for response in responses:
            for code, message, _type, name, entries in response.resources:
                answers[str(name)] = (int(code), message, entries)
        return answers
