"""The Kafka port implemented with aiokafka's ``AIOKafkaAdminClient``.

Facts proven against Kafka 4.1.1 (``tests/devstack/test_stack_integration.py`` and
``tests/operator/test_operator_integration.py``):

* ``create_topics`` reports per-topic errors as codes (36: already exists), not raises;
* ``NewTopic`` refuses ``replication_factor=-1`` in its constructor, but the broker
  accepts -1 ("use default.replication.factor", KIP-464) when the attribute is set after
  construction; if a broker ever refuses it, the broker's ``default.replication.factor``
  is read through ``describe_configs`` and sent instead;
* ``describe_configs`` entries are ``(name, value, read_only, source, sensitive, ...)``
  and only source 1 (DYNAMIC_TOPIC_CONFIG) is an override of the topic;
* ``alter_configs`` replaces the whole override set (the core always sends all of it);
* ``describe_topics`` is the metadata request: per partition its ``leader`` (-1: none),
  ``replicas`` and ``isr``, which ``core/health.py`` turns into ``TopicsHealthy``;
* ``create_partitions`` raises on a per-topic error instead of returning it: its
  ``errno`` is turned back into a code here so the core classifies it like the others.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any, Final, TypeVar

from aiokafka.admin import AIOKafkaAdminClient, NewPartitions, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.conn import create_conn
from aiokafka.errors import (
    AuthenticationFailedError,
    KafkaConnectionError,
    NodeNotReadyError,
    SaslAuthenticationFailed,
    UnsupportedSaslMechanismError,
)

from clarion_operator.core.errors import (
    INVALID_REPLICATION_FACTOR,
    INVALID_REQUEST,
    NONE,
    UNKNOWN_TOPIC_OR_PARTITION,
    create_refusal,
)
from clarion_operator.core.health import min_insync_replicas
from clarion_operator.core.topics import (
    AlterConfigs,
    CreateTopic,
    GrowPartitions,
    ObservedTopic,
    PartitionState,
    TopicHealth,
)
from clarion_operator.kafka_batch import AdminBatch
from clarion_operator.ports import KafkaAdmin, KafkaCodeError, KafkaConnection

log = logging.getLogger(__name__)

DYNAMIC_TOPIC_CONFIG: Final = 1
DEFAULT_REPLICATION_FACTOR: Final = "default.replication.factor"


def ssl_context(conn: KafkaConnection) -> ssl.SSLContext | None:
    """A TLS context from PEM text read out of the channel's Secret (never from files)."""
    if not conn.security_protocol.endswith("SSL"):
        return None
    context = ssl.create_default_context(cadata=conn.ca_pem) if conn.ca_pem else None
    context = context or ssl.create_default_context()
    if conn.cert_pem and conn.key_pem:
        # load_cert_chain only reads files; a private temporary directory keeps the key
        # on disk for the duration of the call only.
        with tempfile.TemporaryDirectory() as tmp:
            cert, key = Path(tmp) / "tls.crt", Path(tmp) / "tls.key"
            cert.write_text(conn.cert_pem)
            key.write_text(conn.key_pem)
            key.chmod(0o600)
            context.load_cert_chain(str(cert), str(key))
    return context


#: Attempts of one describe request: aiokafka sends it to a broker drawn at random from
#: the metadata, which names a broker that just died until Kafka fences it (9 s by
#: default). One broker lost of three failed a third of them, and a drift check that met
#: it made a replicated channel's Ready flap to KafkaUnreachable; six draws all landing on
#: it is one in 729.
_NODE_ATTEMPTS = 6
_T = TypeVar("_T")


async def _any_node(call: Callable[[], Awaitable[_T]]) -> _T:
    """``call`` again (another random broker) when the broker it drew cannot be reached."""
    for _ in range(_NODE_ATTEMPTS - 1):
        try:
            return await call()
        except (NodeNotReadyError, KafkaConnectionError) as exc:
            log.debug("Kafka broker not reachable, asking another: %s", exc)
    return await call()


