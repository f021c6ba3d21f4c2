"""xDLMS APDUs (IEC 62056-5-3): for now only the unsolicited ones a push receiver needs.

* ``data-notification`` (tag 0x0F): ``long-invoke-id-and-priority`` (4 bytes), ``date-time``
  (an octet-string of 0 or 12 bytes), ``notification-body`` (one A-XDR ``Data``). Meters disagree on
  how the date-time is written, so all three forms seen in the field are accepted: ``00`` (empty,
  i.e. absent), ``0C`` + 12 bytes (the length-prefixed form the standard describes) and ``09 0C`` +
  12 bytes (with a redundant octet-string tag, as Kaifa meters send it).
* ``event-notification-request`` (tag 0xC2): an OPTIONAL time, a cosem-attribute-descriptor and the
  attribute value; what a meter sends when it reports a single attribute change.

Parsing is bounded by the APDU length and A-XDR's own limits; every failure is a
:class:`~openami.protocols.dlms.errors.DecodeError`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from types import MappingProxyType
from typing import Final

from openami.protocols.dlms.axdr import CosemDateTime, Data, DataType, decode_data_all, parse_datetime
from openami.protocols.dlms.errors import DecodeError
from openami.protocols.dlms.obis import Obis

__all__ = [
    "DATA_NOTIFICATION",
    "EVENT_NOTIFICATION_REQUEST",
    "DataNotification",
    "EventNotification",
    "decode_apdu",
]

DATA_NOTIFICATION: Final = 0x0F
EVENT_NOTIFICATION_REQUEST: Final = 0xC2

_DATE_TIME_LENGTH: Final = 12
_INVOKE_ID_MASK: Final = 0x00FF_FFFF
_PRIORITY_HIGH_BIT: Final = 0x8000_0000
_SERVICE_CLASS_CONFIRMED_BIT: Final = 0x4000_0000


@dataclass(frozen=True)
class DataNotification:
    """A pushed data-notification.

    ``long_invoke_id`` is the 24-bit invoke id; ``priority_high`` and ``confirmed`` are the priority
    and service-class bits of the same 32-bit field. ``datetime`` is the optional time the meter
    put in the header (it may have every field "not specified"; ``to_datetime()`` then gives None).
    """

    long_invoke_id: int
    priority_high: bool
    confirmed: bool
    datetime: CosemDateTime | None
    body: Data


@dataclass(frozen=True)
class EventNotification:
    """An event-notification-request: attribute ``attribute_id`` of ``class_id``/``obis`` is ``value``."""

    time: CosemDateTime | None
    class_id: int
    obis: Obis
    attribute_id: int
    value: Data


class _Reader:
    """A cursor over one APDU that refuses to read past its end (the only bounds check needed)."""

    def __init__(self, apdu: bytes) -> None:
        self.buf = apdu
        self.pos = 1  # after the tag

    def take(self, n: int, what: str) -> bytes:
        if self.pos + n > len(self.buf):
            raise DecodeError(f"truncated {what}: need {n} bytes, have {len(self.buf) - self.pos}", self.pos)
        chunk = self.buf[self.pos : self.pos + n]
        self.pos += n
        return chunk

    def byte(self, what: str) -> int:
        return self.take(1, what)[0]

    def rest(self) -> bytes:
        return self.buf[self.pos :]


def _date_time_of(raw: bytes, offset: int) -> CosemDateTime:
    try:
        return parse_datetime(raw)
    except DecodeError as exc:
        raise DecodeError(f"bad date-time: {exc.reason}", offset) from None


def _notification_datetime(r: _Reader) -> CosemDateTime | None:
    """The header date-time in any of its three field forms (see the module docstring)."""
    start = r.pos
    first = r.byte("date-time")
    if first == 0:
        return None
    if first == DataType.OCTET_STRING:
        first = r.byte("date-time length")
    if first != _DATE_TIME_LENGTH:
        raise DecodeError(f"date-time of {first} bytes, expected 0 or {_DATE_TIME_LENGTH}", start)
    return _date_time_of(r.take(_DATE_TIME_LENGTH, "date-time"), start)


def _body(r: _Reader, what: str) -> Data:
    start = r.pos
    try:
        return decode_data_all(r.rest())
    except DecodeError as exc:
        offset = None if exc.offset is None else start + exc.offset
        raise DecodeError(f"bad {what}: {exc.reason}", offset) from None


def _data_notification(apdu: bytes) -> DataNotification:
    r = _Reader(apdu)
    invoke = int.from_bytes(r.take(4, "long-invoke-id-and-priority"), "big")
    when = _notification_datetime(r)
    return DataNotification(
        long_invoke_id=invoke & _INVOKE_ID_MASK,
        priority_high=bool(invoke & _PRIORITY_HIGH_BIT),
        confirmed=bool(invoke & _SERVICE_CLASS_CONFIRMED_BIT),
        datetime=when,
        body=_body(r, "notification body"),
    )


def _event_notification(apdu: bytes) -> EventNotification:
    r = _Reader(apdu)
    when: CosemDateTime | None = None
    start = r.pos
    present = r.byte("time presence flag")
    if present not in (0, 1):
        raise DecodeError(f"OPTIONAL flag must be 0 or 1, got 0x{present:02X}", start)
    if present:
        length = r.byte("time length")
        raw = r.take(length, "time")
        if length != _DATE_TIME_LENGTH:
            raise DecodeError(f"time of {length} bytes, expected {_DATE_TIME_LENGTH}", start)
        when = _date_time_of(raw, start)
    class_id = int.from_bytes(r.take(2, "class id"), "big")
    obis = Obis.from_bytes(r.take(6, "instance id"))
    attribute_id = int.from_bytes(r.take(1, "attribute id"), "big", signed=True)
    return EventNotification(when, class_id, obis, attribute_id, _body(r, "attribute value"))


_DECODERS: Final[MappingProxyType[int, Callable[[bytes], DataNotification | EventNotification]]] = (
    MappingProxyType({DATA_NOTIFICATION: _data_notification, EVENT_NOTIFICATION_REQUEST: _event_notification})
)


def decode_apdu(apdu: bytes) -> DataNotification | EventNotification:
    """Decode one unciphered, reassembled APDU; :class:`DecodeError` for any other tag or broken content."""
    if not apdu:
        raise DecodeError("empty APDU", 0)
    decoder = _DECODERS.get(apdu[0])
    if decoder is None:
        raise DecodeError(f"unsupported APDU tag 0x{apdu[0]:02X} (want 0x0F data-notification or 0xC2)", 0)
    return decoder(bytes(apdu))
