"""Topic ids and partition counts, from Kafka's Metadata API version 12.

aiokafka speaks Metadata up to version 5, which predates topic ids (KIP-516). The
worker needs the id: it is the topic's incarnation in every resume cursor, so a
cursor minted before a topic was deleted and recreated is answered with ``reset``
instead of with another topic's events at the same offsets. Version 12 is served
by every broker since Kafka 3.1, so this module declares that one request with
aiokafka's own protocol types and sends it through the consumer's client.
"""

from __future__ import annotations

from dataclasses import dataclass
from io import BytesIO
from typing import Any, ClassVar

from aiokafka.protocol.api import Request, RequestStruct, Response
from aiokafka.protocol.types import (
    AbstractType,
    Boolean,
    CompactArray,
    CompactString,
    Int16,
    Int32,
    Schema,
    TaggedFields,
)

_NO_ID = bytes(16)


class _Uuid(AbstractType[bytes]):
    @classmethod
    def encode(cls, value: bytes) -> bytes:
        return value

    @classmethod
    def decode(cls, data: BytesIO) -> bytes:
        value = data.read(16)
        if len(value) != 16:
            raise ValueError("Buffer underrun decoding UUID")
        return value


class MetadataResponseV12(Response):
    API_KEY: ClassVar[int] = 3
    API_VERSION: ClassVar[int] = 12
    SCHEMA = Schema(
        ("throttle_time_ms", Int32),
        (
            "brokers",
            CompactArray(
                ("node_id", Int32),
                ("host", CompactString("utf-8")),
                ("port", Int32),
                ("rack", CompactString("utf-8")),
                ("tags", TaggedFields),
            ),
        ),
        ("cluster_id", CompactString("utf-8")),
        ("controller_id", Int32),
        (
            "topics",
            CompactArray(
                ("error_code", Int16),
                ("name", CompactString("utf-8")),
                ("topic_id", _Uuid),
                ("is_internal", Boolean),
                (
                    "partitions",
                    CompactArray(
                        ("error_code", Int16),
                        ("partition_index", Int32),
                        ("leader_id", Int32),
                        ("leader_epoch", Int32),
                        ("replica_nodes", CompactArray(Int32)),
                        ("isr_nodes", CompactArray(Int32)),
                        ("offline_replicas", CompactArray(Int32)),
                        ("tags", TaggedFields),
                    ),
                ),
                ("topic_authorized_operations", Int32),
                ("tags", TaggedFields),
            ),
        ),
        ("tags", TaggedFields),
    )


class MetadataRequestV12(RequestStruct):
    FLEXIBLE_VERSION = True
    API_KEY = 3
    API_VERSION = 12
    RESPONSE_TYPE = MetadataResponseV12
    SCHEMA = Schema(
        (
            "topics",
            CompactArray(
                ("topic_id", _Uuid), ("name", CompactString("utf-8")), ("tags", TaggedFields)
            ),
        ),
        ("allow_auto_topic_creation", Boolean),
        ("include_topic_authorized_operations", Boolean),
        ("tags", TaggedFields),
    )


class TopicIdsRequest(Request[MetadataRequestV12]):
    """aiokafka sends ``Request`` objects that pick a struct by negotiated version."""

    API_KEY = 3

    def __init__(self, topics: list[str]) -> None:
        self._topics = topics

    def build(self, request_struct_class: type[MetadataRequestV12]) -> MetadataRequestV12:
        return request_struct_class(
            topics=[(_NO_ID, name, {}) for name in self._topics],
            allow_auto_topic_creation=False,
            include_topic_authorized_operations=False,
            tags={},
        )


@dataclass(frozen=True, slots=True)
class TopicMetadata:
    name: str
    topic_id: bytes
    partitions: int
    #: Kafka error code for the topic (0 when fine, 3 when it does not exist).
    error_code: int


async def describe_topics(client: Any, topics: list[str]) -> dict[str, TopicMetadata]:
    """Ask one broker, through an aiokafka client, for each topic's id and partition count."""
    request = TopicIdsRequest(topics)
    node_id = client.get_random_node()
    response = await client.send(node_id, request)
    found: dict[str, TopicMetadata] = {}
    for error_code, name, topic_id, _internal, partitions, _ops, _tags in response.topics:
        found[name] = TopicMetadata(name, topic_id, len(partitions), error_code)
    return found
