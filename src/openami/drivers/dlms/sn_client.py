"""Asynchronous DLMS client for short-name (SN) meters: the TCP wrapper, or any carrier DlmsClient has.

Legacy meters (and many built to IS 15959) only accept the SN application context: objects are reached
by 16-bit short names learnt from the Association SN object_list, and services are Read/Write instead of
GET/SET/ACTION. Everything below the services is the same as for LN meters, so this client *composes* a
:class:`~openami.drivers.dlms.client.DlmsClient` for the transport, the association exchange, the
time-outs and the translation of failures into driver errors, and only adds the SN services on top
(:meth:`SnClient.over` puts it on a DlmsClient built for HDLC over TCP or a serial line). It relies on
that client's ``_exchange`` (send one APDU, await the answer) and ``_edge`` (map stack and transport
failures to driver errors, dropping the connection); making those two public would let this module stop
reaching into them.

Methods are invoked by writing their argument to the method's short name (Write), or, when a return
value is wanted, by reading it with parameterized access selector 0 (Read).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from types import TracebackType
from typing import Final

from openami.drivers.dlms.client import DlmsClient
from openami.drivers.dlms.errors import DlmsAccessError, DlmsProtocolError
from openami.protocols.dlms.acse import ConfirmedServiceError
from openami.protocols.dlms.association import (
    ASSOCIATION_SN_BASE_NAME,
    ClientAssociation,
    NextRequest,
)
from openami.protocols.dlms.axdr import (
    CosemDateTime,
    Data,
    DataType,
    datetime_octets,
    encode_datetime,
    parse_datetime,
    table_rows,
)
from openami.protocols.dlms.cosem import short_name, short_name_of_method
from openami.protocols.dlms.errors import DecodeError
from openami.protocols.dlms.obis import Obis
from openami.protocols.dlms.sn_services import (
    ObjectListEntry,
    ParameterizedAccess,
    ReadRequest,
    ReadResponse,
    SnApdu,
    VariableAccess,
    VariableName,
    WriteRequest,
    WriteResponse,
    parameterized,
)
from openami.protocols.dlms.xdlms import (
    CaptureObject,
    DataAccessResult,
    ExceptionResponse,
    RangeDescriptor,
    SelectiveAccess,
)

__all__ = ["SnClient"]

CLOCK: Final = Obis(0, 0, 1, 0, 0, 255)
_CLOCK_CLASS, _DISCONNECT_CLASS = 8, 70
_CLOCK_COLUMN: Final = CaptureObject(_CLOCK_CLASS, CLOCK, 2)
_ONE_SECOND: Final = timedelta(seconds=1)
_INVOKE_SELECTOR: Final = 0
_REMOTE_DISCONNECT, _REMOTE_RECONNECT = 1, 2


class SnClient:
    """One session with one SN meter: ``async with SnClient(host, port, association) as meter: ...``.

    ``association`` must be a ``ClientAssociation(..., short_names=True)`` (lowest security or LLS,
    optionally glo-ciphered); it is used once. Names are short names (ints); :meth:`read_object_list`
    gives them per logical name, and :attr:`objects` keeps the last list read.
    """

    def __init__(
        self,
        host: str,
        port: int,
        association: ClientAssociation,
        *,
        timeout: float = 10.0,
        connect_timeout: float | None = None,
    ) -> None:
        self._attach(DlmsClient(host, port, association, timeout=timeout, connect_timeout=connect_timeout))

    @classmethod
    def over(cls, link: DlmsClient) -> SnClient:
        """An SN session carried by ``link`` (e.g. ``DlmsClient.hdlc_tcp(...)`` or ``DlmsClient.serial(...)``
        built with a ``short_names=True`` association), which must not be opened yet."""
        client = cls.__new__(cls)
        client._attach(link)
        return client

    def _attach(self, link: DlmsClient) -> None:
        if not link.association.short_names:
            raise ValueError("SnClient needs a ClientAssociation(short_names=True)")
        self.association = link.association
        self.link = link
        self.objects: dict[Obis, ObjectListEntry] = {}

    async def __aenter__(self) -> SnClient:
        await self.open()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def open(self) -> None:
        """Connect and associate (SN context, as the association proposes)."""
        await self.link.open()

    async def close(self) -> None:
        """Release the association (best effort) and close."""
        await self.link.close()

    async def _call(self, apdu: SnApdu, what: str, *, tables: bool = False) -> SnApdu:
        """One confirmed SN service, data blocks included; refusals of the whole request raised."""
        assoc, link = self.association, self.link
        with link._edge(what):
            outcome = assoc.handle_sn(await link._exchange(assoc.request_sn(apdu)), tables=tables)
            while isinstance(outcome, NextRequest):
                outcome = assoc.handle_sn(await link._exchange(outcome.raw), tables=tables)
        answer = outcome.apdu
        if isinstance(answer, ExceptionResponse):
            raise DlmsProtocolError(
                f"{what}: meter refused: {answer.state_error.name}, {answer.service_error.name}"
            )
        if isinstance(answer, ConfirmedServiceError):
            raise DlmsProtocolError(f"{what}: meter refused: confirmed-service-error {answer}")
        return answer

    def _mismatch(self, what: str, answer: object) -> DlmsProtocolError:
        # Without invoke ids, an answer that does not fit means the pairing is lost: drop the connection.
        self.link._drop()
        return DlmsProtocolError(f"{what}: unexpected answer {type(answer).__name__}")

    # ------------------------------------------------------------------------------------- services

    async def read_many(
        self, names: Sequence[int | VariableAccess], *, tables: bool = False
    ) -> list[Data | DataAccessResult]:
        """Read several names in one request (multiple references); a result per name, in order."""
        items = tuple(VariableName(n) if isinstance(n, int) else n for n in names)
        what = f"READ {', '.join(_describe(i) for i in items)}"
        answer = await self._call(ReadRequest(items), what, tables=tables)
        if not isinstance(answer, ReadResponse) or len(answer.results) != len(items):
            raise self._mismatch(what, answer)
        results: list[Data | DataAccessResult] = []
        for result in answer.results:
            if not isinstance(result, Data | DataAccessResult):
                raise self._mismatch(what, result)
            results.append(result)
        return results

    async def read(self, name: int | VariableAccess, *, tables: bool = False) -> Data:
        """The value at one short name (or parameterized access); :class:`DlmsAccessError` if refused."""
        (result,) = await self.read_many([name], tables=tables)
        if isinstance(result, DataAccessResult):
            what = _describe(VariableName(name) if isinstance(name, int) else name)
            raise DlmsAccessError(f"READ {what}: {result.name}", result.name)
        return result

    async def read_selective(self, name: int, access: SelectiveAccess, *, tables: bool = False) -> Data:
        """Selective access (range, entry) on the attribute at ``name``, by parameterized access."""
        return await self.read(parameterized(name, access), tables=tables)

    async def write(self, name: int, value: Data) -> None:
        """Write ``value`` to ``name``; :class:`DlmsAccessError` when the meter refuses it."""
        what = f"WRITE {name:#06x}"
        answer = await self._call(WriteRequest((VariableName(name),), (value,)), what)
        if not isinstance(answer, WriteResponse) or len(answer.results) != 1:
            raise self._mismatch(what, answer)
        (result,) = answer.results
        if result is not DataAccessResult.SUCCESS:
            name_of = result.name if isinstance(result, DataAccessResult) else "block-number"
            raise DlmsAccessError(f"{what}: {name_of}", name_of)

    async def invoke(
        self, method_name: int, params: Data | None = None, *, with_return: bool = False
    ) -> Data | None:
        """Invoke the method at short name ``method_name``: by Write, or by Read (parameterized access,
        selector 0) when ``with_return`` asks for its return value. ``params`` None sends null-data."""
        argument = params if params is not None else Data.null()
        if with_return:
            return await self.read(ParameterizedAccess(method_name, _INVOKE_SELECTOR, argument))
        await self.write(method_name, argument)
        return None

    # ----------------------------------------------------------------------------------- objects

    async def read_object_list(
        self, association_base: int = ASSOCIATION_SN_BASE_NAME
    ) -> list[ObjectListEntry]:
        """The Association SN object_list: every object's base name, class, version and logical name."""
        value = await self.read(short_name(association_base, 2))
        if value.type != DataType.ARRAY or not isinstance(value.value, tuple):
            raise DlmsProtocolError(f"object_list is not an array: {value.type.name}")
        try:
            entries = [ObjectListEntry.from_data(item) for item in value.value]
        except DecodeError as exc:
            raise DlmsProtocolError(f"object_list: {exc}") from exc
        self.objects = {entry.logical_name: entry for entry in entries}
        return entries

    def base_name(self, obis: Obis) -> int:
        """The base name of ``obis`` from the last object list read (KeyError when it is not there)."""
        return self.objects[obis].base_name

    async def get_clock(self, base_name: int) -> datetime:
        """The time of the clock object at ``base_name`` (attribute 2), aware when the meter says so."""
        value = await self.read(short_name(base_name, 2))
        ts = _datetime_of(value.value)
        if ts is None:
            raise DlmsProtocolError(f"clock value is not a usable date-time: {value}")
        return ts

    async def set_clock(self, base_name: int, dt: datetime) -> None:
        """Set the clock at ``base_name``; ``dt`` must be aware."""
        if dt.tzinfo is None:
            raise ValueError("set_clock needs an aware datetime")
        value = Data.octet_string(encode_datetime(CosemDateTime.from_datetime(dt)))
        await self.write(short_name(base_name, 2), value)

    async def read_register(self, base_name: int) -> tuple[object, int, int]:
        """(raw value, scaler, unit) of the Register at ``base_name``: value and scaler_unit in one Read."""
        value, scaler_unit = await self.read_many([short_name(base_name, 2), short_name(base_name, 3)])
        if isinstance(value, DataAccessResult):
            raise DlmsAccessError(f"register {base_name:#06x} value: {value.name}", value.name)
        if isinstance(scaler_unit, DataAccessResult):
            raise DlmsAccessError(
                f"register {base_name:#06x} scaler_unit: {scaler_unit.name}", scaler_unit.name
            )
        fields = scaler_unit.value
        if scaler_unit.type != DataType.STRUCTURE or not isinstance(fields, tuple) or len(fields) != 2:
            raise DlmsProtocolError(f"{base_name:#06x}: scaler_unit is not a structure of two: {scaler_unit}")
        scaler, unit = fields[0].value, fields[1].value
        if not isinstance(scaler, int) or not isinstance(unit, int):
            raise DlmsProtocolError(f"{base_name:#06x}: scaler_unit holds {scaler!r}, {unit!r}")
        return value.value, scaler, unit

    async def read_profile(
        self, base_name: int, start: datetime, end: datetime, *, clock: CaptureObject = _CLOCK_COLUMN
    ) -> list[tuple[object, ...]]:
        """Rows of the profile generic at ``base_name`` captured in [start, end), by range on ``clock``.

        As for LN, ``end - 1 s`` is sent because the meter's range is inclusive at both ends. The first
        column is returned as a datetime, the others as plain values.
        """
        if start.tzinfo is None or end.tzinfo is None:
            raise ValueError("read_profile needs aware datetimes")
        access = RangeDescriptor(
            clock,
            Data.octet_string(datetime_octets(start)),
            Data.octet_string(datetime_octets(end - _ONE_SECOND)),
        )
        buffer = await self.read_selective(short_name(base_name, 2), access, tables=True)
        table = table_rows(buffer)
        if table is not None:
            rows = table.rows
        elif buffer.type == DataType.ARRAY and isinstance(buffer.value, tuple):
            rows = tuple(_row_values(row) for row in buffer.value)
        else:
            raise DlmsProtocolError(f"profile {base_name:#06x}: buffer is not an array: {buffer.type.name}")
        out: list[tuple[object, ...]] = []
        for row in rows:
            ts = _datetime_of(row[0]) if row else None
            if ts is None:
                raise DlmsProtocolError(f"profile {base_name:#06x}: row without a usable time")
            out.append((ts, *row[1:]))
        return out

    async def disconnect(self, base_name: int) -> None:
        """remote_disconnect of the disconnect control at ``base_name``."""
        await self.invoke(
            short_name_of_method(base_name, _DISCONNECT_CLASS, _REMOTE_DISCONNECT), Data.int8(0)
        )

    async def reconnect(self, base_name: int) -> None:
        """remote_reconnect of the disconnect control at ``base_name``."""
        await self.invoke(short_name_of_method(base_name, _DISCONNECT_CLASS, _REMOTE_RECONNECT), Data.int8(0))


def _describe(item: VariableAccess) -> str:
    name = getattr(item, "name", None)
    return f"{name:#06x}" if isinstance(name, int) else type(item).__name__


def _row_values(row: Data) -> tuple[object, ...]:
    if row.type != DataType.STRUCTURE or not isinstance(row.value, tuple):
        raise DlmsProtocolError("profile row is not a structure")
    return tuple(column.value for column in row.value)


def _datetime_of(raw: object) -> datetime | None:
    """A date-time from a 12-byte octet-string or a decoded date-time value."""
    if isinstance(raw, bytes) and len(raw) == 12:
        return parse_datetime(raw).to_datetime()
    if isinstance(raw, CosemDateTime):
        return raw.to_datetime()
    return None
