"""One DSMR P1 telegram: framing, CRC and the COSEM object lines.

A telegram is ASCII::

    /ISk5\\2MT382-1000          header: '/', manufacturer (3), baud id (1), identification
                                 (empty line)
    1-0:1.8.1(000004.426*kWh)    one COSEM object a line: OBIS code and one or more (fields)
    ...
    !6EEE                        '!' then, from DSMR 4 on, CRC-16/ARC of '/' .. '!' as 4 hex digits

v2.2 and v3 meters send no CRC. Lines are parsed by shape, not by a table of known codes, so objects a
later version or another country adds still come through: one field is a value (number with unit, text
or timestamp); a timestamp followed by values is a timestamped value (M-Bus readings, Fluvius peaks); a
count and OBIS codes followed by entries is a profile buffer (power failure log, Fluvius monthly peaks);
the v2.2/v3 gas reading puts its value on a continuation line that starts with ``(``.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, tzinfo
from typing import Final
from zoneinfo import ZoneInfo

from openami.protocols.crc import crc16_arc
from openami.protocols.dlms.errors import DecodeError
from openami.protocols.dlms.obis import Obis
from openami.protocols.dsmr.errors import CrcError, TelegramError
from openami.protocols.dsmr.values import decode_hex_text, parse_quantity, parse_timestamp

__all__ = [
    "DEFAULT_TZ",
    "MAX_TELEGRAM_BYTES",
    "CosemObject",
    "DsmrTelegram",
    "DsmrValue",
    "MbusDevice",
    "PowerFailure",
    "crc16_arc",
    "parse_telegram",
]

#: The zone of NL, BE, LU and HU meters (all CET/CEST); pass another to :func:`parse_telegram` if needed.
DEFAULT_TZ: Final = ZoneInfo("Europe/Amsterdam")
#: Real telegrams are 0.5-3 kB (DSMR 5 allows a 1024-character text message); anything much larger is
#: not a telegram, and the bound keeps a stream parser's buffer small.
MAX_TELEGRAM_BYTES: Final = 16 * 1024

Value = int | float | str | None

_LINE: Final = re.compile(r"(\d{1,3}-\d{1,3}:\d{1,3}\.\d{1,3}\.\d{1,3}(?:\*\d{1,3})?)\s*((?:\([^()]*\))+)")
_FIELD: Final = re.compile(r"\(([^()]*)\)")
_CRC: Final = re.compile(rb"[0-9A-Fa-f]{1,4}")
_OBIS_FIELD: Final = re.compile(r"\d{1,3}-\d{1,3}:\d{1,3}\.\d{1,3}\.\d{1,3}")
_STAMP_SHAPE: Final = re.compile(r"\d{12}[SW]")
_CONTINUATION: Final = re.compile(r"(?:\([^()]*\))+")


@dataclass(frozen=True, slots=True)
class DsmrValue:
    """One value of a line, normalised: numbers in base units (Wh, W, V, A, m3, J, s), text decoded.

    ``channel`` is the M-Bus channel (group B of ``0-n:...`` codes) for sub-meter objects, else None.
    """

    obis: Obis
    value: Value
    unit: str | None = None
    timestamp: datetime | None = None
    channel: int | None = None


@dataclass(frozen=True, slots=True)
class CosemObject:
    """One object line: its OBIS code, the fields as sent (for anything the values do not cover)."""

    obis: Obis
    fields: tuple[str, ...]
    values: tuple[DsmrValue, ...]


@dataclass(frozen=True, slots=True)
class PowerFailure:
    """One entry of the long power failure log (1-0:99.97.0): when it ended and how long it lasted."""

    end: datetime | None
    duration_s: int


@dataclass(frozen=True, slots=True)
class MbusDevice:
    """An M-Bus sub-meter (gas, water, heat) as the electricity meter reports it on one channel."""

    channel: int
    device_type: int | None
    equipment_id: str | None
    values: tuple[DsmrValue, ...]


@dataclass(frozen=True, slots=True)
class DsmrTelegram:
    """A parsed telegram. ``crc_ok`` is None when the telegram carries no CRC (v2.2, v3)."""

    header: str
    manufacturer: str
    identification: str
    objects: tuple[CosemObject, ...]
    crc: int | None = None
    crc_ok: bool | None = None
    unparsed: tuple[str, ...] = field(default=())

    def get(self, code: str) -> CosemObject | None:
        """The first object with this OBIS code (``1-0:1.8.1``; group F is ignored)."""
        wanted = Obis.parse(code)[:5]
        return next((o for o in self.objects if o.obis[:5] == wanted), None)

    def value(self, code: str) -> DsmrValue | None:
        """The first value of the object with this code, or None."""
        obj = self.get(code)
        return obj.values[0] if obj is not None and obj.values else None

    @property
    def values(self) -> tuple[DsmrValue, ...]:
        """Every value of every object, in telegram order."""
        return tuple(v for o in self.objects for v in o.values)

    @property
    def version(self) -> str | None:
        """``5.0``/``4.2`` from 1-3:0.2.8, ``e-MUCS 50217`` from Fluvius' 0-0:96.1.4, else None."""
        for code, prefix in (("1-3:0.2.8", ""), ("0-0:96.1.4", "e-MUCS ")):
            obj = self.get(code)
            if obj is not None and obj.fields and obj.fields[0].isdigit():
                raw = obj.fields[0]
                return f"{raw[0]}.{raw[1:]}" if not prefix and len(raw) == 2 else prefix + raw
        return None

    @property
    def timestamp(self) -> datetime | None:
        """The telegram's clock (0-0:1.0.0); v2.2/v3 telegrams have none."""
        value = self.value("0-0:1.0.0")
        return value.timestamp if value is not None else None

    @property
    def equipment_id(self) -> str | None:
        """The electricity meter's id (0-0:96.1.1, else 0-0:96.1.0 or 1-0:0.0.0), non-empty, or None."""
        for code in ("0-0:96.1.1", "0-0:96.1.0", "1-0:0.0.0"):
            value = self.value(code)
            if value is not None and isinstance(value.value, str) and value.value.strip("0 "):
                return value.value
        return None

    @property
    def power_failures(self) -> tuple[PowerFailure, ...]:
        """The long power failure log, oldest first as the meter sends it (empty when absent)."""
        obj = self.get("1-0:99.97.0")
        if obj is None:
            return ()
        return tuple(
            PowerFailure(v.timestamp, int(v.value))
            for v in obj.values
            if isinstance(v.value, int | float) and v.unit == "s"
        )

    @property
    def mbus(self) -> tuple[MbusDevice, ...]:
        """The M-Bus sub-meters, by channel (objects ``0-n:...`` with n >= 1)."""
        channels = sorted({o.obis.b for o in self.objects if o.obis.a == 0 and o.obis.b > 0})
        devices = []
        for n in channels:
            objs = [o for o in self.objects if o.obis.a == 0 and o.obis.b == n]
            kind = next((o for o in objs if o.obis[2:5] == (24, 1, 0)), None)
            ids = [v.value for o in objs if o.obis[2:4] == (96, 1) for v in o.values]
            device_id = next((i for i in ids if isinstance(i, str) and i.strip("0 ")), None)
            device_type = kind.values[0].value if kind is not None and kind.values else None
            devices.append(
                MbusDevice(
                    channel=n,
                    device_type=device_type if isinstance(device_type, int) else None,
                    equipment_id=device_id,
                    values=tuple(v for o in objs if o.obis[2] == 24 for v in o.values if v.obis[3] in (2, 3)),
                )
            )
        return tuple(devices)


