"""The configuration objects of a simulated DLMS meter: load limiter, push setup, activity calendar and
security setup (IEC 62056-6-2 classes 71, 40, 20 and 64).

They exist so that the head-end's configuration commands and key rotation are tested against a meter
over a real socket rather than against the head-end's own idea of the encoding. Each object keeps its
attributes as the :class:`~openami.protocols.dlms.axdr.Data` last written, checks what is written for
the shape the Blue Book gives it (a wrong shape is ``type-unmatched``, as a meter answers), and only the
attributes a head-end configures are writable.

- **Limiter** 0-0:17.0.0.255 monitors the import power 1-0:1.7.0 (double-long-unsigned, W), so its
  thresholds (attributes 3 active, 4 normal, 5 emergency) are double-long-unsigned too.
- **Push setup** 0-1:25.9.0.255: attribute 3 send_destination_and_method, a structure of transport
  service (enum: 0 TCP, 1 UDP, ...), destination (octet-string, ``host:port`` for TCP/UDP) and message
  (enum: 0 A-XDR encoded xDLMS APDU, 1 XML).
- **Activity calendar** 0-0:13.0.0.255: the passive calendar (6 name, 7 seasons, 8 weeks, 9 days) is
  written, then either method 1 activate_passive_calendar copies it onto the active one (2..5) at once,
  or attribute 10 activate_passive_calendar_time names when it does; the meter copies it the first time
  it is asked anything at or after that time (its clock is simulated, so lazily is exact enough).
- **Security setup** 0-0:43.0.1.255 (the management client's): method 2 global_key_transfer takes an
  array of (key_id, key_wrapped) where key_id is 0 global unicast encryption key, 1 global broadcast
  encryption key, 2 authentication key, 3 master key (KEK), and key_wrapped is the new key wrapped with
  the current master key (AES key wrap, RFC 3394). The new keys take effect with the *next*
  association, as on a real meter: the one carrying the transfer stays on the keys it was opened with.
  A transfer that does not unwrap changes no key at all (all or nothing).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Final

from cryptography.hazmat.primitives.keywrap import InvalidUnwrap, aes_key_unwrap

from openami.protocols.dlms.axdr import Data, DataType, parse_datetime
from openami.protocols.dlms.errors import DecodeError
from openami.protocols.dlms.obis import Obis
from openami.protocols.dlms.xdlms import ActionResult, CosemAttribute, DataAccessResult

__all__ = [
    "ACTIVITY_CALENDAR",
    "CALENDAR_CLASS",
    "KEY_AUTHENTICATION",
    "KEY_BROADCAST",
    "KEY_MASTER",
    "KEY_UNICAST",
    "LIMITER",
    "LIMITER_CLASS",
    "PUSH_SETUP",
    "PUSH_SETUP_CLASS",
    "SECURITY_SETUP",
    "SECURITY_SETUP_CLASS",
    "ConfigObjects",
]

LIMITER_CLASS, PUSH_SETUP_CLASS, CALENDAR_CLASS, SECURITY_SETUP_CLASS = 71, 40, 20, 64
LIMITER: Final = Obis(0, 0, 17, 0, 0, 255)
PUSH_SETUP: Final = Obis(0, 1, 25, 9, 0, 255)
ACTIVITY_CALENDAR: Final = Obis(0, 0, 13, 0, 0, 255)
SECURITY_SETUP: Final = Obis(0, 0, 43, 0, 1, 255)
KEY_UNICAST, KEY_BROADCAST, KEY_AUTHENTICATION, KEY_MASTER = 0, 1, 2, 3

_MONITORED: Final = Data.structure(
    Data.uint16(3), Data.octet_string(Obis(1, 0, 1, 7, 0, 255).to_bytes()), Data.int8(2)
)
_THRESHOLDS: Final = (3, 4, 5)
_PASSIVE: Final = range(6, 10)  # name, seasons, weeks, days
_ACTIVATION_TIME: Final = 10
_ACTIVATE_PASSIVE: Final = 1
_GLOBAL_KEY_TRANSFER: Final = 2
_NOT_SPECIFIED: Final = Data.octet_string(b"\xff\xff\xff\xff\xff\xff\xff\xff\xff\x80\x00\xff")
_KEY_LENGTH: Final = 16

InstallKey = Callable[[int, bytes], None]
"""What the meter does with an unwrapped key: (key_id, key)."""


def _octets(value: Data, size: int | None = None) -> bool:
    return (
        value.type == DataType.OCTET_STRING
        and isinstance(value.value, bytes)
        and (size is None or len(value.value) == size)
    )


def _fields(value: Data, *types: DataType) -> tuple[Data, ...] | None:
    """The items of a structure whose item types are ``types``, else None."""
    if value.type != DataType.STRUCTURE or not isinstance(value.value, tuple):
        return None
    items = value.value
    if len(items) != len(types) or any(item.type != t for item, t in zip(items, types, strict=True)):
        return None
    return items


def _array_of(value: Data, check: Callable[[Data], bool]) -> bool:
    return value.type == DataType.ARRAY and isinstance(value.value, tuple) and all(map(check, value.value))


def _season(value: Data) -> bool:
    items = _fields(value, DataType.OCTET_STRING, DataType.OCTET_STRING, DataType.OCTET_STRING)
    return items is not None and _octets(items[1], 12)


def _week(value: Data) -> bool:
    return _fields(value, DataType.OCTET_STRING, *(DataType.UNSIGNED,) * 7) is not None


def _action(value: Data) -> bool:
    items = _fields(value, DataType.OCTET_STRING, DataType.OCTET_STRING, DataType.LONG_UNSIGNED)
    return items is not None and _octets(items[0], 4) and _octets(items[1], 6)


def _day(value: Data) -> bool:
    items = _fields(value, DataType.UNSIGNED, DataType.ARRAY)
    return items is not None and _array_of(items[1], _action)


_PASSIVE_SHAPES: Final[dict[int, Callable[[Data], bool]]] = {
    6: _octets,
    7: lambda v: _array_of(v, _season),
    8: lambda v: _array_of(v, _week),
    9: lambda v: _array_of(v, _day),
}


def _destination(value: Data) -> bool:
    return _fields(value, DataType.ENUM, DataType.OCTET_STRING, DataType.ENUM) is not None


class ConfigObjects:
    """The four objects of one meter. ``clock`` is the meter's time (activation of the passive calendar),
    ``master_key`` its KEK (None: key transfer is refused), ``install`` what takes unwrapped keys."""

    def __init__(self, clock: Callable[[], datetime], master_key: bytes | None, install: InstallKey) -> None:
        self._clock = clock
        self.master_key = master_key
        self._install = install
        empty = Data.array()
        self.attributes: dict[tuple[int, int], Data] = {
            (LIMITER_CLASS, 2): _MONITORED,
            **{(LIMITER_CLASS, index): Data.uint32(0xFFFFFFFF) for index in _THRESHOLDS},
            (LIMITER_CLASS, 6): Data.uint32(60),
            (LIMITER_CLASS, 7): Data.uint32(60),
            (LIMITER_CLASS, 10): Data.boolean(False),
            (PUSH_SETUP_CLASS, 2): empty,
            (PUSH_SETUP_CLASS, 3): Data.structure(Data.enum(0), Data.octet_string(b""), Data.enum(0)),
            (PUSH_SETUP_CLASS, 4): empty,
            (PUSH_SETUP_CLASS, 5): Data.uint16(0),
            (PUSH_SETUP_CLASS, 6): Data.uint8(3),
            (PUSH_SETUP_CLASS, 7): Data.uint16(60),
            **{(CALENDAR_CLASS, index): Data.octet_string(b"") for index in (2, 6)},
            **{(CALENDAR_CLASS, index): empty for index in (3, 4, 5, 7, 8, 9)},
            (CALENDAR_CLASS, _ACTIVATION_TIME): _NOT_SPECIFIED,
            (SECURITY_SETUP_CLASS, 2): Data.enum(3),  # authenticated and encrypted
            (SECURITY_SETUP_CLASS, 3): Data.enum(0),  # suite 0: AES-GCM-128
        }
        self._writable: dict[tuple[int, int], Callable[[Data], bool]] = {
            **{
                (LIMITER_CLASS, index): lambda v: v.type == DataType.DOUBLE_LONG_UNSIGNED
                for index in _THRESHOLDS
            },
            (PUSH_SETUP_CLASS, 3): _destination,
            **{(CALENDAR_CLASS, index): shape for index, shape in _PASSIVE_SHAPES.items()},
            (CALENDAR_CLASS, _ACTIVATION_TIME): lambda v: _octets(v, 12),
        }
        self._objects = {
            LIMITER_CLASS: LIMITER,
            PUSH_SETUP_CLASS: PUSH_SETUP,
            CALENDAR_CLASS: ACTIVITY_CALENDAR,
            SECURITY_SETUP_CLASS: SECURITY_SETUP,
        }

    def owns(self, class_id: int, obis: Obis) -> bool:
        return self._objects.get(class_id) == obis

    def get(self, attribute: CosemAttribute) -> Data | None:
        """The attribute's value, None when it is not one of these objects'."""
        if not self.owns(attribute.class_id, attribute.obis):
            return None
        if attribute.attribute == 1:
            return Data.octet_string(attribute.obis.to_bytes())
        self._activate_when_due()
        return self.attributes.get((attribute.class_id, attribute.attribute))

    def set(self, attribute: CosemAttribute, value: Data) -> DataAccessResult:
        key = (attribute.class_id, attribute.attribute)
        shape = self._writable.get(key)
        if shape is None:
            known = key in self.attributes or attribute.attribute == 1
            return DataAccessResult.READ_WRITE_DENIED if known else DataAccessResult.OBJECT_UNDEFINED
        if not shape(value):
            return DataAccessResult.TYPE_UNMATCHED
        self._activate_when_due()
        self.attributes[key] = value
        return DataAccessResult.SUCCESS

    def action(self, class_id: int, method: int, params: Data | None) -> ActionResult:
        if class_id == CALENDAR_CLASS and method == _ACTIVATE_PASSIVE:
            self._activate()
            return ActionResult.SUCCESS
        if class_id == SECURITY_SETUP_CLASS and method == _GLOBAL_KEY_TRANSFER:
            return self._key_transfer(params)
        return ActionResult.OBJECT_UNAVAILABLE

    def _activate(self) -> None:
        for passive in _PASSIVE:
            self.attributes[CALENDAR_CLASS, passive - 4] = self.attributes[CALENDAR_CLASS, passive]
        self.attributes[CALENDAR_CLASS, _ACTIVATION_TIME] = _NOT_SPECIFIED

    def _activate_when_due(self) -> None:
        raw = self.attributes[CALENDAR_CLASS, _ACTIVATION_TIME].value
        assert isinstance(raw, bytes)
        try:
            due = parse_datetime(raw).to_datetime()
        except DecodeError:
            return
        if due is not None and due.tzinfo is not None and self._clock() >= due:
            self._activate()

    def _key_transfer(self, params: Data | None) -> ActionResult:
        if self.master_key is None:
            return ActionResult.READ_WRITE_DENIED
        items = params.value if params is not None and params.type == DataType.ARRAY else None
        if not isinstance(items, tuple):
            return ActionResult.TYPE_UNMATCHED
        keys: list[tuple[int, bytes]] = []
        for item in items:
            fields = _fields(item, DataType.ENUM, DataType.OCTET_STRING)
            if fields is None or not isinstance(fields[1].value, bytes):
                return ActionResult.TYPE_UNMATCHED
            key_id, wrapped = fields[0].value, fields[1].value
            if key_id not in (KEY_UNICAST, KEY_AUTHENTICATION, KEY_MASTER):
                return ActionResult.OBJECT_UNAVAILABLE
            try:
                key = aes_key_unwrap(self.master_key, wrapped)
            except (InvalidUnwrap, ValueError):
                return ActionResult.OTHER_REASON
            if len(key) != _KEY_LENGTH:
                return ActionResult.TYPE_UNMATCHED
            keys.append((int(key_id), key))
        for key_id, key in keys:
            if key_id == KEY_MASTER:
                self.master_key = key
            self._install(key_id, key)
        return ActionResult.SUCCESS
