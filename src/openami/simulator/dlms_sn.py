"""A short-name (SN) view of a simulated meter, so SN clients can be tested against the same meters.

Why a view and not a second meter: what an SN meter holds is the same object model, only reached by
16-bit short names instead of (class, OBIS, attribute). :class:`SnMeterView` gives each object a base
name, derives its attributes' and methods' short names from the class tables of
:mod:`~openami.protocols.dlms.cosem`, serves the Association SN object (base name 0xFA00: logical name
and object_list) itself and turns every other Read/Write into
:meth:`SimulatedMeter.get <openami.simulator.dlms_meter.SimulatedMeter.get>`, ``set`` or ``action``. The
clock, the registers, the load profile (selective access by range through parameterized access) and the
disconnect control (methods invoked by Write or Read on their short names) behave exactly as over LN.

:class:`SnMeterSession` has the interface of :class:`~openami.simulator.dlms_meter.MeterSession`
(``handle(client_sap, apdu) -> reply``), with one difference: an UnconfirmedWrite has no reply, which
it returns as empty bytes. To serve it from :class:`~openami.simulator.dlms_server.DlmsSimulator`, the
server needs a per-meter session factory (``meter.session()`` today) and must not send an empty reply.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final

from openami.protocols.dlms.acse import AARQ_TAG
from openami.protocols.dlms.association import (
    ASSOCIATION_SN_BASE_NAME,
    MANAGEMENT_CLIENT,
    Reply,
    ServerAssociation,
)
from openami.protocols.dlms.axdr import Data
from openami.protocols.dlms.cosem import CLASSES, short_name, short_name_of_method
from openami.protocols.dlms.errors import DecodeError
from openami.protocols.dlms.obis import Obis
from openami.protocols.dlms.sn_services import (
    ObjectListEntry,
    ParameterizedAccess,
    ReadRequest,
    ReadResponse,
    VariableAccess,
    VariableName,
    WriteRequest,
    WriteResponse,
    selective_access,
)
from openami.protocols.dlms.xdlms import (
    ActionRequestNormal,
    ActionResult,
    CosemAttribute,
    CosemMethod,
    DataAccessResult,
    ExceptionResponse,
    ExceptionServiceError,
    ExceptionStateError,
    SelectiveAccess,
    encode_xdlms,
)
from openami.simulator.dlms_meter import (
    CLOCK,
    DEVICE_NAME,
    DISCONNECT_CONTROL,
    EXPORT_ENERGY,
    IMPORT_ENERGY,
    IMPORT_POWER,
    LOAD_PROFILE,
    PROFILE_STATUS,
    SimulatedMeter,
)

__all__ = ["ASSOCIATION_SN", "SN_OBJECTS", "SnMeterSession", "SnMeterView", "SnObject"]

ASSOCIATION_SN: Final = Obis(0, 0, 40, 0, 0, 255)
"""Logical name of the current association object (class 12 here)."""
_ASSOCIATION_SN_CLASS: Final = 12
_LOGICAL_NAME, _OBJECT_LIST = 1, 2
_INVOKE_SELECTOR: Final = 0
_CHALLENGE_BYTES: Final = 16


@dataclass(frozen=True, slots=True)
class SnObject:
    """An object as an SN client sees it: base name, interface class and logical name."""

    base_name: int
    class_id: int
    obis: Obis


SN_OBJECTS: Final = (
    SnObject(ASSOCIATION_SN_BASE_NAME, _ASSOCIATION_SN_CLASS, ASSOCIATION_SN),
    SnObject(0x1000, 1, DEVICE_NAME),
    SnObject(0x1100, 8, CLOCK),
    SnObject(0x1200, 3, IMPORT_ENERGY),
    SnObject(0x1300, 3, EXPORT_ENERGY),
    SnObject(0x1400, 3, IMPORT_POWER),
    SnObject(0x1500, 1, PROFILE_STATUS),
    SnObject(0x1600, 7, LOAD_PROFILE),
    SnObject(0x1700, 70, DISCONNECT_CONTROL),
)
"""The simulated meter's objects with their base names (0x100 apart: room for every class's methods)."""


@dataclass(frozen=True, slots=True)
class _Target:
    obj: SnObject
    attribute: int = 0
    method: int = 0


def _action_to_access(result: ActionResult) -> DataAccessResult:
    """A method invoked by Read/Write reports through the data-access-result codes (same numbers)."""
    try:
        return DataAccessResult(int(result))
    except ValueError:
        return DataAccessResult.OTHER_REASON


class SnMeterView:
    """Short names over a :class:`SimulatedMeter`: Read and Write items in, results out."""

    def __init__(self, meter: SimulatedMeter, objects: Sequence[SnObject] = SN_OBJECTS) -> None:
        self.meter = meter
        self.objects = tuple(objects)
        self._names: dict[int, _Target] = {}
        for obj in self.objects:
            ic = CLASSES[obj.class_id]
            for spec in ic.attributes:
                self._add(short_name(obj.base_name, spec.index), _Target(obj, attribute=spec.index))
            if ic.first_method_offset is not None:
                for method in ic.methods:
                    name = short_name_of_method(obj.base_name, obj.class_id, method.index)
                    self._add(name, _Target(obj, method=method.index))

    def _add(self, name: int, target: _Target) -> None:
        if name in self._names:
            raise ValueError(
                f"short name {name:#06x} of {target.obj.obis} is already {self._names[name].obj.obis}"
            )
        self._names[name] = target

    def object_list(self) -> Data:
        """Attribute 2 of the association: one {base_name, class_id, version, logical_name} per object."""
        return Data.array(
            *(
                ObjectListEntry(
                    obj.base_name, obj.class_id, CLASSES[obj.class_id].version, obj.obis
                ).to_data()
                for obj in self.objects
            )
        )

    def read(self, item: VariableAccess, may_write: bool) -> Data | DataAccessResult:
        """One Read item: an attribute (selective access by parameterized access) or a method invoked
        with parameterized access selector 0 (``may_write`` clients only)."""
        if not isinstance(item, VariableName | ParameterizedAccess):
            return DataAccessResult.OBJECT_UNAVAILABLE
        target = self._names.get(item.name)
        if target is None:
            return DataAccessResult.OBJECT_UNDEFINED
        if target.method:
            if not isinstance(item, ParameterizedAccess) or item.selector != _INVOKE_SELECTOR:
                return DataAccessResult.OBJECT_UNAVAILABLE
            result = self._invoke(target, item.parameters, may_write)
            return Data.null() if result is DataAccessResult.SUCCESS else result
        access: SelectiveAccess | None = None
        if isinstance(item, ParameterizedAccess) and item.selector != _INVOKE_SELECTOR:
            try:
                access = selective_access(item)
            except DecodeError:
                return DataAccessResult.TYPE_UNMATCHED
        obj = target.obj
        if obj.class_id == _ASSOCIATION_SN_CLASS:
            if access is not None:
                return DataAccessResult.OBJECT_UNAVAILABLE
            if target.attribute == _LOGICAL_NAME:
                return Data.octet_string(obj.obis.to_bytes())
            if target.attribute == _OBJECT_LIST:
                return self.object_list()
            return DataAccessResult.OBJECT_UNAVAILABLE
        return self.meter.get(CosemAttribute(obj.class_id, obj.obis, target.attribute), access)

    def write(self, item: VariableAccess, value: Data, may_write: bool) -> DataAccessResult:
        """One Write item: an attribute, or a method invoked with ``value`` as its argument."""
        if not isinstance(item, VariableName):
            return DataAccessResult.OBJECT_UNAVAILABLE
        target = self._names.get(item.name)
        if target is None:
            return DataAccessResult.OBJECT_UNDEFINED
        if target.method:
            return self._invoke(target, value, may_write)
        if not may_write or target.obj.class_id == _ASSOCIATION_SN_CLASS:
            return DataAccessResult.READ_WRITE_DENIED
        obj = target.obj
        return self.meter.set(CosemAttribute(obj.class_id, obj.obis, target.attribute), value)

    def _invoke(self, target: _Target, argument: Data, may_write: bool) -> DataAccessResult:
        if not may_write:
            return DataAccessResult.READ_WRITE_DENIED
        method = CosemMethod(target.obj.class_id, target.obj.obis, target.method)
        return _action_to_access(self.meter.action(ActionRequestNormal(0, method, argument)))


class SnMeterSession:
    """One connection to an SN meter, sans-IO: APDU bytes in, APDU bytes out (empty: no answer).

    As for LN, a connection may carry one association per client SAP, the public client (16) reads with
    lowest security and only the management client (1, LLS) may write or invoke methods.
    """

    def __init__(
        self,
        meter: SimulatedMeter,
        view: SnMeterView | None = None,
        random_bytes: Callable[[int], bytes] = os.urandom,
    ) -> None:
        self.meter = meter
        self.view = view or SnMeterView(meter)
        self._random = random_bytes
        self._associations: dict[int, ServerAssociation] = {}

    def handle(self, client_sap: int, raw: bytes) -> bytes:
        meter = self.meter
        if raw[:1] == bytes((AARQ_TAG,)):
            self._associations[client_sap] = opened = meter.server_association(client_sap, short_names=True)
            return opened.handle_aarq(raw, self._random(_CHALLENGE_BYTES))
        association = self._associations.get(client_sap)
        if association is None:
            refusal = ExceptionResponse(
                ExceptionStateError.SERVICE_NOT_ALLOWED, ExceptionServiceError.OPERATION_NOT_POSSIBLE
            )
            return encode_xdlms(refusal)
        received = association.receive_sn(raw)
        if isinstance(received, Reply):
            if association.released:
                del self._associations[client_sap]
            return received.raw
        apdu, may_write, view = received.apdu, client_sap == MANAGEMENT_CLIENT, self.view
        if isinstance(apdu, ReadRequest):
            return association.respond_sn(
                ReadResponse(tuple(view.read(item, may_write) for item in apdu.items))
            )
        results = self._write(apdu.items, apdu.values, may_write)
        if isinstance(apdu, WriteRequest):
            return association.respond_sn(WriteResponse(results))
        return b""  # UnconfirmedWrite: done, and never answered

    def _write(
        self, items: tuple[VariableAccess, ...], values: tuple[Data, ...], may_write: bool
    ) -> tuple[DataAccessResult, ...]:
        if len(items) != len(values):
            return (DataAccessResult.OTHER_REASON,) * len(items)
        return tuple(
            self.view.write(item, value, may_write) for item, value in zip(items, values, strict=True)
        )
