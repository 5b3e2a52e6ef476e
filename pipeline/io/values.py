"""Parquet values Python has no exact type for, carried through the job as what they are.

`datetime` stops at microseconds and at years 1–9999, and knows no unit; `pyarrow`'s `as_py()` raises on
the rest (nanoseconds, year 10000) or returns what JSON cannot write (`uuid.UUID`). So a Parquet row's
timestamps, times of day and durations are read as a count of their column's unit (`Timestamp`, `TimeOfDay`,
`Duration`), a date outside Python's range as a count of days or milliseconds (`Day`), and a value of an
Arrow extension type as its storage value with the type's name (`Extension`). Each keeps what the Parquet
writer needs to rebuild the same value (`pipeline.io.arrow`), and has one faithful JSON text (`json_value`),
documented in docs/formats.md. Standard library only: `records.to_json` uses it.
"""

from __future__ import annotations

import datetime
import functools
import re
import uuid
import zoneinfo
from typing import Any, Optional

# Digits after the second of each unit, and the unit's count in a second.
DIGITS = {"s": 0, "ms": 3, "us": 6, "ns": 9}
PER_SECOND = {unit: 10**digits for unit, digits in DIGITS.items()}
DAY_SECONDS = 86_400
DAY_MS = DAY_SECONDS * 1000
EPOCH_ORDINAL = datetime.date(1970, 1, 1).toordinal()
_OFFSET = re.compile(r"^([+-])(\d\d):?(\d\d)$")


class _Carried:
    """A value and the column facts that make it exact; equal when both are."""

    __slots__ = ()

    def _key(self) -> tuple:
        return tuple(getattr(self, name) for name in self.__slots__)

    def __eq__(self, other) -> bool:
        return type(other) is type(self) and other._key() == self._key()

    def __hash__(self) -> int:
        return hash((type(self).__name__, self._key()))

    def __repr__(self) -> str:
        return f"{type(self).__name__}{self._key()!r}"

    def __reduce__(self):
        return type(self), self._key()


class Timestamp(_Carried):
    """`count` units (s, ms, us, ns) since 1970-01-01T00:00:00 UTC; `tz` the column's time zone, or None."""

    __slots__ = ("count", "unit", "tz")

    def __init__(self, count: int, unit: str, tz: Optional[str] = None):
        self.count, self.unit, self.tz = count, unit, tz

    def json_value(self) -> str:
        """ISO 8601 with the unit's digits; with a time zone, the local time and its offset then (UTC where the
        zone is unknown here or the date is past Python's range); years past 0–9999 expanded (+010000)."""
        seconds, fraction = divmod(self.count, PER_SECOND[self.unit])
        suffix = ""
        if self.tz is not None:
            offset = _utc_offset(self.tz, seconds)
            seconds += offset
            suffix = _offset_text(offset)
        days, second = divmod(seconds, DAY_SECONDS)
        return f"{_day_text(days)}T{_clock_text(second, fraction, self.unit)}{suffix}"


class TimeOfDay(_Carried):
    """`count` units (s, ms, us, ns) since midnight."""

    __slots__ = ("count", "unit")

    def __init__(self, count: int, unit: str):
        self.count, self.unit = count, unit

    def json_value(self) -> str:
        """`HH:MM:SS` and the unit's digits."""
        seconds, fraction = divmod(self.count, PER_SECOND[self.unit])
        return _clock_text(seconds, fraction, self.unit)


class Duration(_Carried):
    """`count` units (s, ms, us, ns)."""

    __slots__ = ("count", "unit")

    def __init__(self, count: int, unit: str):
        self.count, self.unit = count, unit

    def json_value(self) -> str:
        """The seconds as JSON number text, exact: `1.500000001`, `-0.001`, `90`."""
        sign = "-" if self.count < 0 else ""
        seconds, fraction = divmod(abs(self.count), PER_SECOND[self.unit])
        digits = f"{fraction:0{DIGITS[self.unit]}d}".rstrip("0") if fraction else ""
        return f"{sign}{seconds}.{digits}" if digits else f"{sign}{seconds}"


