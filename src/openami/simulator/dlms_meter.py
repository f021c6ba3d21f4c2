"""Simulated DLMS/COSEM electricity meters served over TCP (IEC 62056-47 wrapper).

Each :class:`SimulatedMeter` answers GET/SET/ACTION on a small IDIS-like object model whose readings come
from :class:`~openami.simulator.consumption.ConsumptionModel`: the load profile is computed on demand for
whatever range is asked (no storage, the same rows on every run), so a HES can back-fill or read
incrementally against thousands of meters as cheaply as against one. Serving them over sockets is
:mod:`openami.simulator.dlms_server`. The association rules (public
client 16 read-only with lowest security, management client 1 with LLS or HLS-GMAC and optional
ciphering) are those of :class:`~openami.protocols.dlms.association.ServerAssociation`.
The event logs are :mod:`openami.simulator.dlms_events`, the image transfer (firmware upgrade)
:mod:`openami.simulator.dlms_image`, the load limiter, push setup, activity calendar and security setup
(key transfer) :mod:`openami.simulator.dlms_config_objects`; the meter only routes their attributes and
methods.

Values are what the model gives, in Wh (scaler 0): registers are the model's cumulative counts, the
profile's 1-0:1.7.0 column is the average power of the quarter hour ending at the row's time, and
export (2.8.0) stays 0 because the model describes households without generation. Date-times go out in
UTC (deviation 0) as 12-byte octet-strings, the usual encoding of clock attributes.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from itertools import count
from typing import Final

from openami.protocols.dlms.acse import AARQ_TAG
from openami.protocols.dlms.association import (
    MANAGEMENT_CLIENT,
    Reply,
    ServerAssociation,
)
from openami.protocols.dlms.axdr import (
    Column,
    CosemDateTime,
    Data,
    DataType,
    Table,
    datetime_octets,
    parse_datetime,
)
from openami.protocols.dlms.obis import Obis
from openami.protocols.dlms.security import InvocationCounterGuard
from openami.protocols.dlms.xdlms import (
    ActionRequestNormal,
    ActionResponseNormal,
    ActionResult,
    CaptureObject,
    CosemAttribute,
    DataAccessResult,
    ExceptionResponse,
    ExceptionServiceError,
    ExceptionStateError,
    GetRequestNormal,
    GetRequestWithList,
    GetResponseNormal,
    GetResponseWithList,
    GetResult,
    RangeDescriptor,
    SelectiveAccess,
    SetRequestNormal,
    SetResponseNormal,
    XdlmsApdu,
    encode_xdlms,
)
from openami.simulator.consumption import EPOCH_START, INTERVAL_S, ConsumptionModel
from openami.simulator.dlms_config_objects import (
    KEY_AUTHENTICATION,
    KEY_MASTER,
    KEY_UNICAST,
    ConfigObjects,
)
from openami.simulator.dlms_events import EventLogs
from openami.simulator.dlms_image import IMAGE_CLASS, IMAGE_TRANSFER, ImageTransfer, block_size_for

__all__ = [
    "CLOCK",
    "DEVICE_NAME",
    "DISCONNECT_CONTROL",
    "EXPORT_ENERGY",
    "IMPORT_ENERGY",
    "IMPORT_POWER",
    "LOAD_PROFILE",
    "PROFILE_COLUMNS",
    "PROFILE_STATUS",
    "MeterKeys",
    "MeterSession",
    "SimulatedMeter",
]

DEVICE_NAME: Final = Obis(0, 0, 42, 0, 0, 255)
CLOCK: Final = Obis(0, 0, 1, 0, 0, 255)
IMPORT_ENERGY: Final = Obis(1, 0, 1, 8, 0, 255)
EXPORT_ENERGY: Final = Obis(1, 0, 2, 8, 0, 255)
IMPORT_POWER: Final = Obis(1, 0, 1, 7, 0, 255)
PROFILE_STATUS: Final = Obis(0, 0, 96, 10, 1, 255)
LOAD_PROFILE: Final = Obis(1, 0, 99, 1, 0, 255)
DISCONNECT_CONTROL: Final = Obis(0, 0, 96, 3, 10, 255)

_DATA, _REGISTER, _PROFILE, _CLOCK, _DISCONNECT = 1, 3, 7, 8, 70
PROFILE_COLUMNS: Final = (
    CaptureObject(_CLOCK, CLOCK, 2),
    CaptureObject(_REGISTER, IMPORT_ENERGY, 2),
    CaptureObject(_REGISTER, EXPORT_ENERGY, 2),
    CaptureObject(_REGISTER, IMPORT_POWER, 2),
    CaptureObject(_DATA, PROFILE_STATUS, 2),
)
"""Capture objects of the load profile, in column order."""
_PROFILE_TABLE: Final = (
    Column(DataType.OCTET_STRING, 12),
    Column(DataType.DOUBLE_LONG_UNSIGNED),
    Column(DataType.DOUBLE_LONG_UNSIGNED),
    Column(DataType.DOUBLE_LONG_UNSIGNED),
    Column(DataType.UNSIGNED),
)
"""The buffer's row shape: the clock as a 12-byte octet-string, +A and -A in Wh, P in W, status."""

