"""Turn a pushed :class:`~openami.protocols.dlms.apdu.DataNotification` into named meter values.

The DLMS standard fixes the envelope of a push but not the shape of its body: every meter family
(and often every firmware) lays its values out differently. Rather than one ladder of special cases,
each known layout is a *recogniser*: a function that either claims the body, returning
``(OBIS, value, scaler_unit | None)`` entries, or returns ``None``. :data:`RECOGNISERS` tries them in
order; the first claim wins. Adding a meter family means adding one function to that table.

Layouts recognised (the shapes are in the shared corpora under ``dlms/amshan`` and ``dlms/scs``):

``push_object_list``
    IDIS push (L+G E360/E450, Iskra AM550, ...): a structure whose first element is the push-setup's
    *push object list*, an array of ``{class_id, logical_name, attribute_id, data_index}``
    descriptors, one per element of the structure (the first describes the list itself). A register's
    ``scaler_unit`` (attribute 3) is used when the push list carries it.
``obis_value_list``
    Aidon style: an array of ``{OBIS octet-string, value[, {scaler, unit}]}`` structures.
``inline_obis``
    Kaifa/Kamstrup style: one flat structure ``[list-id,] OBIS, value, OBIS, value, ...``; null
    elements between pairs (Kamstrup pads with them) are skipped.

Bodies that match none of these (proprietary blobs, positional lists without OBIS codes such as
Kaifa's short lists) yield a :class:`Notification` with no values rather than a guess.

Units: a ``scaler_unit`` sent by the meter (or given by the caller through ``scalers``, e.g. read
once from attribute 3 of each register at commissioning) is applied. Otherwise the number is the raw
register value and the unit comes from :func:`default_unit`, which knows only the electricity
quantities whose unit is fixed by the OBIS code itself (see there); the scaler is then the meter's
business, and the raw value is what it sent.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from types import MappingProxyType
from typing import Final

from openami.protocols.dlms.apdu import DataNotification, EventNotification
from openami.protocols.dlms.axdr import (
    BitString,
    CompactArray,
    CosemDate,
    CosemDateTime,
    CosemTime,
    Data,
    DataType,
    parse_datetime,
)
from openami.protocols.dlms.errors import DecodeError
from openami.protocols.dlms.obis import Obis
from openami.protocols.dlms.units import ScalerUnit

__all__ = [
    "RECOGNISERS",
    "Notification",
    "NotifiedValue",
    "default_unit",
    "interpret",
    "interpret_event",
    "jsonable",
]

JsonValue = None | bool | int | float | str | list["JsonValue"] | dict[str, "JsonValue"]


@dataclass(frozen=True)
class NotifiedValue:
    """One value of a push: ``value`` is scaled and in ``unit``; ``raw`` is the A-XDR ``Data`` as sent."""

    obis: Obis
    value: int | float | str | None
    unit: str | None
    raw: object

    def to_dict(self) -> dict[str, JsonValue]:
        """JSON-ready form: OBIS dotted, ``raw`` with bytes as hex."""
        return {"obis": self.obis.dotted, "value": self.value, "unit": self.unit, "raw": jsonable(self.raw)}


@dataclass(frozen=True)
class Notification:
    """The meter values of one push, with the meter's id and the time they apply to (when it says)."""

    meter_id: str | None
    timestamp: datetime | None
    values: list[NotifiedValue]

    def to_dict(self) -> dict[str, JsonValue]:
        """JSON-ready form; the timestamp as ISO-8601 (with offset when the meter gave its deviation)."""
        return {
            "meter_id": self.meter_id,
            "timestamp": None if self.timestamp is None else self.timestamp.isoformat(),
            "values": [v.to_dict() for v in self.values],
        }


# ----------------------------------------------------------------------------------- JSON rendering


def _jsonable_cosem(value: CosemDateTime | CosemDate | CosemTime) -> JsonValue:
    if isinstance(value, CosemDateTime):
        dt = value.to_datetime()
        if dt is not None:
            return dt.isoformat()
    return {k: jsonable(v) for k, v in dataclasses.asdict(value).items()}


def jsonable(value: object) -> JsonValue:
    """A JSON-serialisable rendering of a decoded value: bytes as hex, ``Data`` as its plain value."""
    if isinstance(value, Data):
        return jsonable(value.value)
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).hex()
    if isinstance(value, tuple | list):
        return [jsonable(item) for item in value]
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, BitString):
        return value.bits
    if isinstance(value, CompactArray):
        return [jsonable(item) for item in value.values]
    if isinstance(value, CosemDateTime | CosemDate | CosemTime):
        return _jsonable_cosem(value)
    return repr(value)