class Day(_Carried):
    """A date Python's `date` cannot hold: `count` days (unit "D", date32) or milliseconds (unit "ms", date64,
    also when not a whole day) since 1970-01-01."""

    __slots__ = ("count", "unit")

    def __init__(self, count: int, unit: str):
        self.count, self.unit = count, unit

    def json_value(self) -> str:
        """`YYYY-MM-DD` (years past 0–9999 expanded: `+010000-01-01`); date64 milliseconds past the day's start
        add `THH:MM:SS.fff`."""
        if self.unit == "D":
            return _day_text(self.count)
        days, ms = divmod(self.count, DAY_MS)
        return _day_text(days) + (f"T{_clock_text(ms // 1000, ms % 1000, 'ms')}" if ms else "")


class Extension(_Carried):
    """A value of an Arrow extension type: `name` (e.g. `arrow.uuid`) and the value of its storage type."""

    __slots__ = ("name", "storage")

    def __init__(self, name: str, storage: Any):
        self.name, self.storage = name, storage

    def text(self) -> Optional[str]:
        """The text of the types that have one: a UUID's canonical form, `arrow.json`'s JSON; else None."""
        if self.name == "arrow.uuid" and isinstance(self.storage, bytes) and len(self.storage) == 16:
            return str(uuid.UUID(bytes=self.storage))
        if self.name == "arrow.json" and isinstance(self.storage, str):
            return self.storage
        return None


def date_value(count: int, unit: str):
    """A date32 (`unit` "D") or date64 ("ms") count as a Python `date` when it is one exactly, else a `Day`."""
    days, rest = divmod(count, DAY_MS) if unit == "ms" else (count, 0)
    if rest == 0 and 1 <= EPOCH_ORDINAL + days <= datetime.date.max.toordinal():
        return datetime.date.fromordinal(EPOCH_ORDINAL + days)
    return Day(count, unit)


def _clock_text(seconds: int, fraction: int, unit: str) -> str:
    minutes, second = divmod(seconds, 60)
    hours, minute = divmod(minutes, 60)
    digits = DIGITS[unit]
    return f"{hours:02d}:{minute:02d}:{second:02d}" + (f".{fraction:0{digits}d}" if digits else "")


def _day_text(days: int) -> str:
    """Days since 1970-01-01 as a proleptic Gregorian date, year 0 being 1 BC (as ISO 8601 counts)."""
    year, month, day = _civil(days)
    text = f"{year:04d}" if 0 <= year <= 9999 else f"{'+' if year > 0 else '-'}{abs(year):06d}"
    return f"{text}-{month:02d}-{day:02d}"


def _civil(days: int) -> tuple[int, int, int]:
    """Howard Hinnant's `civil_from_days`, on Python's unbounded integers."""
    days += 719_468
    era, day_of_era = divmod(days, 146_097)
    year_of_era = (day_of_era - day_of_era // 1460 + day_of_era // 36_524 - day_of_era // 146_096) // 365
    day_of_year = day_of_era - (365 * year_of_era + year_of_era // 4 - year_of_era // 100)
    month_index = (5 * day_of_year + 2) // 153
    day = day_of_year - (153 * month_index + 2) // 5 + 1
    month = month_index + 3 if month_index < 10 else month_index - 9
    return year_of_era + era * 400 + (month <= 2), month, day


@functools.lru_cache(maxsize=64)
def _zone(tz: str) -> Optional[datetime.tzinfo]:
    """A time zone Arrow names ("UTC", "Europe/Paris", "+05:30"), or None when it is not known here."""
    match = _OFFSET.match(tz)
    if match:
        sign = -1 if match.group(1) == "-" else 1
        return datetime.timezone(sign * datetime.timedelta(hours=int(match.group(2)), minutes=int(match.group(3))))
    try:
        return zoneinfo.ZoneInfo(tz)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        return None


def _utc_offset(tz: str, seconds: int) -> int:
    """The zone's offset from UTC in seconds at that instant (0 where it cannot be known)."""
    zone = _zone(tz)
    if zone is None:
        return 0
    if isinstance(zone, datetime.timezone):
        return int(zone.utcoffset(None).total_seconds())
    try:
        instant = datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc) + datetime.timedelta(seconds=seconds)
        return int(instant.astimezone(zone).utcoffset().total_seconds())
    except OverflowError:  # past Python's years, near them in the zone's local time
        return 0


def _offset_text(offset: int) -> str:
    sign = "-" if offset < 0 else "+"
    hours, rest = divmod(abs(offset), 3600)
    minutes, seconds = divmod(rest, 60)
    return f"{sign}{hours:02d}:{minutes:02d}" + (f":{seconds:02d}" if seconds else "")