class AiokafkaAdmin:
    """:class:`~clarion_operator.ports.KafkaAdmin` over one started admin client.

    Creates and describes go through ``batch`` (``kafka_batch.py``: the calls of every
    channel sharing the client, coalesced into one request each); without one, a batch
    of this admin's own.
    """

    def __init__(self, client: AIOKafkaAdminClient, batch: AdminBatch | None = None) -> None:
        self._client = client
        self._batch = batch if batch is not None else AdminBatch(client)

    async def describe(self, names: Sequence[str]) -> dict[str, ObservedTopic | None]:
        if not names:
            return {}
        described = await _any_node(lambda: self._batch.describe_topics(names))
        observed: dict[str, ObservedTopic | None] = dict.fromkeys(names)
        present: dict[str, tuple[int, int]] = {}
        states: dict[str, tuple[PartitionState, ...]] = {}
        for name, parts in _partition_states(described).items():
            replicas = len(parts[0].replicas) if parts else 0
            present[name] = (len(parts), replicas)
            states[name] = parts
        if not present:
            return observed
        answers = await _any_node(lambda: self._batch.describe_configs(list(present)))
        dynamic: dict[str, dict[str, str]] = {name: {} for name in present}
        effective: dict[str, dict[str, str | None]] = {name: {} for name in present}
        for name, answer in answers.items():
            if answer is None:
                continue
            code, message, entries = answer
            if code != NONE:
                raise KafkaCodeError(int(code), f"describing configs of {name}: {message}")
            for entry in entries:
                key, value, source = entry[0], entry[1], entry[3]
                effective[name][str(key)] = None if value is None else str(value)
                if source == DYNAMIC_TOPIC_CONFIG and value is not None:
                    dynamic[name][str(key)] = str(value)
        for name, (count, rf) in present.items():
            health = TopicHealth(name, states[name], min_insync_replicas(effective[name]))
            observed[name] = ObservedTopic(count, rf, dynamic[name], health)
        return observed

    async def partitions(
        self, names: Sequence[str]
    ) -> dict[str, tuple[PartitionState, ...] | None]:
        if not names:
            return {}
        described = await _any_node(lambda: self._batch.describe_topics(names))
        found: dict[str, tuple[PartitionState, ...] | None] = dict.fromkeys(names)
        found.update(_partition_states(described))
        return found

    async def create(self, action: CreateTopic) -> int:
        requested = action.replication_factor or -1
        code = await self._create(action, requested)
        if code not in (INVALID_REPLICATION_FACTOR, INVALID_REQUEST):
            return code
        brokers = await self._registered_brokers()
        if action.replication_factor is None and brokers:
            # A broker that refuses -1: send its own default explicitly.
            requested = await self._default_replication_factor(brokers[0])
            code = await self._create(action, requested)
            if code == INVALID_REPLICATION_FACTOR:
                brokers = await self._registered_brokers()
        return create_refusal(code, requested, len(brokers))

    async def _registered_brokers(self) -> list[str]:
        """The ids of the brokers the cluster has registered. A broker going away fails
        this like any request (Kafka unreachable, retried within seconds)."""
        cluster = await self._client.describe_cluster()
        return [str(broker["node_id"]) for broker in cluster.get("brokers") or ()]

    async def _create(self, action: CreateTopic, replication_factor: int) -> int:
        topic = NewTopic(
            action.name,
            action.partitions,
            max(replication_factor, 1),
            topic_configs=dict(action.configs),
        )
        # Set after construction: NewTopic's constructor rejects -1 (see module doc).
        topic.replication_factor = replication_factor
        return await self._batch.create(topic)

    async def _default_replication_factor(self, broker: str) -> int:
        [response] = await self._client.describe_configs(
            [ConfigResource(ConfigResourceType.BROKER, broker, {DEFAULT_REPLICATION_FACTOR: None})]
        )
        for entry in response.resources[0][4]:
            if entry[0] == DEFAULT_REPLICATION_FACTOR and entry[1] is not None:
                return int(entry[1])
        return 1

    async def grow(self, action: GrowPartitions) -> int:
        try:
            await self._client.create_partitions({action.name: NewPartitions(action.total)})
        except Exception as exc:
            # aiokafka raises per-topic errors here; give the code back like the others.
            errno = getattr(exc, "errno", None)
            if isinstance(errno, int) and errno > 0:
                return errno
            raise
        return NONE

    async def alter(self, action: AlterConfigs) -> int:
        responses = await self._client.alter_configs(
            [ConfigResource(ConfigResourceType.TOPIC, action.name, configs=dict(action.configs))]
        )
        for response in responses:
            for code, *_ in response.resources:
                if code != NONE:
                    return int(code)
        return NONE

    async def delete(self, names: Sequence[str]) -> dict[str, int]:
        if not names:
            return {}
        return await self._batch.delete(names)


