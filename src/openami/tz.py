"""Time-zone names: one check for every entry point that accepts one (CLI, API, settings)."""

from __future__ import annotations

from zoneinfo import ZoneInfo, ZoneInfoNotFoundError


def check_timezone(name: str) -> str:
    """``name`` if it is an IANA time zone this machine knows; ValueError (saying what to use) otherwise."""
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {name!r} (use an IANA name like Europe/Berlin)") from None
    return name
