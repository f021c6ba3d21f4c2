"""Asynchronous DLMS/COSEM client: the HES pull path, over the TCP wrapper, HDLC over TCP or a serial line.

The protocol work (association, ciphering, replay checks, datablocks) is the sans-IO
:class:`~openami.protocols.dlms.association.ClientAssociation`; this class only moves its bytes through a
:mod:`~openami.drivers.dlms.transport` (the IEC 62056-47 wrapper by default, HDLC with
:meth:`DlmsClient.hdlc_tcp` and :meth:`DlmsClient.serial`; either over a stream opened elsewhere with
:meth:`DlmsClient.wrapper_stream` and :meth:`DlmsClient.hdlc_stream`), bounds every wait by a time-out
and translates failures into the driver errors of :mod:`openami.drivers.dlms.errors`. A failed exchange
closes the connection: after a time-out or a broken frame, which answer belongs to which request can no
longer be known.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import struct
from collections.abc import Awaitable, Iterator
from datetime import datetime, timedelta, timezone, tzinfo
from types import TracebackType
from typing import Final

from openami.drivers.dlms.errors import (
    DlmsAccessError,
    DlmsAuthFailed,
    DlmsProtocolError,
    DlmsTimeout,
    DlmsUnreachable,
)
from openami.drivers.dlms.transport import (
    ByteReader,
    ByteWriter,
    HdlcTransport,
    Opener,
    Transport,
    WrapperStreamTransport,
    WrapperTransport,
    open_serial,
    serial_speed,
)
from openami.protocols.dlms.association import AuthenticationFailed, ClientAssociation, NextRequest
from openami.protocols.dlms.axdr import (
    Column,
    CosemDateTime,
    Data,
    DataType,
    Table,
    datetime_octets,
    encode_datetime,
    parse_datetime,
    table_rows,
)
from openami.protocols.dlms.errors import DlmsError
from openami.protocols.dlms.hdlc import HdlcAddress, HdlcParameters
from openami.protocols.dlms.hdlc_link import HdlcClientLink, LinkRefused
from openami.protocols.dlms.obis import Obis
from openami.protocols.dlms.xdlms import (
    ActionRequestNormal,
    ActionResponseNormal,
    ActionResult,
    CaptureObject,
    CosemAttribute,
    CosemMethod,
    DataAccessResult,
    ExceptionResponse,
    GetRequestNormal,
    GetResponseNormal,
    RangeDescriptor,
    SelectiveAccess,
    SetRequestNormal,
    SetResponseNormal,
    XdlmsApdu,
)

__all__ = ["CLOCK", "DISCONNECT_CONTROL", "DlmsClient"]

CLOCK: Final = Obis(0, 0, 1, 0, 0, 255)
DISCONNECT_CONTROL: Final = Obis(0, 0, 96, 3, 10, 255)
_CLOCK_CLASS, _REGISTER_CLASS, _PROFILE_CLASS, _DISCONNECT_CLASS = 8, 3, 7, 70
_CLOCK_TIME = CosemAttribute(_CLOCK_CLASS, CLOCK, 2)
_CLOCK_COLUMN = CaptureObject(_CLOCK_CLASS, CLOCK, 2)
_CLOCK_OCTETS = Column(DataType.OCTET_STRING, 12)
_CHALLENGE_BYTES: Final = 16
_ONE_SECOND: Final = timedelta(seconds=1)


class DlmsClient:
    """One session with one meter: ``async with DlmsClient(host, port, association) as meter: ...``.

    ``timeout`` bounds each wait for an answer (and the connect, unless ``connect_timeout`` is given).
    The association is used once: a new session needs a new :class:`ClientAssociation`. The constructor
    speaks the IEC 62056-47 wrapper over TCP; :meth:`hdlc_tcp` and :meth:`serial` build clients that speak
    HDLC, or pass any ``transport`` (``host`` and ``port`` are then only descriptive).
    """

    def __init__(
        self,
        host: str,
        port: int,
        association: ClientAssociation,
        *,
        timeout: float = 10.0,
        connect_timeout: float | None = None,
        transport: Transport | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.association = association
        self.timeout = timeout
        self.connect_timeout = timeout if connect_timeout is None else connect_timeout
        self.transport: Transport = transport or WrapperTransport(
            host, port, association.client_sap, association.server_sap
        )

    @classmethod
    def hdlc_tcp(
        cls,
        host: str,
        port: int,
        association: ClientAssociation,
        *,
        server_address: HdlcAddress | int,
        client_address: int | None = None,
        parameters: HdlcParameters | None = None,
        timeout: float = 10.0,
        connect_timeout: float | None = None,
        retries: int = 0,
    ) -> DlmsClient:
        """A session in HDLC frames over TCP, as terminal servers and concentrators pass them to a meter.

        ``server_address``: the meter's HDLC address, or its physical (lower) address alone, the logical
        (upper) one then being the association's server SAP. ``client_address`` defaults to the
        association's client SAP; ``parameters`` is the SNRM proposal (defaults: 128-byte frames, window 1).
        """
        link = _client_link(association, server_address, client_address, parameters)

        async def connect() -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
            return await asyncio.open_connection(host, port)

        transport = HdlcTransport(connect, link, f"{host}:{port}", retries=retries)
        return cls(
            host, port, association, timeout=timeout, connect_timeout=connect_timeout, transport=transport
        )

    @classmethod
    def serial(
        cls,
        path: str,
        association: ClientAssociation,
        *,
        server_address: HdlcAddress | int,
        baudrate: int = 9600,
        client_address: int | None = None,
        parameters: HdlcParameters | None = None,
        timeout: float = 10.0,
        connect_timeout: float | None = None,
        retries: int = 0,
    ) -> DlmsClient:
        """A session in HDLC frames over the serial line at ``path`` (raw, 8N1 at ``baudrate``).

        The addresses and ``parameters`` are as for :meth:`hdlc_tcp`; ``host`` is the path and ``port`` 0.
        An unsupported ``baudrate`` is a :class:`ValueError` here, not at connect time.
        """
        serial_speed(baudrate)
        link = _client_link(association, server_address, client_address, parameters)

        async def connect() -> tuple[ByteReader, ByteWriter]:
            return await open_serial(path, baudrate)

        transport = HdlcTransport(connect, link, path, retries=retries)
        return cls(
            path, 0, association, timeout=timeout, connect_timeout=connect_timeout, transport=transport
        )

    @classmethod
    def wrapper_stream(
        cls,
        opener: Opener,
        association: ClientAssociation,
        *,
        peer: str,
        timeout: float = 10.0,
        connect_timeout: float | None = None,
    ) -> DlmsClient:
        """A session in IEC 62056-47 wrapper frames over the byte stream ``opener`` returns (a connection
        the device opened to the head-end, say); ``peer`` names it in messages (``host``; ``port`` is 0)."""
        transport = WrapperStreamTransport(opener, association.client_sap, association.server_sap, peer)
        return cls(
            peer, 0, association, timeout=timeout, connect_timeout=connect_timeout, transport=transport
        )

    @classmethod
    def hdlc_stream(
        cls,
        opener: Opener,
        association: ClientAssociation,
        *,
        peer: str,
        server_address: HdlcAddress | int,
        client_address: int | None = None,
        parameters: HdlcParameters | None = None,
        timeout: float = 10.0,
        connect_timeout: float | None = None,
        retries: int = 0,
    ) -> DlmsClient:
        """A session in HDLC frames over the byte stream ``opener`` returns; the addresses and
        ``parameters`` are as for :meth:`hdlc_tcp`, ``peer`` names the stream in messages."""
        link = _client_link(association, server_address, client_address, parameters)
        transport = HdlcTransport(opener, link, peer, retries=retries)
        return cls(
            peer, 0, association, timeout=timeout, connect_timeout=connect_timeout, transport=transport
        )

    async def __aenter__(self) -> DlmsClient:
        await self.open()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    @contextlib.contextmanager
    def _edge(self, what: str) -> Iterator[None]:
        """Translate stack and socket failures into driver errors, dropping the connection on any."""
        try:
            yield
        except TimeoutError as exc:
            self._drop()
            raise DlmsTimeout(f"{what}: no answer from {self.transport.peer} within {self.timeout}s") from exc
        except AuthenticationFailed as exc:
            self._drop()
            raise DlmsAuthFailed(f"{what}: {exc}") from exc
        except LinkRefused as exc:
            self._drop()
            raise DlmsUnreachable(f"{what}: {self.transport.peer}: {exc}") from exc
        except DlmsError as exc:
            self._drop()
            raise DlmsProtocolError(f"{what}: {exc}") from exc
        except (OSError, asyncio.IncompleteReadError) as exc:
            self._drop()
            raise DlmsUnreachable(f"{what}: {self.transport.peer}: {exc}") from exc

    def _drop(self) -> None:
        self.transport.abort()

    async def open(self) -> None:
        """Connect and associate (including HLS passes 3 and 4 when the mechanism asks for them)."""
        with self._edge("connect"):
            await self.transport.open(self.connect_timeout, self.timeout)
        assoc = self.association
        with self._edge("associate"):
            aare = await self._exchange(assoc.aarq(os.urandom(_CHALLENGE_BYTES)))
            pass3 = assoc.handle_aare(aare)
            if pass3 is not None:
                assoc.handle(await self._exchange(pass3))

    async def close(self) -> None:
        """Release the association and the link (best effort: the meter may already be gone), and close."""
        if not self.transport.connected:
            return
        if self.association.associated:
            with (
                contextlib.suppress(DlmsUnreachable, DlmsProtocolError, DlmsAuthFailed),
                self._edge("release"),
            ):
                self.association.handle_rlre(await self._exchange(self.association.release()))
        # Best effort, as the release: the link is dropped whatever the meter answers (HDLC: to DISC).
        with contextlib.suppress(TimeoutError, DlmsError, OSError, asyncio.IncompleteReadError):
            await self.transport.close(self.timeout)
        self._drop()

    def _exchange(self, apdu: bytes) -> Awaitable[bytes]:
        """Send one APDU and wait for the answer (the transport's coroutine, awaited by the caller)."""
        return self.transport.exchange(apdu, self.timeout)

    async def _call(self, apdu: XdlmsApdu, what: str, *, tables: bool = False) -> XdlmsApdu:
        """One confirmed service, datablocks included; ExceptionResponse and foreign invoke ids refused."""
        assoc = self.association
        with self._edge(what):
            outcome = assoc.handle(await self._exchange(assoc.request(apdu)), tables=tables)
            while isinstance(outcome, NextRequest):
                outcome = assoc.handle(await self._exchange(outcome.raw), tables=tables)
        answer = outcome.apdu
        if isinstance(answer, ExceptionResponse):
            raise DlmsProtocolError(
                f"{what}: meter refused: {answer.state_error.name}, {answer.service_error.name}"
            )
        if getattr(answer, "invoke_id", None) != getattr(apdu, "invoke_id", None):
            self._drop()
            raise DlmsProtocolError(f"{what}: answer to another request ({type(answer).__name__})")
        return answer

    # ------------------------------------------------------------------------------------- services

    async def get(
        self, attribute: CosemAttribute, access: SelectiveAccess | None = None, *, tables: bool = False
    ) -> Data:
        """The value of one attribute; :class:`DlmsAccessError` when the meter refuses it.

        ``tables``: a uniform array comes back holding a :class:`~openami.protocols.dlms.axdr.Table`.
        """
        what = f"GET {attribute.obis}/{attribute.attribute}"
        answer = await self._call(
            GetRequestNormal(self.association.next_invoke_id(), attribute, access), what, tables=tables
        )
        if not isinstance(answer, GetResponseNormal):
            raise DlmsProtocolError(f"{what}: unexpected {type(answer).__name__}")
        if isinstance(answer.result, DataAccessResult):
            raise DlmsAccessError(f"{what}: {answer.result.name}", answer.result.name)
        return answer.result

    async def set(self, attribute: CosemAttribute, value: Data) -> None:
        what = f"SET {attribute.obis}/{attribute.attribute}"
        request = SetRequestNormal(self.association.next_invoke_id(), attribute, None, value)
        answer = await self._call(request, what)
        if not isinstance(answer, SetResponseNormal):
            raise DlmsProtocolError(f"{what}: unexpected {type(answer).__name__}")
        if answer.result != DataAccessResult.SUCCESS:
            raise DlmsAccessError(f"{what}: {answer.result.name}", answer.result.name)

    async def action(self, method: CosemMethod, params: Data | None = None) -> Data | None:
        """Invoke a method; returns its return data, if any."""
        what = f"ACTION {method.obis}/{method.method}"
        answer = await self._call(
            ActionRequestNormal(self.association.next_invoke_id(), method, params), what
        )
        if not isinstance(answer, ActionResponseNormal):
            raise DlmsProtocolError(f"{what}: unexpected {type(answer).__name__}")
        if answer.result != ActionResult.SUCCESS:
            raise DlmsAccessError(f"{what}: {answer.result.name}", answer.result.name)
        if isinstance(answer.return_data, DataAccessResult):
            raise DlmsAccessError(f"{what}: return data {answer.return_data.name}", answer.return_data.name)
        return answer.return_data

    async def get_clock(self) -> datetime:
        """The meter's time, aware when the meter states its deviation."""
        value = await self.get(_CLOCK_TIME)
        ts = _datetime_of(value)
        if ts is None:
            raise DlmsProtocolError(f"clock value is not a usable date-time: {value}")
        return ts

    async def set_clock(self, dt: datetime) -> None:
        """Set the meter's time; ``dt`` must be aware (the deviation is sent from its offset)."""
        if dt.tzinfo is None:
            raise ValueError("set_clock needs an aware datetime")
        await self.set(_CLOCK_TIME, Data.octet_string(encode_datetime(CosemDateTime.from_datetime(dt))))

    async def read_register(self, obis: Obis) -> tuple[object, int, int]:
        """(raw value, scaler, unit code) of a Register: the physical value is ``value * 10**scaler``."""
        value = await self.get(CosemAttribute(_REGISTER_CLASS, obis, 2))
        scaler_unit = await self.get(CosemAttribute(_REGISTER_CLASS, obis, 3))
        fields = scaler_unit.value
        if scaler_unit.type != DataType.STRUCTURE or not isinstance(fields, tuple) or len(fields) != 2:
            raise DlmsProtocolError(f"{obis}: scaler_unit is not a structure of two: {scaler_unit}")
        scaler, unit = fields[0].value, fields[1].value
        if not isinstance(scaler, int) or not isinstance(unit, int):
            raise DlmsProtocolError(f"{obis}: scaler_unit holds {scaler!r}, {unit!r}")
        return value.value, scaler, unit

    async def read_profile(self, obis: Obis, start: datetime, end: datetime) -> list[tuple[object, ...]]:
        """Rows of a profile generic captured in [start, end), read by range on the clock.

        The range the meter applies is inclusive at both ends, so ``end - 1 s`` is sent: consecutive
        reads ``[a, b)``, ``[b, c)`` then never return a row twice. The first column must be the clock;
        it is returned as a datetime, the other columns as their plain values.
        """
        if start.tzinfo is None or end.tzinfo is None:
            raise ValueError("read_profile needs aware datetimes")
        access = RangeDescriptor(
            _CLOCK_COLUMN,
            Data.octet_string(datetime_octets(start)),
            Data.octet_string(datetime_octets(end - _ONE_SECOND)),
        )
        buffer = await self.get(CosemAttribute(_PROFILE_CLASS, obis, 2), access, tables=True)
        table = table_rows(buffer)
        if table is not None:
            return _table_profile(obis, table)
        if buffer.type != DataType.ARRAY or not isinstance(buffer.value, tuple):
            raise DlmsProtocolError(f"{obis}: buffer is not an array: {buffer.type.name}")
        rows: list[tuple[object, ...]] = []
        append = rows.append
        for row in buffer.value:
            columns = row.value
            if not isinstance(columns, tuple) or not columns:
                raise DlmsProtocolError(f"{obis}: profile row is not a structure")
            ts = _datetime_of(columns[0])
            if ts is None:
                raise DlmsProtocolError(f"{obis}: profile row without a usable time")
            append((ts, *[column.value for column in columns[1:]]))
        return rows

    async def disconnect(self) -> None:
        """remote_disconnect on the disconnect control 0-0:96.3.10."""
        await self.action(CosemMethod(_DISCONNECT_CLASS, DISCONNECT_CONTROL, 1), Data.int8(0))

    async def reconnect(self) -> None:
        """remote_reconnect on the disconnect control 0-0:96.3.10."""
        await self.action(CosemMethod(_DISCONNECT_CLASS, DISCONNECT_CONTROL, 2), Data.int8(0))


def _table_profile(obis: Obis, table: Table) -> list[tuple[object, ...]]:
    """Profile rows from the cheap Table form: a clock octet-string first, plain values after."""
    if table.columns[0] != _CLOCK_OCTETS:
        raise DlmsProtocolError(f"{obis}: first profile column is not a date-time: {table.columns[0]}")
    rows: list[tuple[object, ...]] = []
    append = rows.append
    # All the row times unpacked in one call; datetime() itself refuses unspecified (0xFF) and
    # out-of-range fields, which then take the general path.
    stamps = _DATE_TIME.iter_unpack(b"".join([row[0] for row in table.rows]))  # type: ignore[misc]
    zones = _ZONES
    for row, (year, month, day, hour, minute, second, hundredths, deviation) in zip(
        table.rows, stamps, strict=True
    ):
        zone = zones.get(deviation)
        try:
            if zone is None:
                raise ValueError(deviation)
            ts: datetime | None = datetime(year, month, day, hour, minute, second, hundredths * 10_000, zone)
        except ValueError:
            ts = _datetime_of_octets(row[0])  # type: ignore[arg-type]  # a 12-byte column holds bytes
        if ts is None:
            raise DlmsProtocolError(f"{obis}: profile row without a usable time")
        append((ts, *row[1:]))
    return rows


def _client_link(
    association: ClientAssociation,
    server_address: HdlcAddress | int,
    client_address: int | None,
    parameters: HdlcParameters | None,
) -> HdlcClientLink:
    server = (
        server_address
        if isinstance(server_address, HdlcAddress)
        else HdlcAddress(association.server_sap, server_address)
    )
    client = HdlcAddress(association.client_sap if client_address is None else client_address)
    return HdlcClientLink(server, client, parameters)


# year, month, day, (day of week), hour, minute, second, hundredths, deviation, (clock status)
_DATE_TIME: Final = struct.Struct(">HBBxBBBBhx")
_ZONES: dict[int, tzinfo] = {}


def _datetime_of(value: Data) -> datetime | None:
    """A date-time sent as a 12-byte octet-string (the usual form) or with the date-time tag.

    Every profile row carries one, and the general path (:func:`parse_datetime` building three frozen
    dataclasses, then a fresh timezone per value) costs about half of a load-profile read on the client;
    the common case of fully specified fields is unpacked directly here, with one cached timezone per
    deviation, and anything else (unspecified fields, DST markers) takes the general path.
    """
    raw = value.value
    if value.type == DataType.OCTET_STRING and isinstance(raw, bytes) and len(raw) == 12:
        return _datetime_of_octets(raw)
    if isinstance(raw, CosemDateTime):
        return raw.to_datetime()
    return None


def _datetime_of_octets(raw: bytes) -> datetime | None:
    year, month, day, hour, minute, second, hundredths, deviation = _DATE_TIME.unpack(raw)
    if year != 0xFFFF and hour < 24 and minute < 60 and second < 60 and hundredths < 100:
        zone = _ZONES.get(deviation)
        if zone is None and -24 * 60 < deviation < 24 * 60:
            zone = _ZONES.setdefault(deviation, timezone(timedelta(minutes=-deviation)))
        if zone is not None:
            try:
                return datetime(year, month, day, hour, minute, second, hundredths * 10_000, zone)
            except ValueError:
                return None
    return parse_datetime(raw).to_datetime()