_UNIT_WH, _UNIT_W = 30, 27
PROFILE_DEPTH: Final = 96 * 90
"""Rows the load profile buffer holds (90 days); older rows are gone, as on a real meter."""
_PERIOD = timedelta(seconds=INTERVAL_S)
_POWER_FACTOR = 3600 // INTERVAL_S  # Wh in a quarter hour -> average W
_CHALLENGE_BYTES = 16

# Disconnect control (class 70): control_state values and the method numbers.
_DISCONNECTED, _CONNECTED = 0, 1
_REMOTE_DISCONNECT, _REMOTE_RECONNECT = 1, 2

_Getter = Callable[[SelectiveAccess | None], GetResult]


@dataclass(frozen=True, slots=True)
class MeterKeys:
    """A meter's secrets: the LLS password of client 1, the global unicast keys (suite 0) and the master
    key (KEK) that new keys come wrapped in (None: the meter takes no key transfer)."""

    password: bytes
    encryption_key: bytes
    authentication_key: bytes
    master_key: bytes | None = None

    @classmethod
    def demo(cls, serial: str) -> MeterKeys:
        """Keys derived from the serial, so a demo HES can compute them. Public: never use outside demos."""
        digest = hashlib.sha512(b"openami-dlms-demo:" + serial.encode()).digest()
        return cls(digest[:8].hex().encode(), digest[16:32], digest[32:48], digest[48:64])


def _floor(ts: datetime) -> datetime:
    """The quarter-hour boundary at or before ``ts``."""
    return ts - timedelta(seconds=(ts - EPOCH_START).total_seconds() % INTERVAL_S)


def _ceil(ts: datetime) -> datetime:
    floor = _floor(ts)
    return floor if floor == ts else floor + _PERIOD


def _datetime_octets(ts: datetime) -> bytes:
    return datetime_octets(ts.astimezone(UTC))


def _as_datetime(value: Data) -> datetime | None:
    """A date-time sent as octet-string or date-time tag; unspecified deviation is read as UTC."""
    if value.type == DataType.OCTET_STRING and isinstance(value.value, bytes) and len(value.value) == 12:
        cosem = parse_datetime(value.value)
    elif isinstance(value.value, CosemDateTime):
        cosem = value.value
    else:
        return None
    ts = cosem.to_datetime()
    if ts is None:
        return None
    return ts if ts.tzinfo is not None else ts.replace(tzinfo=UTC)


def _utcnow() -> datetime:
    return datetime.now(UTC)


