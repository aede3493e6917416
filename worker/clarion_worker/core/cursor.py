"""The resume cursor: an opaque, URL-safe encoding of a channel position.

A position says, for every partition of every topic of the channel, the next offset not
yet dispatched. Every replica reads every partition in order, so a client holding the id
of event E has received every event meant for it below ``position[p]`` for every p, and
can resume on any replica by replaying each partition from there. The same id is the
``id`` of event envelopes, ``resume.lastId`` and SSE's ``Last-Event-ID``.

Binary layout (then base64url without padding)::

    version=1 | varint event timestamp (s) | varint topic count |
    per topic: name tag (4 B) | incarnation tag (4 B) | varint partition count | varint offsets

Tags are BLAKE2b-32 digests: the name tag finds the topic without spelling its name, the
incarnation tag (from the Kafka topic id, or any opaque bytes the edge gives) detects a
recreated topic. A 1-in-4-billion tag collision on recreation is accepted.

Cost: ``advance`` re-encodes one partition's varint and one topic's segment; the id is one
join and one base64 of the (short) whole. Measured on the dev box (3 topics x 6 partitions,
offsets ~1e9): about 6 us per ``advance`` (``timeit``), paid once per event, never per
recipient; not asserted in tests because timing tests are flaky.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final

CURSOR_VERSION: Final = 1
TAG_BYTES: Final = 4
MAX_CURSOR_CHARS: Final = 8192
MAX_PARTITIONS: Final = 100_000
MAX_OFFSET: Final = (1 << 63) - 1
_VERSION_BYTE: Final = bytes([CURSOR_VERSION])
_URLSAFE: Final = bytes.maketrans(b"+/", b"-_")
_BASE64URL: Final = re.compile(r"[A-Za-z0-9_-]*")


class CursorError(ValueError):
    """The text is not a cursor this worker wrote (answered with ``reset`` ``bad_cursor``)."""


@functools.lru_cache(maxsize=1024)
def tag(data: bytes) -> bytes:
    """A short stable digest identifying a topic name or a topic incarnation.

    Only the channel's own topic names and incarnations are tagged (a client's cursor
    carries tags, never hashed here), a handful per process, yet every resume tags each
    of them: cached (W4, docs/benchmarks.md).
    """
    return hashlib.blake2b(data, digest_size=TAG_BYTES).digest()


def name_tag(topic: str) -> bytes:
    return tag(topic.encode("utf-8"))


@dataclass(frozen=True, slots=True)
class CursorTopic:
    name_tag: bytes
    incarnation_tag: bytes
    offsets: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class Cursor:
    """A decoded cursor: per-topic next offsets and the event time it was made at."""

    timestamp_s: int
    topics: tuple[CursorTopic, ...]


@dataclass(frozen=True, slots=True)
class TopicLayout:
    """A topic as the edge sees it: its incarnation and the next offset per partition."""

    name: str
    incarnation: bytes
    next_offsets: tuple[int, ...]


def _varint(value: int) -> bytes:
    if value < 0x80:
        return bytes((value,))
    if value < 0x200000:  # up to three bytes without the loop: most offsets (every event)
        if value < 0x4000:
            return bytes(((value & 0x7F) | 0x80, value >> 7))
        return bytes(((value & 0x7F) | 0x80, ((value >> 7) & 0x7F) | 0x80, value >> 14))
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def encode_cursor(cursor: Cursor) -> str:
    """Encode a cursor (the live path uses ``ChannelPosition``, which caches segments)."""
    parts = [_VERSION_BYTE, _varint(cursor.timestamp_s), _varint(len(cursor.topics))]
    for item in cursor.topics:
        parts += [item.name_tag, item.incarnation_tag, _varint(len(item.offsets))]
        parts += [_varint(offset) for offset in item.offsets]
    return _b64(b"".join(parts))


def _b64(raw: bytes) -> str:
    # base64.urlsafe_b64encode without its Python-level wrapper: one id per event.
    return binascii.b2a_base64(raw, newline=False).translate(_URLSAFE).rstrip(b"=").decode("ascii")


def decode_cursor(text: str) -> Cursor:
    """Strictly decode ``text``; anything but a canonical cursor raises ``CursorError``."""
    if not isinstance(text, str) or not text or len(text) > MAX_CURSOR_CHARS:
        raise CursorError("cursor must be a non-empty string of bounded length")
    if not _BASE64URL.fullmatch(text) or len(text) % 4 == 1:
        raise CursorError("cursor is not base64url")
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError) as error:
        raise CursorError("cursor is not base64url") from error
    if _b64(raw) != text:  # non-zero padding bits: not something we wrote
        raise CursorError("cursor is not canonical")
    reader = _Reader(raw)
    if reader.byte() != CURSOR_VERSION:
        raise CursorError("unknown cursor version")
    timestamp_s = reader.varint()
    topic_count = reader.varint()
    if topic_count > MAX_PARTITIONS:
        raise CursorError("too many topics")
    topics: list[CursorTopic] = []
    seen: set[bytes] = set()
    for _ in range(topic_count):
        topic_tag = reader.take(TAG_BYTES)
        if topic_tag in seen:
            raise CursorError("duplicate topic")
        seen.add(topic_tag)
        incarnation_tag = reader.take(TAG_BYTES)
        partition_count = reader.varint()
        if partition_count > MAX_PARTITIONS:
            raise CursorError("too many partitions")
        offsets = tuple(reader.varint() for _ in range(partition_count))
        topics.append(CursorTopic(topic_tag, incarnation_tag, offsets))
    if not reader.at_end():
        raise CursorError("trailing bytes")
    return Cursor(timestamp_s, tuple(topics))


class _Reader:
    __slots__ = ("_data", "_index")

    def __init__(self, data: bytes) -> None:
        self._data = data
        self._index = 0

    def at_end(self) -> bool:
        return self._index == len(self._data)

    def byte(self) -> int:
        if self._index >= len(self._data):
            raise CursorError("truncated cursor")
        value = self._data[self._index]
        self._index += 1
        return value

    def take(self, count: int) -> bytes:
        end = self._index + count
        if end > len(self._data):
            raise CursorError("truncated cursor")
        chunk = self._data[self._index : end]
        self._index = end
        return chunk

    def varint(self) -> int:
        value = 0
        for shift in range(0, 64, 7):
            byte = self.byte()
            value |= (byte & 0x7F) << shift
            if not byte & 0x80:
                # Reject over-long forms (a trailing zero group) so each value has one text.
                if byte == 0 and shift:
                    raise CursorError("non-canonical varint")
                if value > MAX_OFFSET:
                    raise CursorError("varint out of range")
                return value
        raise CursorError("varint too long")


class _TopicState:
    __slots__ = ("dirty", "head", "name", "offsets", "segment", "varints")

    def __init__(self, layout: TopicLayout) -> None:
        self.name = layout.name
        self.offsets = list(layout.next_offsets)
        self.varints = [_varint(offset) for offset in self.offsets]
        self.head = name_tag(layout.name) + tag(layout.incarnation)
        self.segment = b""
        self.dirty = True

    def encoded(self) -> bytes:
        if self.dirty:
            self.segment = self.head + _varint(len(self.offsets)) + b"".join(self.varints)
            self.dirty = False
        return self.segment


class ChannelPosition:
    """The next offset to dispatch per partition, and the id naming it.

    Live dispatch calls ``advance`` once per event, in each partition's order; the
    returned id goes into that event's envelope. Replay builds its own instance starting
    at the client's cursor, so replayed events carry ids that never claim more than the
    client has received.
    """

    def __init__(self, topics: Iterable[TopicLayout], *, timestamp_s: int = 0) -> None:
        self._topics: dict[str, _TopicState] = {}
        for layout in topics:
            if layout.name in self._topics:
                raise ValueError(f"duplicate topic {layout.name}")
            for offset in layout.next_offsets:
                _check_offset(offset)
            self._topics[layout.name] = _TopicState(layout)
        self._timestamp_s = timestamp_s
        self._id: str | None = None
        # The id's head (version, time, topic count) changes once a second at most, yet
        # every event's id is built anew: encoded once per second (replay, W4).
        self._head_for = -1
        self._head = b""

    def advance(self, topic: str, partition: int, offset: int, timestamp_ms: int | None) -> str:
        """Record that ``offset`` was dispatched; return the id of the position after it."""
        self.skip(topic, partition, offset)
        if timestamp_ms is not None and timestamp_ms > 0:
            self._timestamp_s = timestamp_ms // 1000
        return self.current_id()

    def skip(self, topic: str, partition: int, offset: int) -> None:
        """Move past ``offset`` without needing an id (undeliverable records, gaps)."""
        state = self._topics[topic]
        if offset < state.offsets[partition]:
            raise ValueError(
                f"{topic}[{partition}] offset {offset} is behind position "
                f"{state.offsets[partition]}"
            )
        next_offset = offset + 1
        state.offsets[partition] = next_offset
        state.varints[partition] = _varint(next_offset)
        state.dirty = True
        self._id = None

    def current_id(self) -> str:
        if self._id is None:
            if self._head_for != self._timestamp_s:
                self._head_for = self._timestamp_s
                self._head = _VERSION_BYTE + _varint(self._timestamp_s) + _varint(len(self._topics))
            parts = [self._head]
            parts += [state.encoded() for state in self._topics.values()]
            self._id = _b64(b"".join(parts))
        return self._id

    def grow(self, topic: str, partition_count: int, start_offset: int = 0) -> None:
        """Partitions were added to ``topic``; they start at ``start_offset``."""
        state = self._topics[topic]
        while len(state.offsets) < partition_count:
            state.offsets.append(start_offset)
            state.varints.append(_varint(start_offset))
        state.dirty = True
        self._id = None

    def next_offset(self, topic: str, partition: int) -> int:
        return self._topics[topic].offsets[partition]

    def snapshot(self) -> Mapping[str, tuple[int, ...]]:
        """Next offsets per topic, copied: the live boundary of a resume."""
        return {name: tuple(state.offsets) for name, state in self._topics.items()}

    @property
    def timestamp_s(self) -> int:
        return self._timestamp_s


def layouts_from(
    incarnations: Mapping[str, bytes], offsets: Mapping[str, Sequence[int]]
) -> list[TopicLayout]:
    """Zip per-topic incarnations and offsets into layouts (topic order of ``offsets``)."""
    return [
        TopicLayout(name, incarnations[name], tuple(values)) for name, values in offsets.items()
    ]


def _check_offset(offset: int) -> None:
    if not 0 <= offset <= MAX_OFFSET:
        raise ValueError(f"offset {offset} out of range")