# -------------------------------------------------------------------------------------------- units

_RATE_D: Final = frozenset({4, 5, 6, 7})  # current average, last average, maximum, instantaneous value
_INTEGRAL_D: Final = frozenset({8, 9, 10, 29})  # time integrals (energy registers)

#: Electricity (A=1) quantity C -> (unit of a rate/instantaneous value, unit of its time integral).
#: Only quantities whose unit follows from the OBIS code alone: active power (Σ, per phase, and the
#: import/export quadrant sums), reactive power (incl. quadrants 5-8), apparent power, current, voltage
#: and frequency. Power factor (13, 33, 53, 73) is unitless and is deliberately absent.
_ELECTRICITY_UNITS: Final[MappingProxyType[int, tuple[str | None, str | None]]] = MappingProxyType(
    {
        **dict.fromkeys((1, 2, 15, 16, 21, 22, 41, 42, 61, 62), ("W", "Wh")),
        **dict.fromkeys((3, 4, 5, 6, 7, 8, 23, 24, 43, 44, 63, 64), ("var", "varh")),
        **dict.fromkeys((9, 10, 29, 30, 49, 50, 69, 70), ("VA", "VAh")),
        **dict.fromkeys((11, 31, 51, 71, 91), ("A", "Ah")),
        **dict.fromkeys((12, 32, 52, 72), ("V", None)),
        14: ("Hz", None),
    }
)


def default_unit(obis: Obis) -> str | None:
    """The unit an electricity register with this OBIS code is counted in, when the code fixes it.

    Used only when the meter sends no ``scaler_unit``: the unit is then certain but the scaler is not
    (a Kaifa sends current in mA, a Kamstrup in cA), so the value stays as sent.
    """
    if obis.a != 1:
        return None
    units = _ELECTRICITY_UNITS.get(obis.c)
    if units is None:
        return None
    if obis.d in _RATE_D:
        return units[0]
    if obis.d in _INTEGRAL_D:
        return units[1]
    return None


# ----------------------------------------------------------------------------------- value helpers

_INTEGER_TYPES: Final = frozenset(
    {
        DataType.INTEGER,
        DataType.LONG,
        DataType.DOUBLE_LONG,
        DataType.LONG64,
        DataType.UNSIGNED,
        DataType.LONG_UNSIGNED,
        DataType.DOUBLE_LONG_UNSIGNED,
        DataType.LONG64_UNSIGNED,
        DataType.ENUM,
    }
)
_NUMERIC_TYPES: Final = _INTEGER_TYPES | {DataType.FLOAT32, DataType.FLOAT64}
_TEXT_TYPES: Final = frozenset({DataType.VISIBLE_STRING, DataType.UTF8_STRING})
_OBIS_LENGTH: Final = 6
_DATE_TIME_LENGTH: Final = 12
_MAX_OBIS_A: Final = 15  # value groups A are 0 (abstract) .. 15 (other media)


def _items(data: Data, *types: DataType) -> Sequence[Data] | None:
    if data.type in types and isinstance(data.value, tuple):
        return data.value
    return None


def _int(data: Data) -> int | None:
    if data.type in _INTEGER_TYPES and isinstance(data.value, int):
        return data.value
    return None


def _obis(data: Data) -> Obis | None:
    """The OBIS code in a 6-byte octet-string (logical names are always sent that way)."""
    octets = data.value if data.type is DataType.OCTET_STRING else None
    if isinstance(octets, bytes) and len(octets) == _OBIS_LENGTH:
        return Obis.from_bytes(octets)
    return None


def _inline_obis_code(data: Data) -> Obis | None:
    """Like :func:`_obis` but also plausible as one (group A in range) when nothing says it is one."""
    obis = _obis(data)
    return obis if obis is not None and obis.a <= _MAX_OBIS_A else None


def _scaler_unit(data: Data) -> ScalerUnit | None:
    """A ``scaler_unit`` structure ``{integer scaler, enum unit}``."""
    items = _items(data, DataType.STRUCTURE)
    if items is None or len(items) != 2:
        return None
    scaler, unit = _int(items[0]), _int(items[1])
    if scaler is None or unit is None:
        return None
    return ScalerUnit(scaler, unit)


def _datetime_in(data: Data) -> CosemDateTime | None:
    """The date-time in a DATE_TIME value or in a 12-byte octet-string (how pushes carry the clock)."""
    if isinstance(data.value, CosemDateTime):
        return data.value
    octets = data.value if data.type is DataType.OCTET_STRING else None
    if isinstance(octets, bytes) and len(octets) == _DATE_TIME_LENGTH:
        try:
            return parse_datetime(octets)
        except DecodeError:
            return None
    return None