class SimulatedMeter:
    """One meter: its object model, its simulated clock and its relay. Not tied to any connection.

    ``now`` is the real-time source (injectable for tests); the meter's clock is ``now()`` plus an
    offset that SET on the clock changes, so setting one meter's clock never moves another's.
    """

    def __init__(
        self,
        serial: str,
        system_title: bytes,
        keys: MeterKeys,
        seed: int,
        *,
        now: Callable[[], datetime] = _utcnow,
        max_pdu: int = 0xFFFF,
        strict_counters: bool = False,
    ) -> None:
        self.serial = serial
        self.system_title = system_title
        self.keys = keys
        self.model = ConsumptionModel("electricity", seed)
        self.max_pdu = max_pdu
        self.clock_offset = timedelta(0)
        self.relay_connected = True
        self._now = now
        self.events = EventLogs(seed, self.clock)
        self.image = ImageTransfer(block_size_for(max_pdu))
        self.config = ConfigObjects(self.clock, keys.master_key, self._install_key)
        # One counter for every association of this meter: a (key, title, IC) triple is never reused.
        self.invocation_counter: Iterator[int] = count(1)
        # strict_counters: remember clients' invocation counters across associations, as a real meter
        # does, so a head-end that starts every session at 1 is refused from its second session on.
        # Off by default: tests that open many short sessions with fresh associations would need to
        # carry counters over.
        self.client_counters = InvocationCounterGuard() if strict_counters else None
        self._getters: dict[tuple[int, Obis, int], _Getter] = {
            (_DATA, DEVICE_NAME, 2): lambda _: Data.octet_string(serial.encode()),
            (_CLOCK, CLOCK, 2): lambda _: Data.octet_string(_datetime_octets(self.clock())),
            (_CLOCK, CLOCK, 3): lambda _: Data.int16(0),
            (_REGISTER, IMPORT_ENERGY, 2): lambda _: Data.uint32(self.import_register(self.clock())),
            (_REGISTER, IMPORT_ENERGY, 3): lambda _: _scaler_unit(_UNIT_WH),
            (_REGISTER, EXPORT_ENERGY, 2): lambda _: Data.uint32(0),
            (_REGISTER, EXPORT_ENERGY, 3): lambda _: _scaler_unit(_UNIT_WH),
            (_REGISTER, IMPORT_POWER, 2): lambda _: Data.uint32(self.import_power(self.clock())),
            (_REGISTER, IMPORT_POWER, 3): lambda _: _scaler_unit(_UNIT_W),
            (_DATA, PROFILE_STATUS, 2): lambda _: Data.uint8(0),
            (_PROFILE, LOAD_PROFILE, 2): self._profile_buffer,
            (_PROFILE, LOAD_PROFILE, 3): lambda _: Data.array(*map(_capture_object, PROFILE_COLUMNS)),
            (_PROFILE, LOAD_PROFILE, 4): lambda _: Data.uint32(INTERVAL_S),
            (_PROFILE, LOAD_PROFILE, 8): lambda _: Data.uint32(PROFILE_DEPTH),
            (_DISCONNECT, DISCONNECT_CONTROL, 2): lambda _: Data.boolean(self.relay_connected),
            (_DISCONNECT, DISCONNECT_CONTROL, 3): lambda _: Data.enum(
                _CONNECTED if self.relay_connected else _DISCONNECTED
            ),
        }
        for class_id, obis in {(class_id, obis) for class_id, obis, _ in self._getters}:
            self._getters[class_id, obis, 1] = _constant(Data.octet_string(obis.to_bytes()))

    def clock(self) -> datetime:
        """The meter's own time (UTC)."""
        return self._now() + self.clock_offset

    def _install_key(self, key_id: int, key: bytes) -> None:
        """A key transferred by the security setup: associations opened from now on use it."""
        if key_id == KEY_UNICAST:
            self.keys = replace(self.keys, encryption_key=key)
        elif key_id == KEY_AUTHENTICATION:
            self.keys = replace(self.keys, authentication_key=key)
        elif key_id == KEY_MASTER:
            self.keys = replace(self.keys, master_key=key)

    def import_register(self, ts: datetime) -> int:
        """+A in Wh at ``ts``: the register at the last boundary plus the running quarter hour pro rata."""
        start = _floor(ts)
        register, (used,) = self.model.counts(start, start + _PERIOD)
        return register + used * int((ts - start).total_seconds()) // INTERVAL_S

    def import_power(self, ts: datetime) -> int:
        """Average power (W) of the running quarter hour."""
        start = _floor(ts)
        _, (used,) = self.model.counts(start, start + _PERIOD)
        return used * _POWER_FACTOR

    def profile_rows(self, start: datetime, end: datetime) -> list[tuple[datetime, int, int, int, int]]:
        """Rows whose capture time lies in [start, end], as (time, +A Wh, -A Wh, P W, status).

        Only rows the buffer would hold: captured already (not after the meter's clock), within
        :data:`PROFILE_DEPTH`, and one quarter hour after the model's epoch or later (a row closes an
        interval).
        """
        last_captured = _floor(self.clock())
        first = max(_ceil(start), last_captured - (PROFILE_DEPTH - 1) * _PERIOD, EPOCH_START + _PERIOD)
        last = min(_floor(end), last_captured)
        if last < first:
            return []
        register, used = self.model.counts(first - _PERIOD, last)
        rows = []
        ts = first
        for wh in used:
            register += wh
            rows.append((ts, register, 0, wh * _POWER_FACTOR, 0))
            ts += _PERIOD
        return rows

    def _profile_buffer(self, access: SelectiveAccess | None) -> GetResult:
        if access is None:
            start, end = EPOCH_START, self.clock()
        elif isinstance(access, RangeDescriptor) and access.restricting_object.obis == CLOCK:
            range_start, range_end = _as_datetime(access.from_value), _as_datetime(access.to_value)
            if range_start is None or range_end is None:
                return DataAccessResult.TYPE_UNMATCHED
            start, end = range_start, range_end
        else:
            return DataAccessResult.OBJECT_UNAVAILABLE
        if isinstance(access, RangeDescriptor) and access.selected_values:
            return DataAccessResult.OBJECT_UNAVAILABLE
        rows = tuple(
            (datetime_octets(ts), imp, exp, power, status)
            for ts, imp, exp, power, status in self.profile_rows(start, end)
        )
        return Data(DataType.ARRAY, Table(_PROFILE_TABLE, rows))

    def get(self, attribute: CosemAttribute, access: SelectiveAccess | None) -> GetResult:
        getter = self._getters.get((attribute.class_id, attribute.obis, attribute.attribute))
        if getter is None:
            found = self.events.get(attribute, access)
            if found is None:
                found = self.image.get(attribute)
            if found is None:
                found = self.config.get(attribute)
            return DataAccessResult.OBJECT_UNDEFINED if found is None else found
        return getter(access)

    def set(self, attribute: CosemAttribute, value: Data) -> DataAccessResult:
        """The clock time (moves this meter's clock offset, logged as events 4 and 5),
        image_transfer_enabled and the configuration objects' settings are writable."""
        if (attribute.class_id, attribute.obis) == (IMAGE_CLASS, IMAGE_TRANSFER):
            return self.image.set(attribute.attribute, value)
        if self.config.owns(attribute.class_id, attribute.obis):
            return self.config.set(attribute, value)
        if (attribute.class_id, attribute.obis, attribute.attribute) != (_CLOCK, CLOCK, 2):
            known = self.events.owns(attribute) or self.image.owns(attribute)
            if known or (attribute.class_id, attribute.obis, attribute.attribute) in self._getters:
                return DataAccessResult.READ_WRITE_DENIED
            return DataAccessResult.OBJECT_UNDEFINED
        ts = _as_datetime(value)
        if ts is None:
            return DataAccessResult.TYPE_UNMATCHED
        old = self.clock()
        self.clock_offset = ts - self._now()
        self.events.clock_adjusted(old, self.clock())
        return DataAccessResult.SUCCESS

    def action(self, request: ActionRequestNormal) -> ActionResult:
        """remote_disconnect (1) and remote_reconnect (2) of the disconnect control (a change of state is
        logged), the image transfer methods and those of the configuration objects."""
        method = request.method
        if (method.class_id, method.obis) == (IMAGE_CLASS, IMAGE_TRANSFER):
            return self.image.action(method.method, request.parameters)
        if self.config.owns(method.class_id, method.obis):
            return self.config.action(method.class_id, method.method, request.parameters)
        if (method.class_id, method.obis) != (_DISCONNECT, DISCONNECT_CONTROL):
            return ActionResult.OBJECT_UNDEFINED
        if method.method not in (_REMOTE_DISCONNECT, _REMOTE_RECONNECT):
            return ActionResult.OBJECT_UNAVAILABLE
        connected = method.method == _REMOTE_RECONNECT
        if connected != self.relay_connected:
            self.events.relay_switched(connected, self.clock())
        self.relay_connected = connected
        return ActionResult.SUCCESS

    def server_association(self, client_sap: int, *, short_names: bool = False) -> ServerAssociation:
        """A new association of this meter with ``client_sap``: its keys, its counters, its PDU size."""
        return ServerAssociation(
            client_sap,
            system_title=self.system_title,
            password=self.keys.password,
            encryption_key=self.keys.encryption_key,
            authentication_key=self.keys.authentication_key,
            invocation_counter=self.invocation_counter,
            max_pdu=self.max_pdu,
            short_names=short_names,
            guard=self.client_counters,
        )

    def session(self) -> MeterSession:
        """State for one TCP connection."""
        return MeterSession(self)


