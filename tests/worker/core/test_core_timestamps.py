"""Producer timestamps as Java writes them: one table per form, then what is ignored.

Every expected value is the instant Java's ``Instant.toEpochMilli()`` gives for the same
moment (floored milliseconds), written out by hand from the literal.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from clarion_worker.core.timestamps import (
    EARLIEST_MS,
    TIMESTAMP_FORMS,
    TIMESTAMP_PROBLEMS,
    read_timestamp,
    resolve_zone,
)

#: 2026-11-30T06:10:38.952Z, the instant most rows stand for.
T = 1_796_019_038_952
UTC_ZONE = resolve_zone("UTC")
PARIS = resolve_zone("Europe/Paris")  # UTC+1 in November, UTC+2 in summer
ABIDJAN = resolve_zone("Africa/Abidjan")


def _ms(text: str) -> int:
    return int(datetime.fromisoformat(text).timestamp() * 1000)


def test_reference_instant() -> None:
    assert _ms("2026-11-30T06:10:38.952+00:00") == T


@pytest.mark.parametrize(
    ("value", "zone", "millis", "form"),
    [
        # Instant.toString(), OffsetDateTime.toString(), Jackson's ISO with offset.
        ("2026-11-30T06:10:38.952487088Z", UTC_ZONE, T, "iso_offset"),
        ("2026-11-30T06:10:38.952Z", PARIS, T, "iso_offset"),  # the offset wins over the zone
        ("2026-11-30T07:10:38.952487+01:00", UTC_ZONE, T, "iso_offset"),
        ("2026-11-30T01:10:38.952-05:00", UTC_ZONE, T, "iso_offset"),
        ("2026-11-30T06:10:38.9529Z", UTC_ZONE, T, "iso_offset"),  # floored, never rounded
        ("2026-11-30T06:10Z", UTC_ZONE, T - 38_952, "iso_offset"),  # Java omits :00 seconds
        ("2026-11-30T07:10:38.952+0100", UTC_ZONE, T, "iso_offset"),
        ("2026-11-30 06:10:38.952Z", UTC_ZONE, T, "iso_offset"),
        # ZonedDateTime.toString(): offset plus region; a region alone is resolved.
        ("2026-11-30T07:10:38.952487088+01:00[Europe/Paris]", UTC_ZONE, T, "iso_region"),
        ("2026-11-30T06:10:38.952Z[UTC]", PARIS, T, "iso_region"),
        ("2026-11-30T07:10:38.952[Europe/Paris]", UTC_ZONE, T, "iso_region"),
        # LocalDateTime through Jackson (trailing zeros stripped) or toString() (groups of 3).
        ("2026-11-30T06:10:38.952487088", UTC_ZONE, T, "iso_local"),
        ("2026-11-30T06:10:38.9524", UTC_ZONE, T, "iso_local"),
        ("2026-11-30T06:10:38.952", ABIDJAN, T, "iso_local"),
        ("2026-11-30T07:10:38.952", PARIS, T, "iso_local"),
        ("2026-11-30T06:10", UTC_ZONE, T - 38_952, "iso_local"),
        # Jackson's array form of a LocalDateTime (WRITE_DATES_AS_TIMESTAMPS, the default of a
        # plain ObjectMapper): seconds and nanos left out when zero.
        ([2026, 11, 30, 6, 10, 38, 952487088], UTC_ZONE, T, "array"),
        ([2026, 11, 30, 7, 10, 38, 952000000], PARIS, T, "array"),
        ([2026, 11, 30, 6, 10, 38], UTC_ZONE, T - 952, "array"),
        ([2026, 11, 30, 6, 10], UTC_ZONE, T - 38_952, "array"),
        # Numbers, told apart by magnitude.
        (1_796_019_038, UTC_ZONE, T - 952, "epoch_s"),
        (1_796_019_038_952, UTC_ZONE, T, "epoch_ms"),
        (1_796_019_038_952_487, UTC_ZONE, T, "epoch_us"),
        (1_796_019_038_952_487_088, UTC_ZONE, T, "epoch_ns"),
        (1_796_019_038.952487088, UTC_ZONE, T, "epoch_s"),  # a default ObjectMapper's Instant
        (1_796_019_038_952.9, UTC_ZONE, T, "epoch_ms"),
    ],
)
def test_accepted_forms(value: object, zone: object, millis: int, form: str) -> None:
    reading = read_timestamp(value, zone, reference_ms=T)  # type: ignore[arg-type]
    assert (reading.millis, reading.form, reading.problem) == (millis, form, None)
    assert form in TIMESTAMP_FORMS


@pytest.mark.parametrize(
    ("literal", "millis"),
    [
        # Each of these floats lies within a microsecond of a millisecond boundary: the
        # binary float alone would give the wrong millisecond, the record's text does not.
        ("1796019038.952999999", T),
        ("1796019038.953000000", T + 1),
        ("1796019038.952000001", T),
        ("1796019038.951999999", T - 1),
        ("1.796019038952E9", T),
        ("1796019038952.999999", T),
    ],
)
def test_decimal_numbers_are_read_from_the_record_text(literal: str, millis: int) -> None:
    raw = b'{"type":"A","data":{"timestamp":"x"},"timestamp":' + literal.encode() + b"}"
    value = json.loads(raw)["timestamp"]
    reading = read_timestamp(value, UTC_ZONE, reference_ms=T, raw=raw)
    assert reading.millis == millis


def test_decimal_without_the_record_text_uses_the_shortest_round_trip() -> None:
    assert read_timestamp(1796019038.952, UTC_ZONE).millis == T
    # What the text is needed for: the float alone rounds .952999999 up to .953.
    assert read_timestamp(1796019038.952999999, UTC_ZONE).millis == T + 1


def test_daylight_saving_follows_java_at_zone() -> None:
    # Paris, 2026-03-29 02:30 does not exist (gap): Java moves it to 03:30+02:00.
    assert read_timestamp("2026-03-29T02:30:00", PARIS).millis == _ms("2026-03-29T01:30:00+00:00")
    # 2026-10-25 02:30 happens twice (overlap): Java takes the earlier offset, +02:00.
    assert read_timestamp("2026-10-25T02:30:00", PARIS).millis == _ms("2026-10-25T00:30:00+00:00")
    assert read_timestamp("2026-07-01T12:00:00", PARIS).millis == _ms("2026-07-01T10:00:00+00:00")


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("Mon Nov 30 07:10:38 CET 2026", "unparsable"),  # java.util.Date#toString
        ("yesterday", "unparsable"),
        ("2026-11-30", "unparsable"),  # a date is not an instant
        ("2026-13-30T06:10:38Z", "unparsable"),
        ("2026-02-30T06:10:38Z", "unparsable"),
        ("2026-11-30T24:00:00Z", "unparsable"),
        ("2026-11-30T06:10:60Z", "unparsable"),  # leap seconds: not in Java either
        ("2026-11-30T06:10:38+19:00", "unparsable"),
        ("2026-11-30T06:10:38[Mars/Olympus]", "unparsable"),
        ("2026-11-30T06:10:38.9524870881Z", "unparsable"),  # finer than nanoseconds
        ("2026-11-30T06:10:38Z" + " " * 100, "unparsable"),
        ("1796019038952", "unparsable"),  # numbers in strings are not guessed
        ([2026, 11, 30], "unparsable"),  # a LocalDate
        ([2026, 11, 30, 6, 10, 38, 10**9], "unparsable"),
        ([2026, 11, 30, 6, "10"], "unparsable"),
        ([2026, 11, 30, 6, True], "unparsable"),
        (True, "wrong_type"),
        ({"epochSecond": 1796019038, "nano": 952487088}, "wrong_type"),
        (0, "implausible"),  # 1970
        (-5, "implausible"),
        (946_684_799, "implausible"),  # 1999-12-31T23:59:59Z in seconds
        (EARLIEST_MS - 1, "implausible"),
        (T + 86_400_001, "implausible"),  # more than a day after the Kafka timestamp
        ("2027-11-30T06:10:38Z", "implausible"),
        (10**20, "implausible"),
        (float("inf"), "implausible"),
        (float("nan"), "implausible"),
    ],
)
def test_ignored_values_name_their_reason(value: object, problem: str) -> None:
    reading = read_timestamp(value, UTC_ZONE, reference_ms=T)
    assert (reading.millis, reading.form, reading.problem) == (None, None, problem)
    assert problem in TIMESTAMP_PROBLEMS


def test_absent_is_not_a_problem() -> None:
    reading = read_timestamp(None, UTC_ZONE, reference_ms=T)
    assert (reading.millis, reading.problem) == (None, None)


def test_without_a_kafka_timestamp_the_future_bound_is_2100() -> None:
    assert read_timestamp("2099-12-31T23:59:59Z", UTC_ZONE).millis is not None
    assert read_timestamp("2100-01-01T00:00:01Z", UTC_ZONE).problem == "implausible"
    assert read_timestamp("2099-12-31T23:59:59Z", UTC_ZONE, reference_ms=-1).problem is None


@pytest.mark.parametrize(
    ("name", "offset_hours"),
    [("UTC", 0), ("Z", 0), ("+01:00", 1), ("-05:30", -5.5), ("Africa/Abidjan", 0)],
)
def test_zones(name: str, offset_hours: float) -> None:
    zone = resolve_zone(name)
    offset = datetime(2026, 11, 30, tzinfo=zone).utcoffset()
    assert offset is not None
    assert offset.total_seconds() == offset_hours * 3600
    assert resolve_zone("UTC") is UTC


@pytest.mark.parametrize("name", ["", "Mars/Olympus", "+25:00", "../etc/passwd", "Europe/"])
def test_unknown_zones_are_refused(name: str) -> None:
    with pytest.raises(ValueError, match=r"zone|offset"):
        resolve_zone(name)
