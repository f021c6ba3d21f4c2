"""DLMS sessions over HDLC: DlmsClient against the simulator over TCP on loopback and over a real pty."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from openami.drivers.dlms import (
    DlmsAccessError,
    DlmsAuthFailed,
    DlmsClient,
    DlmsProtocolError,
    DlmsTimeout,
    DlmsUnreachable,
)
from openami.protocols.dlms.association import ClientAssociation
from openami.protocols.dlms.axdr import Data
from openami.protocols.dlms.hdlc import FrameKind, HdlcAddress, HdlcFrame, HdlcParameters, encode_frame
from openami.protocols.dlms.hdlc_link import HdlcServerLink, LinkState
from openami.protocols.dlms.xdlms import CosemAttribute
from openami.simulator.dlms_meter import (
    DEVICE_NAME,
    IMPORT_ENERGY,
    IMPORT_POWER,
    LOAD_PROFILE,
    SimulatedMeter,
)
from openami.simulator.dlms_server import (
    DlmsSimulator,
    build_meters,
    hdlc_address,
    run_simulator,
    serve_hdlc_fd,
)
from tests.drivers.dlms.test_client_simulator import (
    HOST,
    RELAY_STATE,
    expected_rows,
    hls,
    lls,
    public,
    yesterday,
)

pytestmark = pytest.mark.timeout(30)

SMALL = HdlcParameters(max_info_tx=32, max_info_rx=32, window_tx=1, window_rx=1)
WIDE = HdlcParameters(max_info_tx=64, max_info_rx=64, window_tx=7, window_rx=7)
SERIAL_ADDRESS = HdlcAddress(1, 0x1234)  # four address bytes on the wire
CLIENT_SERIAL_ADDRESS = 0x1234


@pytest.fixture
async def simulator() -> AsyncIterator[DlmsSimulator]:
    async with DlmsSimulator(HOST, build_meters(2, seed=7), 0, framing="hdlc") as sim:
        yield sim


@pytest.fixture
async def serial_meter() -> AsyncIterator[tuple[SimulatedMeter, str]]:
    """A meter served on the master side of a pty; the client opens the slave's path."""
    meter = build_meters(1, seed=11)[0]
    master, slave = os.openpty()
    task = asyncio.create_task(serve_hdlc_fd(meter, master, SERIAL_ADDRESS))
    try:
        yield meter, os.ttyname(slave)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        os.close(slave)  # held until now: with no slave open, the master would read EIO


def hdlc_client(sim: DlmsSimulator, index: int, association: ClientAssociation, **kwargs: Any) -> DlmsClient:
    kwargs.setdefault("server_address", hdlc_address(index))
    return DlmsClient.hdlc_tcp(HOST, sim.ports[index], association, **kwargs)


async def full_session(client: DlmsClient, meter: SimulatedMeter) -> None:
    """Clock, registers, a day of load profile and the relay: what the head-end does with a meter."""
    clock = await client.get_clock()
    assert abs(clock - datetime.now(UTC)) < timedelta(seconds=5)
    target = datetime(2026, 1, 15, 12, 0, tzinfo=UTC)
    await client.set_clock(target)
    assert abs(await client.get_clock() - target) < timedelta(seconds=5)

    value, scaler, unit = await client.read_register(IMPORT_ENERGY)
    assert (scaler, unit) == (0, 30)
    assert isinstance(value, int) and value > 0
    power, scaler, unit = await client.read_register(IMPORT_POWER)
    assert (scaler, unit) == (0, 27)
    assert power == meter.import_power(meter.clock())

    start = datetime(2026, 1, 13, tzinfo=UTC)
    end = start + timedelta(days=1)
    rows = await client.read_profile(LOAD_PROFILE, start, end)
    assert len(rows) == 96
    assert rows == expected_rows(meter, start, end)

    await client.disconnect()
    assert await client.get(RELAY_STATE) == Data.boolean(False)
    await client.reconnect()
    assert meter.relay_connected


# --- HDLC over TCP --------------------------------------------------------------------------------


