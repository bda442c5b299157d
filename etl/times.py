"""Parsing the times and durations users type: ISO 8601, and ages like ``7d`` or ``12h``."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta

from etl.errors import ConfigError

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$", re.IGNORECASE)
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(text: str) -> timedelta:
    """Parses ``90s``, ``30m``, ``2h``, ``1d`` or ``2w``.

    Raises:
        ConfigError: Anything else.
    """
    match = _DURATION.match(text)
    if not match:
        raise ConfigError(f"not a duration: {text!r} (use e.g. 30m, 2h, 1d, 2w)")
    try:
        return timedelta(seconds=float(match.group(1)) * _UNITS[match.group(2).lower()])
    except OverflowError:
        raise ConfigError(f"duration out of range: {text!r} (at most 999,999,999 days)") from None


def parse_instant(text: str, now: datetime | None = None) -> datetime:
    """Parses a point in time as UTC: an ISO 8601 date or datetime, or an age before ``now``.

    A date means its midnight UTC; a datetime without offset is UTC; ``7d`` means 7 days ago.

    Raises:
        ConfigError: Not a time this accepts.
    """
    now = now or datetime.now(UTC)
    if _DURATION.match(text):
        try:
            return now - parse_duration(text)
        except OverflowError:
            raise ConfigError(f"time out of range: {text!r} is before the year 1") from None
    value = text.strip()
    if value.endswith(("Z", "z")):
        value = value[:-1] + "+00:00"
    try:
        if len(value) == 10:
            day = date.fromisoformat(value)
            return datetime(day.year, day.month, day.day, tzinfo=UTC)
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise ConfigError(
            f"not a time: {text!r} (use an ISO 8601 date or datetime, or an age like 7d)"
        ) from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    try:
        return parsed.astimezone(UTC)
    except OverflowError:  # 0001-01-01T00:00+01:00
        raise ConfigError(f"time out of range: {text!r}") from None


def format_instant(value: datetime | None) -> str:
    """ISO 8601 in UTC with a ``Z``, seconds precision; empty for None."""
    if value is None:
        return ""
    return value.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