def _constant(value: Data) -> _Getter:
    return lambda _: value


def _scaler_unit(unit: int) -> Data:
    return Data.structure(Data.int8(0), Data.enum(unit))


def _capture_object(obj: CaptureObject) -> Data:
    return Data.structure(
        Data.uint16(obj.class_id),
        Data.octet_string(obj.obis.to_bytes()),
        Data.int8(obj.attribute),
        Data.uint16(obj.data_index),
    )


class MeterSession:
    """One connection to a meter, sans-IO: APDU bytes in, APDU bytes out.

    A connection may carry one association per client SAP; an AARQ replaces the previous association of
    its client. SET and ACTION need the management client: the public client reads only.
    """

    def __init__(self, meter: SimulatedMeter, random_bytes: Callable[[int], bytes] = os.urandom) -> None:
        self.meter = meter
        self._random = random_bytes
        self._associations: dict[int, ServerAssociation] = {}

    def handle(self, client_sap: int, raw: bytes) -> bytes:
        meter = self.meter
        if raw[:1] == bytes((AARQ_TAG,)):
            self._associations[client_sap] = opened = meter.server_association(client_sap)
            return opened.handle_aarq(raw, self._random(_CHALLENGE_BYTES))
        association = self._associations.get(client_sap)
        if association is None:
            refusal = ExceptionResponse(
                ExceptionStateError.SERVICE_NOT_ALLOWED, ExceptionServiceError.OPERATION_NOT_POSSIBLE
            )
            return encode_xdlms(refusal)
        received = association.receive(raw)
        if isinstance(received, Reply):
            if association.released:
                del self._associations[client_sap]
            return received.raw
        return association.respond(self._serve(received.apdu, client_sap == MANAGEMENT_CLIENT))

    def _serve(self, apdu: XdlmsApdu, may_write: bool) -> XdlmsApdu:
        meter = self.meter
        if isinstance(apdu, GetRequestNormal):
            return GetResponseNormal(apdu.invoke_id, meter.get(apdu.attribute, apdu.access))
        if isinstance(apdu, GetRequestWithList):
            results = tuple(meter.get(attribute, access) for attribute, access in apdu.items)
            return GetResponseWithList(apdu.invoke_id, results)
        if isinstance(apdu, SetRequestNormal):
            result = (
                meter.set(apdu.attribute, apdu.value) if may_write else DataAccessResult.READ_WRITE_DENIED
            )
            return SetResponseNormal(apdu.invoke_id, result)
        if isinstance(apdu, ActionRequestNormal):
            outcome = meter.action(apdu) if may_write else ActionResult.READ_WRITE_DENIED
            return ActionResponseNormal(apdu.invoke_id, outcome)
        return ExceptionResponse(
            ExceptionStateError.SERVICE_NOT_ALLOWED, ExceptionServiceError.SERVICE_NOT_SUPPORTED
        )
