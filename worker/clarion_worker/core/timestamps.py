"""Producer timestamps as Java (and other) producers write them, read into epoch ms.

``read_timestamp(value, zone, ...)`` takes the JSON value of a record's timestamp field and
returns a ``TimestampReading``: the instant in epoch milliseconds (floored, as Java's
``Instant.toEpochMilli``), the form it was written in, or the reason it was ignored.
Accepted forms (docs/worker-config.md, "Producer timestamps"):

=================  ================================================================
``iso_offset``     ISO-8601 with ``Z`` or an offset: ``Instant``/``OffsetDateTime``
                   ``toString()``, any fraction up to nanoseconds
``iso_region``     ``ZonedDateTime.toString()``: offset plus ``[Region]`` (the offset
                   decides; a region alone, without offset, is resolved as a zone)
``iso_local``      zoneless ISO-8601 (``LocalDateTime`` through Jackson or
                   ``toString()``, seconds optional): read in the configured zone
``array``          Jackson's array form of a ``LocalDateTime``:
                   ``[year, month, day, hour, minute(, second(, nanos))]``, same zone
``epoch_s``        a number below 1e11: epoch seconds, integer or decimal
                   (``1796015439.772542888``, what a default ObjectMapper writes for an
                   ``Instant``), read exactly from the record's text
``epoch_ms``       1e11 up to 1e14: epoch milliseconds
``epoch_us``       1e14 up to 1e17: epoch microseconds
``epoch_ns``       1e17 up to 1e20: epoch nanoseconds
=================  ================================================================

The magnitude bands are disjoint for every date between 1973 and 5138, so seconds and
milliseconds are never confused. Zoneless values are wall-clock times in ``zone``
(UTC unless configured); in a daylight-saving overlap they take the earlier offset and in
a gap the offset before it, as Java's ``LocalDateTime.atZone`` does.

Anything else is ignored (the Kafka record timestamp stands in) with a reason, a metric
label: ``unparsable`` (text or array in no accepted form, or an invalid date),
``wrong_type`` (an object, a boolean), ``implausible`` (parsed, but before 2000-01-01
or more than a day after the record's Kafka timestamp). A missing or null field is not
a problem: the producer simply gave none.

Pure: no I/O. Zones are resolved with ``zoneinfo`` from the system's or the ``tzdata``
package's database (``resolve_zone``), once per zone name.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, tzinfo
from decimal import Decimal, InvalidOperation
from functools import lru_cache
from typing import Final, Literal, NamedTuple, get_args

from clarion_contract.zones import resolve_zone as resolve_zone

TimestampForm = Literal[
    "iso_offset",
    "iso_region",
    "iso_local",
    "array",
    "epoch_s",
    "epoch_ms",
    "epoch_us",
    "epoch_ns",
]
TIMESTAMP_FORMS: Final[tuple[TimestampForm, ...]] = get_args(TimestampForm)
TimestampProblem = Literal["unparsable", "wrong_type", "implausible"]
TIMESTAMP_PROBLEMS: Final[tuple[TimestampProblem, ...]] = get_args(TimestampProblem)

#: 2000-01-01T00:00:00Z: nothing a live producer stamps is older.
EARLIEST_MS: Final = 946_684_800_000
#: Without a Kafka timestamp to compare with: 2100-01-01T00:00:00Z.
LATEST_MS: Final = 4_102_444_800_000
#: How far past the Kafka timestamp a producer's clock may run.
FUTURE_SLACK_MS: Final = 86_400_000
_MAX_TEXT: Final = 80
#: Magnitude bands: (upper bound, milliseconds per unit as a divisor or multiplier).
_SECONDS_BELOW: Final = 10**11
_MILLIS_BELOW: Final = 10**14
_MICROS_BELOW: Final = 10**17
_NANOS_BELOW: Final = 10**20

_ISO: Final = re.compile(
    r"\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(?::\d{2}(?:[.,]\d{1,9})?)?"
    r"(?:Z|[+-]\d{2}(?::?\d{2}(?::?\d{2})?)?)?"
    r"(?:\[(?P<region>[A-Za-z0-9_+\-/]{1,64})\])?"
)
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_MS: Final = timedelta(milliseconds=1)
_MAX_OFFSET: Final = timedelta(hours=18)


class TimestampReading(NamedTuple):
    """What a timestamp value gave: ``millis`` and ``form``, or ``problem`` (or none).

    A named tuple, not a dataclass: one is built per record, on the live path.
    """

    millis: int | None = None
    form: TimestampForm | None = None
    problem: TimestampProblem | None = None


ABSENT: Final = TimestampReading()
_UNPARSABLE: Final = TimestampReading(problem="unparsable")
_WRONG_TYPE: Final = TimestampReading(problem="wrong_type")
_IMPLAUSIBLE: Final = TimestampReading(problem="implausible")


def read_timestamp(
    value: object,
    zone: tzinfo,
    *,
    reference_ms: int | None = None,
    raw: bytes | None = None,
    field: str = "timestamp",
) -> TimestampReading:
    """The instant ``value`` stands for; see the module docstring for the forms.

    ``reference_ms`` (the Kafka record timestamp) bounds how far in the future a value may
    lie. ``raw`` (the record's bytes) and ``field`` let a decimal number be read exactly
    from its text instead of from its binary float.
    """
    if value is None:
        return ABSENT
    if isinstance(value, bool):
        return _WRONG_TYPE
    if isinstance(value, int):
        reading = _from_int(value)
    elif isinstance(value, float):
        reading = _from_number(_exact_decimal(value, raw, field))
    elif isinstance(value, str):
        reading = _from_text(value, zone)
    elif isinstance(value, list):
        reading = _from_array(value, zone)
    else:
        return _WRONG_TYPE
    millis = reading.millis
    if millis is None:
        return reading
    latest = reference_ms + FUTURE_SLACK_MS if reference_ms and reference_ms > 0 else LATEST_MS
    if not EARLIEST_MS <= millis <= latest:
        return _IMPLAUSIBLE
    return reading


def _from_int(number: int) -> TimestampReading:
    magnitude = abs(number)
    if magnitude < _SECONDS_BELOW:
        return TimestampReading(number * 1000, "epoch_s")
    if magnitude < _MILLIS_BELOW:
        return TimestampReading(number, "epoch_ms")
    if magnitude < _MICROS_BELOW:
        return TimestampReading(number // 1000, "epoch_us")
    if magnitude < _NANOS_BELOW:
        return TimestampReading(number // 1_000_000, "epoch_ns")
    return _IMPLAUSIBLE


def _from_number(number: Decimal) -> TimestampReading:
    if not number.is_finite():
        return _IMPLAUSIBLE
    magnitude = abs(number)
    if magnitude < _SECONDS_BELOW:
        return TimestampReading(_floor(number * 1000), "epoch_s")
    if magnitude < _MILLIS_BELOW:
        return TimestampReading(_floor(number), "epoch_ms")
    if magnitude < _MICROS_BELOW:
        return TimestampReading(_floor(number / 1000), "epoch_us")
    if magnitude < _NANOS_BELOW:
        return TimestampReading(_floor(number / 1_000_000), "epoch_ns")
    return _IMPLAUSIBLE


def _floor(number: Decimal) -> int:
    return int(number.to_integral_value(rounding="ROUND_FLOOR"))


def _exact_decimal(value: float, raw: bytes | None, field: str) -> Decimal:
    """The number as the producer wrote it: its literal in ``raw`` when it can be found
    unambiguously, else the shortest text that round-trips the float."""
    if raw is not None and value == value and abs(value) != float("inf"):
        texts = {
            match.group(1)
            for match in _number_after(field).finditer(raw)
            if float(match.group(1)) == value
        }
        if len(texts) == 1:
            try:
                return Decimal(texts.pop().decode("ascii"))
            except InvalidOperation:
                pass
    try:
        return Decimal(repr(value))
    except InvalidOperation:
        return Decimal("NaN")


@lru_cache(maxsize=16)
def _number_after(field: str) -> re.Pattern[bytes]:
    """A JSON number right after the key ``field`` (escaped keys are not recognised)."""
    key = re.escape(field.encode())
    return re.compile(rb'"' + key + rb'"\s*:\s*(-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?)')


def _from_text(text: str, zone: tzinfo) -> TimestampReading:
    # The pattern decides what is accepted; the C parser then does the arithmetic.
    if len(text) > _MAX_TEXT:
        return _UNPARSABLE
    match = _ISO.fullmatch(text)
    if match is None:
        return _UNPARSABLE
    region = match.group("region")
    try:
        parsed = datetime.fromisoformat(text[: match.start("region") - 1] if region else text)
    except ValueError:
        return _UNPARSABLE
    form: TimestampForm
    offset = parsed.utcoffset()
    if offset is not None:
        if abs(offset) > _MAX_OFFSET:
            return _UNPARSABLE
        form = "iso_region" if region else "iso_offset"
    else:
        if region:
            try:
                zone = resolve_zone(region)
            except ValueError:
                return _UNPARSABLE
            form = "iso_region"
        else:
            form = "iso_local"
        parsed = parsed.replace(tzinfo=zone)
    return TimestampReading((parsed - _EPOCH) // _ONE_MS, form)


def _from_array(items: list[object], zone: tzinfo) -> TimestampReading:
    if not 5 <= len(items) <= 7 or not all(
        isinstance(item, int) and not isinstance(item, bool) for item in items
    ):
        return _UNPARSABLE
    parts = [int(item) for item in items if isinstance(item, int)]
    nanos = parts[6] if len(parts) == 7 else 0
    if not 0 <= nanos <= 999_999_999:
        return _UNPARSABLE
    year, month, day, hour, minute = parts[:5]
    try:
        wall = datetime(
            year, month, day, hour, minute, parts[5] if len(parts) > 5 else 0, nanos // 1000
        )
    except (ValueError, OverflowError):
        return _UNPARSABLE
    return TimestampReading((wall.replace(tzinfo=zone) - _EPOCH) // _ONE_MS, "array")