@pytest.mark.parametrize("parameters", [None, SMALL, WIDE], ids=["default", "32-bytes", "window-7"])
async def test_hls_gmac_ciphered_session_over_hdlc_tcp(
    simulator: DlmsSimulator, parameters: HdlcParameters | None
) -> None:
    meter = simulator.meters[0]
    client = hdlc_client(simulator, 0, hls(meter), parameters=parameters)
    async with client:
        link = client.transport.link  # type: ignore[attr-defined]
        assert link.negotiated == (parameters or HdlcParameters())
        await full_session(client, meter)
    assert link.state is LinkState.DISCONNECTED  # closed with DISC, answered by UA


async def test_public_and_lls_clients_over_hdlc_tcp(simulator: DlmsSimulator) -> None:
    meter = simulator.meters[1]
    async with hdlc_client(simulator, 1, public()) as client:
        name = await client.get(CosemAttribute(1, DEVICE_NAME, 2))
        assert name == Data.octet_string(meter.serial.encode())
        with pytest.raises(DlmsAccessError, match="READ_WRITE_DENIED"):
            await client.disconnect()
    async with hdlc_client(simulator, 1, lls(meter.keys.password)) as client:
        value, _, _ = await client.read_register(IMPORT_ENERGY)
        assert isinstance(value, int)
    with pytest.raises(DlmsAuthFailed):
        async with hdlc_client(simulator, 1, lls(b"wrong")):
            pass


async def test_profile_in_datablocks_and_small_frames(simulator: DlmsSimulator) -> None:
    meter = simulator.meters[0]
    start, end = yesterday()
    async with hdlc_client(simulator, 0, hls(meter, max_pdu=256), parameters=SMALL) as client:
        assert await client.read_profile(LOAD_PROFILE, start, end) == expected_rows(meter, start, end)


async def test_wrong_server_address_times_out(simulator: DlmsSimulator) -> None:
    meter = simulator.meters[0]
    began = time.monotonic()
    for address in (hdlc_address(1), HdlcAddress(1), HdlcAddress(2, 16)):
        with pytest.raises(DlmsTimeout, match="connect"):
            async with hdlc_client(simulator, 0, hls(meter), timeout=0.2, server_address=address):
                pass
    assert time.monotonic() - began < 3


async def test_wrapper_client_gets_no_answer_from_an_hdlc_port(simulator: DlmsSimulator) -> None:
    with pytest.raises((DlmsTimeout, DlmsProtocolError)):
        async with DlmsClient(HOST, simulator.ports[0], public(), timeout=0.3):
            pass


async def test_ten_sessions_concurrently() -> None:
    meters = build_meters(10, seed=5)
    start, end = yesterday()
    async with DlmsSimulator(HOST, meters, 0, framing="hdlc") as sim:

        async def read(index: int) -> list[tuple[object, ...]]:
            async with hdlc_client(sim, index, hls(meters[index])) as client:
                return await client.read_profile(LOAD_PROFILE, start, end)

        results = await asyncio.gather(*(read(index) for index in range(10)))
    assert results == [expected_rows(m, start, end) for m in meters]


async def test_run_simulator_serves_hdlc() -> None:
    """What ``openami simulate dlms --framing hdlc`` runs: meter i answers at 1/16+i on its port."""
    started: asyncio.Future[DlmsSimulator] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(run_simulator(3, 0, framing="hdlc", on_ready=started.set_result))
    try:
        sim = await asyncio.wait_for(started, 5)
        assert sim.framing == "hdlc"
        for index, meter in enumerate(sim.meters):
            async with hdlc_client(sim, index, public(), timeout=2) as client:
                name = await client.get(CosemAttribute(1, DEVICE_NAME, 2))
                assert name == Data.octet_string(meter.serial.encode())
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    with pytest.raises(ValueError, match="framing"):
        DlmsSimulator(HOST, [], 0, framing="morse")  # type: ignore[arg-type]