# ------------------------------------------------------------------------------------------ parsing


def _text_kind(obis: Obis) -> str | None:
    """How an object that is text even when it looks like a number is written (ids keep leading zeros).

    ``plain`` for version numbers and old serial numbers, ``hex`` where DSMR 4+ hex-encodes ASCII
    (equipment ids, messages, logical device name: decoded when the result is printable), else None.
    """
    c, d, e = obis.c, obis.d, obis.e
    if (c, d) in ((0, 0), (0, 2)) or (c, d, e) == (96, 1, 4):
        return "plain"
    if (c == 96 and d in (1, 13)) or (c, d) == (42, 0):
        return "hex"
    return None


def _channel(obis: Obis) -> int | None:
    return obis.b if obis.a == 0 and obis.b > 0 else None


def _single(obis: Obis, text: str, tz: tzinfo) -> DsmrValue:
    channel = _channel(obis)
    kind = _text_kind(obis)
    if kind is not None:
        decoded = decode_hex_text(text) if kind == "hex" else None
        return DsmrValue(obis, decoded or text, channel=channel)
    stamp = parse_timestamp(text, tz)
    if stamp is not None:
        return DsmrValue(obis, stamp.isoformat(), timestamp=stamp, channel=channel)
    quantity = parse_quantity(text)
    if quantity is not None:
        return DsmrValue(obis, quantity[0], quantity[1], channel=channel)
    return DsmrValue(obis, decode_hex_text(text) or text, channel=channel)


def _sequence(obis: Obis, fields: list[str], tz: tzinfo) -> Iterator[DsmrValue]:
    """Fields in order: a timestamp stamps the values after it; OBIS codes (capture objects) are skipped."""
    stamp: datetime | None = None
    for text in fields:
        parsed = parse_timestamp(text, tz)
        if parsed is not None or _STAMP_SHAPE.fullmatch(text):
            stamp = parsed  # an invalid clock (Fluvius sends 632525252525W) unstamps what follows
            continue
        if _OBIS_FIELD.fullmatch(text):
            continue
        quantity = parse_quantity(text)
        if quantity is not None:
            yield DsmrValue(obis, quantity[0], quantity[1], stamp, _channel(obis))
        else:
            yield DsmrValue(obis, decode_hex_text(text) or text, None, stamp, _channel(obis))


