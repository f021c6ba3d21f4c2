"""What the vendor codecs share: status bits to events, the meter's time zone, bounded field reads.

Manufacturers pack alarms as bit fields; :func:`flag_events` turns the set bits into the platform's
event codes (``leak``, ``burst``, ``backflow``, ``dry``, ``tamper``, ``low_battery`` as the wM-Bus
path raises them, plus a few vendor-specific ones), one event per code with the bits that raised it.
Meters whose clocks run in local time without saying which zone (M-Bus date-time records) are read in
the zone of the ChirpStack device tag ``timezone`` (IANA name), UTC when the tag is absent.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, tzinfo
from typing import Final
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from openami.protocols.lorawan.codecs import CodecContext, CodecEvent
from openami.protocols.lorawan.errors import CodecError

__all__ = ["TIMEZONE_TAG", "Flag", "flag_events", "local_to_aware", "meter_zone", "need", "uint"]

TIMEZONE_TAG: Final = "timezone"

Flag = tuple[str, str, str]
"""(event code, severity, the manufacturer's name for the bit)."""


def flag_events(bits: int, table: Mapping[int, Flag], *, source: str) -> list[CodecEvent]:
    """One event per code whose bits are set in ``bits``; bits the table lacks become ``unknown_status``."""
    found: dict[str, tuple[str, list[str], list[str]]] = {}
    unknown = [bit for bit in range(bits.bit_length()) if bits >> bit & 1 and bit not in table]
    for bit, (code, severity, name) in sorted(table.items()):
        if bits >> bit & 1:
            _, bit_list, names = found.setdefault(code, (severity, [], []))
            bit_list.append(str(bit))
            names.append(name)
    events = [
        CodecEvent(code, severity, {"source": source, "bits": ",".join(b), "info": "; ".join(n)})
        for code, (severity, b, n) in found.items()
    ]
    if unknown:
        detail: dict[str, str | int | float | bool | None] = {
            "source": source,
            "bits": ",".join(map(str, unknown)),
            "value": bits,
        }
        events.append(CodecEvent("unknown_status", "warning", detail))
    return events


def meter_zone(context: CodecContext) -> tzinfo:
    """The zone the meter's clock runs in: the device's ``timezone`` tag, else UTC."""
    name = context.tags.get(TIMEZONE_TAG, "")
    if not name:
        return UTC
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise CodecError(f"device tag {TIMEZONE_TAG}={name!r} is no IANA time zone") from None


def local_to_aware(text: str, zone: tzinfo) -> datetime:
    """An M-Bus date-time (ISO text, naive, meter local) as an aware instant."""
    try:
        return datetime.fromisoformat(text).replace(tzinfo=zone)
    except ValueError:
        raise CodecError(f"meter date-time {text!r} is not a real date") from None


def need(data: bytes, size: int, what: str) -> None:
    """``data`` holds at least ``size`` bytes, else the codec's error naming ``what`` was cut off."""
    if len(data) < size:
        raise CodecError(f"{what}: {len(data)} bytes, need {size}")


def uint(data: bytes, pos: int, size: int) -> int:
    """The unsigned little-endian integer of ``size`` bytes at ``pos`` (the caller checked the length)."""
    return int.from_bytes(data[pos : pos + size], "little")