async def test_meter_refusing_the_link_is_unreachable(free_port: int) -> None:
    """A real HDLC station whose limits no client can meet answers DM to every SNRM."""

    async def picky(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        link = HdlcServerLink(hdlc_address(0), HdlcParameters(16, 16, 1, 1))
        while data := await reader.read(4096):
            link.receive(data)
            writer.write(link.data_to_send())
        writer.close()

    async with await asyncio.start_server(picky, HOST, free_port):
        with pytest.raises(DlmsUnreachable, match="DM"):
            async with DlmsClient.hdlc_tcp(HOST, free_port, public(), server_address=16, timeout=2):
                pass


async def test_meter_sending_broken_frames_is_a_protocol_error(free_port: int) -> None:
    ua = bytearray(encode_frame(HdlcFrame(HdlcAddress(16), hdlc_address(0), FrameKind.UA)))
    ua[-2] ^= 0x55  # a wrong FCS, as line noise makes it

    async def noisy(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(4096)
        writer.write(bytes(ua) * 40)
        await reader.read()
        writer.close()

    async with await asyncio.start_server(noisy, HOST, free_port):
        began = time.monotonic()
        with pytest.raises(DlmsProtocolError, match="broken HDLC frames"):
            async with DlmsClient.hdlc_tcp(HOST, free_port, public(), server_address=16, timeout=5):
                pass
        assert time.monotonic() - began < 1


async def test_meter_closing_the_connection_is_unreachable(free_port: int) -> None:
    async def rude(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(4096)
        writer.close()

    async with await asyncio.start_server(rude, HOST, free_port):
        with pytest.raises(DlmsUnreachable, match="closed"):
            async with DlmsClient.hdlc_tcp(HOST, free_port, public(), server_address=16, timeout=2):
                pass


async def test_nothing_listening_fails_fast(free_port: int) -> None:
    began = time.monotonic()
    with pytest.raises(DlmsUnreachable):
        async with DlmsClient.hdlc_tcp(HOST, free_port, public(), server_address=16, timeout=2):
            pass
    assert time.monotonic() - began < 1


# --- HDLC over a serial line (pty) ----------------------------------------------------------------


async def test_hls_gmac_ciphered_session_over_serial(serial_meter: tuple[SimulatedMeter, str]) -> None:
    meter, path = serial_meter
    client = DlmsClient.serial(path, hls(meter), server_address=SERIAL_ADDRESS, baudrate=9600, timeout=5)
    assert (client.host, client.transport.peer) == (path, path)
    async with client:
        await full_session(client, meter)


async def test_serial_sessions_one_after_another(serial_meter: tuple[SimulatedMeter, str]) -> None:
    meter, path = serial_meter
    start, end = yesterday()
    for parameters in (SMALL, WIDE, None):
        async with DlmsClient.serial(
            path, hls(meter), server_address=CLIENT_SERIAL_ADDRESS, parameters=parameters, timeout=5
        ) as client:
            assert await client.read_profile(LOAD_PROFILE, start, end) == expected_rows(meter, start, end)
            name = await client.get(CosemAttribute(1, DEVICE_NAME, 2))
            assert name == Data.octet_string(meter.serial.encode())


async def test_wrong_server_address_on_serial_times_out(serial_meter: tuple[SimulatedMeter, str]) -> None:
    meter, path = serial_meter
    began = time.monotonic()
    with pytest.raises(DlmsTimeout):
        async with DlmsClient.serial(
            path, hls(meter), server_address=HdlcAddress(1, 17), timeout=0.3, retries=1
        ):
            pass
    assert time.monotonic() - began < 2
    async with DlmsClient.serial(path, public(), server_address=SERIAL_ADDRESS, timeout=5) as client:
        assert await client.get(CosemAttribute(1, DEVICE_NAME, 2)) == Data.octet_string(meter.serial.encode())


async def test_serial_path_that_is_no_tty() -> None:
    with pytest.raises(DlmsUnreachable):
        async with DlmsClient.serial("/dev/null/nothing", public(), server_address=16, timeout=1):
            pass
    with pytest.raises(DlmsUnreachable, match="configure"):
        async with DlmsClient.serial("/dev/null", public(), server_address=16, timeout=1):
            pass
    with pytest.raises(ValueError, match="baud"):
        DlmsClient.serial("/dev/ttyS0", public(), server_address=16, baudrate=12345)