def _octets_value(raw: bytes, obis: Obis) -> str | None:
    """Octet-strings are text (ids), a date-time (clock objects) or opaque bytes (shown as hex)."""
    if _is_clock(obis):
        when = _datetime_in(Data(DataType.OCTET_STRING, raw))
        if when is not None:
            dt = when.to_datetime()
            return None if dt is None else dt.isoformat()
    if raw and all(0x20 <= b < 0x7F for b in raw):
        return raw.decode("ascii")
    return raw.hex()


def _plain(obis: Obis, data: Data, scaler: ScalerUnit | None) -> tuple[int | float | str | None, str | None]:
    """(value, unit) for one pushed value; numbers scaled when a scaler_unit is known."""
    v = data.value
    if data.type in _NUMERIC_TYPES and isinstance(v, int | float) and not isinstance(v, bool):
        if scaler is not None:
            return scaler.apply(v), scaler.symbol
        return v, default_unit(obis)
    if isinstance(v, bool):
        return int(v), None
    if data.type in _TEXT_TYPES and isinstance(v, str):
        return v, None
    if isinstance(v, bytes):
        return _octets_value(v, obis), None
    if isinstance(v, CosemDateTime):
        dt = v.to_datetime()
        return (None if dt is None else dt.isoformat()), None
    if isinstance(v, BitString):
        return v.bits, None
    return None, None


# ------------------------------------------------------------------------------------- recognisers

_Entry = tuple[Obis, Data, ScalerUnit | None]
Recogniser = Callable[[Data], list[_Entry] | None]

_PUSH_SETUP_CLASS: Final = 40
#: Interface class -> (attributes that hold a measured/identifying value, attribute holding scaler_unit).
#: Data (1), Register (3), Extended register (4), Demand register (5: current and last average), Clock (8).
#: Other classes and attributes in a push list (e.g. the push setup's own logical name) are not values.
_VALUE_ATTRIBUTES: Final[MappingProxyType[int, tuple[frozenset[int], int | None]]] = MappingProxyType(
    {
        1: (frozenset({2}), None),
        3: (frozenset({2}), 3),
        4: (frozenset({2}), 3),
        5: (frozenset({2, 3}), 4),
        8: (frozenset({2}), None),
    }
)


def _descriptor(data: Data) -> tuple[int, Obis, int] | None:
    """A push-list entry ``{class_id, logical_name, attribute_id[, data_index]}``."""
    items = _items(data, DataType.STRUCTURE)
    if items is None or len(items) not in (3, 4):
        return None
    class_id, obis, attribute = _int(items[0]), _obis(items[1]), _int(items[2])
    if class_id is None or obis is None or attribute is None:
        return None
    return class_id, obis, attribute


def _push_object_list(body: Data) -> list[_Entry] | None:
    """IDIS push: the first element describes every element (itself included, or only those after it)."""
    items = _items(body, DataType.STRUCTURE)
    if not items:
        return None
    entries = _items(items[0], DataType.ARRAY)
    if entries is None:
        return None
    descriptors = [_descriptor(d) for d in entries]
    if not descriptors or any(d is None for d in descriptors):
        return None
    if len(descriptors) == len(items):
        values = items
    elif len(descriptors) == len(items) - 1:
        values = items[1:]
    else:
        return None
    pairs = [(d, v) for d, v in zip(descriptors, values, strict=True) if d is not None]
    scalers: dict[Obis, ScalerUnit] = {}
    for (class_id, obis, attribute), value in pairs:
        spec = _VALUE_ATTRIBUTES.get(class_id)
        if spec is not None and spec[1] == attribute and (su := _scaler_unit(value)) is not None:
            scalers[obis] = su
    result: list[_Entry] = []
    for (class_id, obis, attribute), value in pairs:
        spec = _VALUE_ATTRIBUTES.get(class_id)
        if class_id != _PUSH_SETUP_CLASS and spec is not None and attribute in spec[0]:
            result.append((obis, value, scalers.get(obis)))
    return result


def _obis_value_list(body: Data) -> list[_Entry] | None:
    """Aidon: every element is ``{OBIS, value}`` or ``{OBIS, value, {scaler, unit}}``."""
    items = _items(body, DataType.ARRAY, DataType.STRUCTURE)
    if not items:
        return None
    result: list[_Entry] = []
    for item in items:
        fields = _items(item, DataType.STRUCTURE)
        if fields is None or len(fields) not in (2, 3):
            return None
        obis = _obis(fields[0])
        if obis is None:
            return None
        scaler = None
        if len(fields) == 3:
            scaler = _scaler_unit(fields[2])
            if scaler is None:
                return None
        result.append((obis, fields[1], scaler))
    return result


