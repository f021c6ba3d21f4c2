"""The DLMS pull path end to end: DlmsClient against the simulator over real TCP on loopback."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest

from openami.drivers.dlms import DlmsAccessError, DlmsAuthFailed, DlmsClient, DlmsTimeout, DlmsUnreachable
from openami.protocols.dlms.acse import Mechanism
from openami.protocols.dlms.association import (
    MANAGEMENT_CLIENT,
    MANAGEMENT_SERVER,
    PUBLIC_CLIENT,
    ClientAssociation,
)
from openami.protocols.dlms.axdr import Data
from openami.protocols.dlms.security import SecurityControl
from openami.protocols.dlms.xdlms import CosemAttribute
from openami.simulator.consumption import INTERVAL_S
from openami.simulator.dlms_meter import (
    DEVICE_NAME,
    DISCONNECT_CONTROL,
    IMPORT_ENERGY,
    IMPORT_POWER,
    LOAD_PROFILE,
    SimulatedMeter,
)
from openami.simulator.dlms_server import DlmsSimulator, build_meters

pytestmark = pytest.mark.timeout(30)

HOST = "127.0.0.1"
CLIENT_TITLE = b"OPENAMI1"
CIPHERED = SecurityControl(suite=0, authenticated=True, encrypted=True)
QUARTER = timedelta(seconds=INTERVAL_S)
RELAY_STATE = CosemAttribute(70, DISCONNECT_CONTROL, 2)


@pytest.fixture
async def simulator(free_port: int) -> AsyncIterator[DlmsSimulator]:
    async with DlmsSimulator(HOST, build_meters(1, seed=7), free_port) as sim:
        yield sim


def public() -> ClientAssociation:
    return ClientAssociation(PUBLIC_CLIENT, MANAGEMENT_SERVER)


def lls(password: bytes) -> ClientAssociation:
    return ClientAssociation(MANAGEMENT_CLIENT, MANAGEMENT_SERVER, mechanism=Mechanism.LOW, password=password)


def hls(
    meter: SimulatedMeter, *, encryption_key: bytes | None = None, max_pdu: int = 0xFFFF
) -> ClientAssociation:
    return ClientAssociation(
        MANAGEMENT_CLIENT,
        MANAGEMENT_SERVER,
        mechanism=Mechanism.HIGH_GMAC,
        system_title=CLIENT_TITLE,
        encryption_key=encryption_key or meter.keys.encryption_key,
        authentication_key=meter.keys.authentication_key,
        security=CIPHERED,
        max_pdu=max_pdu,
    )


def expected_rows(meter: SimulatedMeter, start: datetime, end: datetime) -> list[tuple[object, ...]]:
    """What the profile must hold, straight from the model: row t closes the quarter hour before t."""
    register, used = meter.model.counts(start - QUARTER, end - QUARTER)
    rows: list[tuple[object, ...]] = []
    for index, wh in enumerate(used):
        register += wh
        rows.append((start + index * QUARTER, register, 0, wh * 4, 0))
    return rows


def yesterday() -> tuple[datetime, datetime]:
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    return today - timedelta(days=2), today - timedelta(days=1)


async def test_public_client_reads_logical_device_name(simulator: DlmsSimulator) -> None:
    meter = simulator.meters[0]
    async with DlmsClient(HOST, simulator.ports[0], public()) as client:
        name = await client.get(CosemAttribute(1, DEVICE_NAME, 2))
        assert name == Data.octet_string(meter.serial.encode())
        with pytest.raises(DlmsAccessError, match="READ_WRITE_DENIED"):
            await client.disconnect()
    assert meter.relay_connected


async def test_lls_right_password(simulator: DlmsSimulator) -> None:
    meter = simulator.meters[0]
    async with DlmsClient(HOST, simulator.ports[0], lls(meter.keys.password)) as client:
        value, scaler, unit = await client.read_register(IMPORT_ENERGY)
        assert (scaler, unit) == (0, 30)  # Wh
        now = meter.clock()
        assert isinstance(value, int)
        assert meter.import_register(now - timedelta(seconds=5)) <= value <= meter.import_register(now)


async def test_lls_wrong_password(simulator: DlmsSimulator) -> None:
    with pytest.raises(DlmsAuthFailed):
        async with DlmsClient(HOST, simulator.ports[0], lls(b"wrong")):
            pass


async def test_hls_gmac_ciphered_session(simulator: DlmsSimulator) -> None:
    meter = simulator.meters[0]
    async with DlmsClient(HOST, simulator.ports[0], hls(meter)) as client:
        clock = await client.get_clock()
        assert abs(clock - datetime.now(UTC)) < timedelta(seconds=5)

        target = datetime(2026, 1, 15, 12, 0, tzinfo=UTC)
        await client.set_clock(target)
        assert abs(await client.get_clock() - target) < timedelta(seconds=5)
        assert abs(meter.clock() - target) < timedelta(seconds=5)

        power, scaler, unit = await client.read_register(IMPORT_POWER)
        assert (scaler, unit) == (0, 27)  # W
        assert power == meter.import_power(meter.clock())

        start = datetime(2026, 1, 13, tzinfo=UTC)
        end = start + timedelta(days=1)
        rows = await client.read_profile(LOAD_PROFILE, start, end)
        assert len(rows) == 96
        assert rows == expected_rows(meter, start, end)
        assert [row[0] for row in rows] == [start + i * QUARTER for i in range(96)]

        later = await client.read_profile(LOAD_PROFILE, end, end + timedelta(hours=6))
        assert later == expected_rows(meter, end, end + timedelta(hours=6))
        assert later[0][0] == rows[-1][0] + QUARTER  # type: ignore[operator]

        assert await client.get(RELAY_STATE) == Data.boolean(True)
        await client.disconnect()
        assert await client.get(RELAY_STATE) == Data.boolean(False)
        assert not meter.relay_connected
        await client.reconnect()
        assert await client.get(RELAY_STATE) == Data.boolean(True)


async def test_profile_rows_stop_at_the_meter_clock(simulator: DlmsSimulator) -> None:
    meter = simulator.meters[0]
    async with DlmsClient(HOST, simulator.ports[0], public()) as client:
        now = meter.clock()
        rows = await client.read_profile(LOAD_PROFILE, now - timedelta(hours=1), now + timedelta(hours=1))
    assert 4 <= len(rows) <= 5
    assert rows[-1][0] <= now  # type: ignore[operator]


async def test_profile_in_datablocks(simulator: DlmsSimulator) -> None:
    meter = simulator.meters[0]
    start, end = yesterday()
    async with DlmsClient(HOST, simulator.ports[0], hls(meter, max_pdu=256)) as client:
        rows = await client.read_profile(LOAD_PROFILE, start, end)
    assert rows == expected_rows(meter, start, end)


async def test_hls_gmac_wrong_keys(simulator: DlmsSimulator) -> None:
    meter = simulator.meters[0]
    with pytest.raises(DlmsAuthFailed):
        async with DlmsClient(HOST, simulator.ports[0], hls(meter, encryption_key=bytes(16))):
            pass


async def test_twenty_meters_read_concurrently() -> None:
    meters = build_meters(20, seed=3)
    start, end = yesterday()
    async with DlmsSimulator(HOST, meters, 0) as sim:

        async def read(meter: SimulatedMeter, port: int) -> list[tuple[object, ...]]:
            async with DlmsClient(HOST, port, hls(meter)) as client:
                return await client.read_profile(LOAD_PROFILE, start, end)

        results = await asyncio.gather(*(read(m, p) for m, p in zip(meters, sim.ports, strict=True)))
    assert [len(rows) for rows in results] == [96] * 20
    assert results == [expected_rows(m, start, end) for m in meters]
    assert len({rows[0][1] for rows in results}) == 20  # every meter its own consumption


async def test_unreachable_port_fails_fast(free_port: int) -> None:
    began = time.monotonic()
    with pytest.raises(DlmsUnreachable):
        async with DlmsClient(HOST, free_port, public(), timeout=2):
            pass
    assert time.monotonic() - began < 1


async def test_silent_meter_times_out(free_port: int) -> None:
    async def mute(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()
        writer.close()

    server = await asyncio.start_server(mute, HOST, free_port)
    async with server:
        began = time.monotonic()
        with pytest.raises(DlmsTimeout):
            async with DlmsClient(HOST, free_port, public(), timeout=0.2):
                pass
        assert time.monotonic() - began < 1
