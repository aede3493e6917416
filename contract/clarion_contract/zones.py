"""Time zones as the worker resolves them: ``UTC``/``Z``, ``+HH:MM``, or an IANA name.

Shared by the worker (reading producer timestamps) and the settings model (validating
``routing.timestampZone``), so the operator refuses exactly the zones a worker would.
"""

from __future__ import annotations

import re
from datetime import UTC, timedelta, timezone, tzinfo
from functools import lru_cache
from typing import Final
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

#: UTC, a fixed offset up to 18:59 or an IANA-style zone name, in RE2 syntax (the CRD's
#: pattern); :func:`resolve_zone` then checks that a name is known, which no schema can.
TIMESTAMP_ZONE_PATTERN: Final = (
    r"^(UTC|Z|[+-](0[0-9]|1[0-8]):[0-5][0-9]|[A-Za-z][A-Za-z0-9_+-]*(/[A-Za-z0-9_+-]+)*)$"
)
_ZONE_NAME: Final = re.compile(r"[A-Za-z][A-Za-z0-9_+\-]*(?:/[A-Za-z0-9_+\-]+)*")
_FIXED_OFFSET: Final = re.compile(r"([+-])(\d{2}):(\d{2})")


def resolve_zone(name: str) -> tzinfo:
    """``UTC``/``Z``, a fixed offset ``+HH:MM``, or an IANA zone name; ValueError otherwise."""
    return _resolve_zone(name)


@lru_cache(maxsize=256)
def _resolve_zone(name: str) -> tzinfo:
    if name in ("UTC", "Z", "Etc/UTC"):
        return UTC
    fixed = _FIXED_OFFSET.fullmatch(name)
    if fixed:
        sign, hours, minutes = fixed.groups()
        if int(hours) > 18 or int(minutes) > 59:
            raise ValueError(f"{name!r}: offset out of range")
        offset = timedelta(hours=int(hours), minutes=int(minutes))
        return timezone(-offset if sign == "-" else offset)
    if not _ZONE_NAME.fullmatch(name) or len(name) > 64:
        raise ValueError(f"{name!r} is not a zone name (UTC, +HH:MM or an IANA name)")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError) as error:
        raise ValueError(f"{name!r}: unknown time zone") from error