def _buffer(obis: Obis, fields: list[str], tz: tzinfo) -> Iterator[DsmrValue] | None:
    """``(count)(capture OBIS)...(entries)``: the profile buffers; None when the fields are not one."""
    if not fields[0].isdigit() or len(fields) < 2 or not _OBIS_FIELD.fullmatch(fields[1]):
        return None
    count = int(fields[0])
    header = 1
    while header < len(fields) and _OBIS_FIELD.fullmatch(fields[header]):
        header += 1
    rest = fields[header:]
    if count == 0:
        return iter(()) if not rest else None
    if len(rest) < count or len(rest) % count:  # the count never drives the work: the fields do
        return None
    width = len(rest) // count
    return (v for i in range(count) for v in _sequence(obis, rest[i * width : (i + 1) * width], tz))


def _values(obis: Obis, fields: list[str], tz: tzinfo) -> tuple[DsmrValue, ...]:
    if len(fields) == 1:
        return (_single(obis, fields[0], tz),)
    if obis[2:5] == (24, 3, 0) and len(fields) >= 7:
        # v2.2/v3 gas: (capture time)(..)(..)(..)(capture object)(unit) then the value on the next line.
        stamp = parse_timestamp(fields[0], tz, require_flag=False)
        quantity = parse_quantity(f"{fields[-1]}*{fields[5]}" if fields[5] else fields[-1])
        if quantity is not None:
            return (DsmrValue(obis, quantity[0], quantity[1], stamp, _channel(obis)),)
    buffered = _buffer(obis, fields, tz)
    return tuple(buffered if buffered is not None else _sequence(obis, fields, tz))


def _header(line: bytes) -> tuple[str, str, str]:
    text = line.decode("latin-1").rstrip("\r")
    ident = text[4:]
    if ident[:1] == "\\" and len(ident) > 1:  # IEC 62056-21 enhanced identification, e.g. "\2"
        ident = ident[2:]
    return text, text[:3], ident


def _objects(body: str, tz: tzinfo) -> tuple[list[CosemObject], list[str]]:
    objects: list[tuple[Obis, list[str]]] = []
    unparsed: list[str] = []
    for raw in body.split("\n"):
        line = raw.strip()
        if not line:
            continue
        if line.startswith("(") and objects and _CONTINUATION.fullmatch(line):
            objects[-1][1].extend(_FIELD.findall(line))  # continuation line (v2.2/v3 gas value)
            continue
        match = _LINE.fullmatch(line)
        if match is None:
            unparsed.append(line)
            continue
        try:
            obis = Obis.parse(match.group(1))
        except DecodeError:
            unparsed.append(line)
            continue
        objects.append((obis, _FIELD.findall(match.group(2))))
    return [CosemObject(o, tuple(f), _values(o, f, tz)) for o, f in objects], unparsed


def _start(data: bytes) -> int:
    pos = 3 if data.startswith(b"\xef\xbb\xbf") else 0
    while pos < len(data) and data[pos] in b" \t\r\n\x00":
        pos += 1
    if data[pos : pos + 1] != b"/":
        raise TelegramError("a telegram starts with '/'", pos)
    return pos


def parse_telegram(data: bytes, *, check_crc: bool = True, tz: tzinfo = DEFAULT_TZ) -> DsmrTelegram:
    """Parse one telegram (leading whitespace and anything after the CRC line are ignored).

    Raises :class:`TelegramError` for broken framing and, with ``check_crc``, :class:`CrcError` for a
    CRC that does not match or is missing from a telegram that declares DSMR 4 or later. With
    ``check_crc=False`` the telegram is returned anyway and ``crc_ok`` says whether it matched.
    """
    data = bytes(data)
    start = _start(data)
    header_end = data.find(b"\n", start)
    bang = data.find(b"\n!", start)
    if header_end < 0 or bang < 0:
        raise TelegramError("no '!' line ending the telegram", len(data))
    bang += 1
    if bang - start > MAX_TELEGRAM_BYTES:
        raise TelegramError(f"telegram longer than {MAX_TELEGRAM_BYTES} bytes", start)
    if header_end < bang and data.find(b"\n/", header_end, bang) >= 0:
        raise TelegramError("a second '/' header before the '!': truncated telegram", start)
    crc_match = _CRC.match(data, bang + 1)
    received = int(crc_match.group(), 16) if crc_match else None
    header, manufacturer, ident = _header(data[start + 1 : header_end])
    objects, unparsed = _objects(data[header_end + 1 : bang].decode("latin-1"), tz)
    telegram = DsmrTelegram(header, manufacturer, ident, tuple(objects), received, None, tuple(unparsed))
    if received is None:
        version = telegram.version
        if check_crc and version is not None and version[:1].isdigit() and version[0] >= "4":
            raise CrcError(f"DSMR {version} telegram without CRC", expected=None, received=None)
        return telegram
    expected = crc16_arc(data[start : bang + 1])
    if check_crc and expected != received:
        raise CrcError(
            f"CRC {received:04X} does not match {expected:04X}", expected=expected, received=received
        )
    return DsmrTelegram(
        header, manufacturer, ident, tuple(objects), received, expected == received, tuple(unparsed)
    )