def _partition_states(
    described: Mapping[str, Mapping[str, Any] | None],
) -> dict[str, tuple[PartitionState, ...]]:
    """The partitions of every topic a Metadata answer has (absent ones left out)."""
    states: dict[str, tuple[PartitionState, ...]] = {}
    for topic in described.values():
        if topic is None:
            continue  # not in Kafka's answer: as if absent (aiokafka's own reading)
        code = int(topic.get("error_code", 0))
        if code == UNKNOWN_TOPIC_OR_PARTITION:
            continue
        if code != NONE:
            raise KafkaCodeError(code, f"describing topic {topic.get('topic')}")
        # A partition without a leader is answered with leader -1 (and the error
        # LEADER_NOT_AVAILABLE on the partition, not the topic).
        states[str(topic["topic"])] = tuple(
            PartitionState(
                int(p.get("partition", i)),
                int(p.get("leader", -1)),
                tuple(int(b) for b in p.get("replicas") or ()),
                tuple(int(b) for b in p.get("isr") or ()),
            )
            for i, p in enumerate(topic.get("partitions") or [])
        )
    return states


#: How long asking the bootstrap servers why they refused may take, all of them.
_PROBE_SECONDS = 5.0
#: What a broker answers to credentials or a certificate it refuses (not "unreachable").
_REFUSALS = (
    SaslAuthenticationFailed,
    AuthenticationFailedError,
    UnsupportedSaslMechanismError,
    ssl.SSLError,
)


