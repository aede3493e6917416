"""Resume cursor: round trips, strict decoding, position tracking."""

from __future__ import annotations

import random

import pytest

from clarion_worker.core.cursor import (
    MAX_OFFSET,
    ChannelPosition,
    Cursor,
    CursorError,
    CursorTopic,
    TopicLayout,
    decode_cursor,
    encode_cursor,
    name_tag,
    tag,
)

#: Offsets at the edges of one-, two- and three-byte varints, and beyond.
VARINT_EDGES = (0, 1, 127, 128, 0x3FFF, 0x4000, 0x1FFFFF, 0x200000, 2**35, MAX_OFFSET)

LAYOUT = [
    TopicLayout("approvals", b"\x01" * 16, (0, 10, 20)),
    TopicLayout("notes", b"\x02" * 16, (5,)),
]


def test_position_ids_decode_to_the_vector() -> None:
    position = ChannelPosition(LAYOUT)
    event_id = position.advance("approvals", 1, 10, 1_700_000_000_999)
    cursor = decode_cursor(event_id)
    assert cursor.timestamp_s == 1_700_000_000
    assert [(t.name_tag, t.incarnation_tag, t.offsets) for t in cursor.topics] == [
        (name_tag("approvals"), tag(b"\x01" * 16), (0, 11, 20)),
        (name_tag("notes"), tag(b"\x02" * 16), (5,)),
    ]
    assert position.current_id() == event_id
    assert position.snapshot() == {"approvals": (0, 11, 20), "notes": (5,)}


def test_ids_are_url_safe_and_compact() -> None:
    position = ChannelPosition(LAYOUT)
    event_id = position.advance("approvals", 0, 2**40, 1_700_000_000_000)
    assert set(event_id) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
    assert len(event_id) < 60


def test_round_trip_random_cursors() -> None:
    rng = random.Random(1)
    for _ in range(500):
        cursor = Cursor(
            rng.randrange(0, 2**40),
            tuple(
                CursorTopic(
                    name_tag(f"t{index}"),
                    tag(rng.randbytes(16)),
                    tuple(rng.choice(VARINT_EDGES) for _ in range(rng.randrange(0, 9))),
                )
                for index in range(rng.randrange(0, 4))
            ),
        )
        assert decode_cursor(encode_cursor(cursor)) == cursor


def test_skip_and_advance_keep_order_and_cache() -> None:
    position = ChannelPosition(LAYOUT)
    first = position.current_id()
    position.skip("notes", 0, 7)
    assert position.next_offset("notes", 0) == 8
    assert position.current_id() != first
    with pytest.raises(ValueError, match="behind"):
        position.advance("notes", 0, 7, None)
    position.grow("notes", 3, start_offset=0)
    assert position.snapshot()["notes"] == (8, 0, 0)
    assert position.timestamp_s == 0
    with pytest.raises(ValueError, match="duplicate"):
        ChannelPosition([LAYOUT[0], LAYOUT[0]])
    with pytest.raises(ValueError, match="out of range"):
        ChannelPosition([TopicLayout("x", b"", (-1,))])


def test_advance_matches_a_fresh_encoding() -> None:
    rng = random.Random(3)
    position = ChannelPosition(LAYOUT)
    offsets = {layout.name: list(layout.next_offsets) for layout in LAYOUT}
    seconds = 1
    for _ in range(300):
        topic = rng.choice(["approvals", "notes"])
        partition = rng.randrange(len(offsets[topic]))
        offset = offsets[topic][partition] + rng.choice([0, 1, 200, 20_000, 3_000_000])
        # The same second a few times in a row, then another: the id's cached head follows.
        seconds = rng.choice([seconds, seconds, rng.randrange(1, 10**9)])
        event_id = position.advance(topic, partition, offset, 1000 * seconds + 999)
        offsets[topic][partition] = offset + 1
        decoded = decode_cursor(event_id)
        assert decoded.timestamp_s == seconds
        assert [t.offsets for t in decoded.topics] == [
            tuple(offsets["approvals"]),
            tuple(offsets["notes"]),
        ]


@pytest.mark.parametrize(
    "text",
    [
        "",
        "A",  # impossible base64 length
        "AQ==",  # padding is not ours
        "AQ A",
        "AQ+A",  # standard alphabet, not url-safe
        "AQ/A",
        "Ag",  # version 2
        "AQ",  # truncated after version
        "AQB",  # non-canonical trailing bits
        "AQAB",  # one topic announced, none present
        "x" * 9000,
        "é",
    ],
)
def test_decoder_rejects_garbage(text: str) -> None:
    with pytest.raises(CursorError):
        decode_cursor(text)


def test_decoder_rejects_structural_tricks() -> None:
    import base64

    def b64(raw: bytes) -> str:
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

    topic = name_tag("t") + tag(b"i")
    good = b"\x01\x00\x01" + topic + b"\x01\x05"
    assert decode_cursor(b64(good)).topics[0].offsets == (5,)
    for raw in [
        good + b"\x00",  # trailing bytes
        b"\x01\x00\x02" + topic + b"\x01\x05" + topic + b"\x01\x05",  # duplicate topic
        b"\x01\x00\x01" + topic + b"\x01\x85\x00",  # over-long varint
        b"\x01\x00\x01" + topic + b"\x01" + b"\xff" * 10 + b"\x01",  # too long
        b"\x01\x00\x01" + topic + b"\x01" + b"\xff" * 9 + b"\x01",  # > 2**63 - 1
        b"\x01\x00\x01" + topic + b"\xff\xff\x7f",  # absurd partition count
        b"\x01\x00\xff\xff\x7f",  # absurd topic count
    ]:
        with pytest.raises(CursorError):
            decode_cursor(b64(raw))


def test_decoder_never_raises_anything_else() -> None:
    import base64

    rng = random.Random(11)
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_=+/ \x00é"
    accepted = 0
    for _ in range(5000):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randrange(0, 40)))
        candidates = [text, base64.urlsafe_b64encode(b"\x01" + rng.randbytes(rng.randrange(0, 30)))
                      .rstrip(b"=").decode()]  # fmt: skip
        for candidate in candidates:
            try:
                decoded = decode_cursor(candidate)
            except CursorError:
                continue
            # Strictness: whatever is accepted is exactly what we would have written.
            assert encode_cursor(decoded) == candidate
            accepted += 1
    assert accepted > 0
