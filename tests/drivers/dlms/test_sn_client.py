"""Short-name meters end to end: SnClient against an SN view of the simulator over real TCP on loopback.

The simulator's TCP server only serves LN sessions, so a tiny wrapper server here serves
:class:`~openami.simulator.dlms_sn.SnMeterSession` (it differs in one respect: an UnconfirmedWrite gets no
reply, so empty replies are not sent).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest

from openami.drivers.dlms import DlmsAccessError, DlmsAuthFailed, DlmsClient, DlmsProtocolError
from openami.drivers.dlms.sn_client import SnClient
from openami.protocols.dlms.acse import Mechanism
from openami.protocols.dlms.association import (
    ASSOCIATION_SN_BASE_NAME,
    MANAGEMENT_CLIENT,
    MANAGEMENT_SERVER,
    PUBLIC_CLIENT,
    ClientAssociation,
)
from openami.protocols.dlms.axdr import Data, DataType
from openami.protocols.dlms.cosem import short_name, short_name_of_method
from openami.protocols.dlms.errors import DlmsError
from openami.protocols.dlms.security import SecurityControl
from openami.protocols.dlms.sn_services import ObjectListEntry, UnconfirmedWriteRequest, VariableName
from openami.protocols.dlms.wrapper import WrapperFrame, WrapperStreamParser, encode_wrapper
from openami.protocols.dlms.xdlms import DataAccessResult, EntryDescriptor
from openami.simulator.consumption import INTERVAL_S
from openami.simulator.dlms_meter import (
    CLOCK,
    DEVICE_NAME,
    DISCONNECT_CONTROL,
    IMPORT_ENERGY,
    IMPORT_POWER,
    LOAD_PROFILE,
    SimulatedMeter,
)
from openami.simulator.dlms_server import DlmsSimulator, build_meters
from openami.simulator.dlms_sn import SN_OBJECTS, SnMeterSession
from tests.drivers.dlms.test_client_simulator import expected_rows, yesterday

pytestmark = pytest.mark.timeout(30)

HOST = "127.0.0.1"
CLIENT_TITLE = b"OPENAMI1"
CIPHERED = SecurityControl(suite=0, authenticated=True, encrypted=True)
QUARTER = timedelta(seconds=INTERVAL_S)
BASE = {obj.obis: obj.base_name for obj in SN_OBJECTS}


class SnServer:
    """One SN meter on an ephemeral loopback port, IEC 62056-47 wrapper framing."""

    def __init__(self, meter: SimulatedMeter) -> None:
        self.meter = meter
        self.port = 0
        self._server: asyncio.Server | None = None
        self._handlers: dict[asyncio.StreamWriter, asyncio.Task[None]] = {}

    async def __aenter__(self) -> SnServer:
        self._server = await asyncio.start_server(self._serve, HOST, 0)
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        handlers = list(self._handlers.values())
        for writer in list(self._handlers):
            writer.close()
        await asyncio.gather(*handlers, return_exceptions=True)
        await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers[writer] = task
        parser = WrapperStreamParser()
        session = SnMeterSession(self.meter)
        try:
            while data := await reader.read(0x10000):
                for frame in parser.feed(data):
                    reply = session.handle(frame.source, frame.apdu)
                    if reply:
                        writer.write(encode_wrapper(WrapperFrame(frame.destination, frame.source, reply)))
                await writer.drain()
        except (DlmsError, ConnectionError):
            pass
        finally:
            self._handlers.pop(writer, None)
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()


@pytest.fixture
def meter() -> SimulatedMeter:
    return build_meters(1, seed=7)[0]


@pytest.fixture
async def server(meter: SimulatedMeter) -> AsyncIterator[SnServer]:
    async with SnServer(meter) as srv:
        yield srv


def lls(password: bytes, **options: object) -> ClientAssociation:
    return ClientAssociation(
        MANAGEMENT_CLIENT,
        MANAGEMENT_SERVER,
        mechanism=Mechanism.LOW,
        password=password,
        short_names=True,
        **options,  # type: ignore[arg-type]
    )


def ciphered_lls(meter: SimulatedMeter) -> ClientAssociation:
    return lls(
        meter.keys.password,
        system_title=CLIENT_TITLE,
        encryption_key=meter.keys.encryption_key,
        authentication_key=meter.keys.authentication_key,
        security=CIPHERED,
    )


async def test_lls_session_reads_object_list_clock_register_and_profile(
    server: SnServer, meter: SimulatedMeter
) -> None:
    async with SnClient(HOST, server.port, lls(meter.keys.password)) as client:
        negotiated = client.association.negotiated
        assert negotiated is not None
        assert negotiated.vaa_name == ASSOCIATION_SN_BASE_NAME

        entries = await client.read_object_list()
        assert [(e.base_name, e.class_id, e.logical_name) for e in entries] == [
            (o.base_name, o.class_id, o.obis) for o in SN_OBJECTS
        ]
        assert client.objects[LOAD_PROFILE] == ObjectListEntry(0x1600, 7, 1, LOAD_PROFILE)
        clock, energy, profile = (client.base_name(obis) for obis in (CLOCK, IMPORT_ENERGY, LOAD_PROFILE))

        assert abs(await client.get_clock(clock) - datetime.now(UTC)) < timedelta(seconds=5)

        value, scaler, unit = await client.read_register(energy)  # value and scaler_unit (attr 3) in one Read
        assert (scaler, unit) == (0, 30)  # Wh
        now = meter.clock()
        assert isinstance(value, int)
        assert meter.import_register(now - timedelta(seconds=5)) <= value <= meter.import_register(now)

        start, end = yesterday()
        rows = await client.read_profile(profile, start, end)
        assert len(rows) == 96
        assert rows == expected_rows(meter, start, end)
        later = await client.read_profile(profile, end, end + timedelta(hours=6))
        assert later == expected_rows(meter, end, end + timedelta(hours=6))


async def test_read_many_and_entry_access(server: SnServer, meter: SimulatedMeter) -> None:
    async with SnClient(HOST, server.port, lls(meter.keys.password)) as client:
        name, power, missing = await client.read_many(
            [short_name(BASE[DEVICE_NAME], 2), short_name(BASE[IMPORT_POWER], 2), 0x0F00]
        )
        assert name == Data.octet_string(meter.serial.encode())
        assert power == Data.uint32(meter.import_power(meter.clock()))
        assert missing is DataAccessResult.OBJECT_UNDEFINED
        with pytest.raises(DlmsAccessError, match="OBJECT_UNDEFINED"):
            await client.read(0x0F00)
        # The simulator serves the buffer by range only: an entry descriptor is refused, typed.
        with pytest.raises(DlmsAccessError, match="OBJECT_UNAVAILABLE"):
            await client.read_selective(short_name(BASE[LOAD_PROFILE], 2), EntryDescriptor(1, 10))


async def test_write_clock_and_invoke_disconnect(server: SnServer, meter: SimulatedMeter) -> None:
    relay_state = short_name(BASE[DISCONNECT_CONTROL], 2)
    async with SnClient(HOST, server.port, lls(meter.keys.password)) as client:
        target = datetime(2026, 1, 15, 12, 0, tzinfo=UTC)
        await client.set_clock(BASE[CLOCK], target)
        assert abs(await client.get_clock(BASE[CLOCK]) - target) < timedelta(seconds=5)
        assert abs(meter.clock() - target) < timedelta(seconds=5)

        assert await client.read(relay_state) == Data.boolean(True)
        await client.disconnect(BASE[DISCONNECT_CONTROL])  # Write on the method's short name
        assert await client.read(relay_state) == Data.boolean(False)
        assert not meter.relay_connected
        reconnect = short_name_of_method(BASE[DISCONNECT_CONTROL], 70, 2)
        returned = await client.invoke(reconnect, Data.int8(0), with_return=True)  # Read, selector 0
        assert returned == Data.null()
        assert meter.relay_connected
        with pytest.raises(DlmsAccessError, match="READ_WRITE_DENIED"):
            await client.write(short_name(BASE[IMPORT_ENERGY], 2), Data.uint32(0))


async def test_ciphered_sn_session_and_profile_in_blocks(server: SnServer, meter: SimulatedMeter) -> None:
    start, end = yesterday()
    association = ciphered_lls(meter)
    association.max_pdu = 256  # read before the AARQ: the profile must come in data blocks
    async with SnClient(HOST, server.port, association) as client:
        rows = await client.read_profile(BASE[LOAD_PROFILE], start, end)
        assert rows == expected_rows(meter, start, end)
        entries = await client.read_object_list()
        assert len(entries) == len(SN_OBJECTS)


async def test_public_client_reads_but_may_not_write(server: SnServer, meter: SimulatedMeter) -> None:
    association = ClientAssociation(PUBLIC_CLIENT, MANAGEMENT_SERVER, short_names=True)
    async with SnClient(HOST, server.port, association) as client:
        assert (await client.read_object_list())[0].base_name == ASSOCIATION_SN_BASE_NAME
        with pytest.raises(DlmsAccessError, match="READ_WRITE_DENIED"):
            await client.disconnect(BASE[DISCONNECT_CONTROL])
        with pytest.raises(DlmsAccessError, match="READ_WRITE_DENIED"):
            await client.set_clock(BASE[CLOCK], datetime(2026, 1, 1, tzinfo=UTC))
    assert meter.relay_connected


def test_unconfirmed_write_is_applied_without_an_answer(meter: SimulatedMeter) -> None:
    """Sans-IO: an UnconfirmedWrite changes the meter and yields no reply (the TCP server sends none)."""
    session = SnMeterSession(meter)
    association = lls(meter.keys.password)
    association.handle_aare(session.handle(MANAGEMENT_CLIENT, association.aarq()))
    disconnect = UnconfirmedWriteRequest((VariableName(BASE[DISCONNECT_CONTROL] + 0x20),), (Data.int8(0),))
    assert session.handle(MANAGEMENT_CLIENT, association.request_sn(disconnect)) == b""
    assert not meter.relay_connected


async def test_wrong_password(server: SnServer) -> None:
    with pytest.raises(DlmsAuthFailed):
        async with SnClient(HOST, server.port, lls(b"wrong")):
            pass


async def test_ln_only_meter_refuses_the_sn_context(meter: SimulatedMeter) -> None:
    async with DlmsSimulator(HOST, [meter], 0) as sim:
        with pytest.raises(DlmsProtocolError, match="rejected"):
            async with SnClient(HOST, sim.ports[0], lls(meter.keys.password)):
                pass


async def test_sn_meter_refuses_an_ln_client(server: SnServer, meter: SimulatedMeter) -> None:
    association = ClientAssociation(
        MANAGEMENT_CLIENT, MANAGEMENT_SERVER, mechanism=Mechanism.LOW, password=meter.keys.password
    )
    with pytest.raises(DlmsProtocolError, match="rejected"):
        async with DlmsClient(HOST, server.port, association):
            pass


def test_sn_client_needs_an_sn_association() -> None:
    with pytest.raises(ValueError, match="short_names"):
        SnClient(HOST, 1, ClientAssociation(PUBLIC_CLIENT, MANAGEMENT_SERVER))


async def test_buffer_comes_back_as_plain_array_when_rows_differ(
    server: SnServer, meter: SimulatedMeter
) -> None:
    async with SnClient(HOST, server.port, lls(meter.keys.password)) as client:
        capture_objects = await client.read(short_name(BASE[LOAD_PROFILE], 3))
        assert capture_objects.type == DataType.ARRAY
        assert len(capture_objects.value) == 5  # type: ignore[arg-type]


async def test_over_an_existing_link(server: SnServer, meter: SimulatedMeter) -> None:
    link = DlmsClient(HOST, server.port, lls(meter.keys.password))
    async with SnClient.over(link) as client:
        assert await client.read(short_name(BASE[DEVICE_NAME], 2)) == Data.octet_string(meter.serial.encode())
    with pytest.raises(ValueError, match="short_names"):
        SnClient.over(DlmsClient(HOST, 1, ClientAssociation(PUBLIC_CLIENT, MANAGEMENT_SERVER)))