class AiokafkaFactory:
    """:class:`~clarion_operator.ports.KafkaAdminFactory`: one started admin client per
    Kafka connection (bootstrap servers, security, credentials), shared by every reconcile.

    A new client per reconcile cost a bootstrap (TCP, metadata, API versions) each time:
    with 200 channels starting at once, most of the operator's Kafka work. The shared
    client is dropped (and closed) when a use fails with anything but a per-topic error
    code, so a broker restarted on another address or a half-dead connection never sticks;
    the next use connects afresh. Concurrent uses of one client are fine: aiokafka matches
    answers to requests by correlation id, and the creates and describes of every reconcile
    using the client go through one :class:`~clarion_operator.kafka_batch.AdminBatch`, so
    the calls that arrive together are one request each (a broker answers the requests of
    one connection one at a time: 400 single-topic CreateTopics queued behind each other
    until the last timed out).
    """

    def __init__(self, request_timeout_ms: int, *, use_seconds: float | None = None) -> None:
        self._timeout_ms = request_timeout_ms
        #: How long one use (a reconcile's Kafka steps, under its channel's lock) may take:
        #: a describe's attempts and the actions after it, each bounded by the request
        #: timeout, and a bootstrap's probe. Past it the use fails as unreachable (a
        #: TimeoutError) and is retried, instead of holding the channel's lock, and with it
        #: a delete, for as long as a call that never returns (seen once in a fresh-clone
        #: run, Kafka stopped: a drift check that never ended and a delete that never got
        #: to say DeletionBlocked).
        self._use_seconds = (
            use_seconds
            if use_seconds is not None
            else (_NODE_ATTEMPTS + 2) * request_timeout_ms / 1000 + _PROBE_SECONDS
        )
        self._clients: dict[KafkaConnection, AIOKafkaAdminClient] = {}
        self._batches: dict[KafkaConnection, AdminBatch] = {}
        self._starting: dict[KafkaConnection, asyncio.Lock] = {}

    def __call__(self, connection: KafkaConnection) -> AbstractAsyncContextManager[KafkaAdmin]:
        return self._use(connection)

    @asynccontextmanager
    async def _use(self, conn: KafkaConnection) -> AsyncIterator[KafkaAdmin]:
        async with asyncio.timeout(self._use_seconds):
            client = await self._client(conn)
            batch = self._batches.get(conn)
            if batch is None or batch.client is not client:
                batch = self._batches[conn] = AdminBatch(client)
            try:
                yield AiokafkaAdmin(client, batch)
            except KafkaCodeError:
                raise  # Kafka answered: the connection is fine
            except BaseException:
                await self._drop(conn, client)
                raise

    async def _client(self, conn: KafkaConnection) -> AIOKafkaAdminClient:
        client = self._clients.get(conn)
        if client is not None:
            return client
        async with self._starting.setdefault(conn, asyncio.Lock()):
            started = self._clients.get(conn)
            if started is not None:
                return started
            fresh = self._new_client(conn)
            try:
                await fresh.start()
            except KafkaConnectionError as exc:
                await fresh.close()
                # aiokafka's bootstrap says only "Unable to bootstrap": a wrong password
                # or an untrusted CA would read as an unreachable Kafka. Ask one broker why.
                refused = await self._refusal(conn)
                if refused is not None:
                    raise refused from exc
                raise
            except BaseException:
                await fresh.close()
                raise
            self._clients[conn] = fresh
            return fresh

    async def _drop(self, conn: KafkaConnection, client: AIOKafkaAdminClient) -> None:
        current = self._clients.get(conn)
        if current is None or current is not client:
            return  # already dropped (and closed) by a concurrent use
        del self._clients[conn]
        batch = self._batches.pop(conn, None)
        if batch is not None:
            await batch.close()
        await current.close()

    async def close(self) -> None:
        """Close every shared client (the operator is stopping)."""
        clients, self._clients = list(self._clients.values()), {}
        batches, self._batches = list(self._batches.values()), {}
        for batch in batches:
            await batch.close()
        for client in clients:
            await client.close()

    async def _refusal(self, conn: KafkaConnection) -> Exception | None:
        """The authentication or TLS error a bootstrap server answers with, if any."""
        try:
            # Bounded: a frozen broker must not double the time to report it unreachable.
            async with asyncio.timeout(_PROBE_SECONDS):
                for server in conn.bootstrap_servers.split(","):
                    host, _, port = server.strip().rpartition(":")
                    try:
                        probe = await create_conn(
                            host,
                            int(port),
                            client_id=conn.client_id,
                            request_timeout_ms=self._timeout_ms,
                            ssl_context=ssl_context(conn),
                            security_protocol=conn.security_protocol,
                            sasl_mechanism=conn.sasl_mechanism,
                            sasl_plain_username=conn.username,
                            sasl_plain_password=conn.password,
                        )
                    except _REFUSALS as refused:
                        return refused
                    except (TimeoutError, OSError, ValueError, KafkaConnectionError):
                        continue  # this one is unreachable: try the next
                    probe.close()
        except TimeoutError:
            pass
        return None

    def _new_client(self, conn: KafkaConnection) -> AIOKafkaAdminClient:
        kwargs: dict[str, Any] = {
            "bootstrap_servers": conn.bootstrap_servers,
            "client_id": conn.client_id,
            "request_timeout_ms": self._timeout_ms,
            "security_protocol": conn.security_protocol,
            "ssl_context": ssl_context(conn),
        }
        if conn.sasl_mechanism is not None:
            kwargs["sasl_mechanism"] = conn.sasl_mechanism
            kwargs["sasl_plain_username"] = conn.username
            kwargs["sasl_plain_password"] = conn.password
        return AIOKafkaAdminClient(**kwargs)