def _inline_obis(body: Data) -> list[_Entry] | None:
    """Kaifa/Kamstrup: ``[list-id,] OBIS, value, OBIS, value ...`` with optional null padding.

    Elements before the first OBIS code (the list id) are skipped; after it, everything must be an
    (OBIS, value) pair or null-data, otherwise the body is not of this layout.
    """
    items = _items(body, DataType.STRUCTURE)
    if not items:
        return None
    i = next((k for k, item in enumerate(items) if _inline_obis_code(item) is not None), len(items))
    result: list[_Entry] = []
    while i < len(items):
        if items[i].type is DataType.NULL_DATA:
            i += 1
            continue
        obis = _inline_obis_code(items[i])
        if obis is None or i + 1 >= len(items):
            return None
        result.append((obis, items[i + 1], None))
        i += 2
    return result or None


#: Tried in order; the first that claims the body decides. Stricter layouts come first.
RECOGNISERS: Final[tuple[Recogniser, ...]] = (_push_object_list, _obis_value_list, _inline_obis)


# ------------------------------------------------------------------------------- identity and time

#: Where the meter's own id may be, best first: device ID 1 (0-0:96.1.0), the COSEM logical device name
#: (0-0:42.0.0, e.g. "LGZ1030655933512"), device ID 2 (0-0:96.1.1), Kamstrup's meter number (1-1:0.0.5).
_METER_ID_OBIS: Final = (
    Obis(0, 0, 96, 1, 0, 255),
    Obis(0, 0, 42, 0, 0, 255),
    Obis(0, 0, 96, 1, 1, 255),
    Obis(1, 1, 0, 0, 5, 255),
)

#: Clock objects, matched on (A, C, D, E) with any channel B: 0-b:1.0.0 (clock) and 1-b:0.9.1 (local time).
_CLOCK_ACDE: Final = frozenset({(0, 1, 0, 0), (1, 0, 9, 1)})


def _is_clock(obis: Obis) -> bool:
    return (obis.a, obis.c, obis.d, obis.e) in _CLOCK_ACDE


def _meter_id(values: Sequence[NotifiedValue]) -> str | None:
    by_obis = {v.obis: v.value for v in values if isinstance(v.value, str) and v.value}
    return next((by_obis[o] for o in _METER_ID_OBIS if o in by_obis), None)


def _body_clock(entries: Sequence[_Entry]) -> datetime | None:
    for obis, data, _ in entries:
        if _is_clock(obis) and (when := _datetime_in(data)) is not None:
            dt = when.to_datetime()
            if dt is not None:
                return dt
    return None


def _values(entries: Sequence[_Entry], scalers: Mapping[Obis, ScalerUnit]) -> list[NotifiedValue]:
    result = []
    for obis, data, scaler in entries:
        value, unit = _plain(obis, data, scaler or scalers.get(obis))
        result.append(NotifiedValue(obis, value, unit, data))
    return result


def interpret(
    notification: DataNotification, *, scalers: Mapping[Obis, ScalerUnit] | None = None
) -> Notification:
    """The meter values of a data-notification (none when the body's layout is unknown).

    ``scalers`` supplies a register's ``scaler_unit`` when the push does not carry it (read it once
    from attribute 3 of the register); a scaler sent in the push wins. The timestamp is the meter's
    clock value in the body when there is one, because that is when the values were captured; the
    notification header's date-time (when the message was built, sometimes a second later) otherwise.
    """
    entries: list[_Entry] = []
    for recognise in RECOGNISERS:
        claimed = recognise(notification.body)
        if claimed is not None:
            entries = claimed
            break
    values = _values(entries, scalers or {})
    timestamp = _body_clock(entries)
    if timestamp is None and notification.datetime is not None:
        timestamp = notification.datetime.to_datetime()
    return Notification(meter_id=_meter_id(values), timestamp=timestamp, values=values)


def interpret_event(
    event: EventNotification, *, scalers: Mapping[Obis, ScalerUnit] | None = None
) -> Notification:
    """An event-notification as a one-value notification (no meter id: the event does not carry one)."""
    value, unit = _plain(event.obis, event.value, (scalers or {}).get(event.obis))
    timestamp = None if event.time is None else event.time.to_datetime()
    return Notification(None, timestamp, [NotifiedValue(event.obis, value, unit, event.value)])
