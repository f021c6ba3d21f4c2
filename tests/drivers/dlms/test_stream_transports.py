"""DLMS sessions over a byte stream opened elsewhere (DlmsClient.wrapper_stream / hdlc_stream), against the
simulator over real TCP on loopback: several sessions in turn over one connection, as the FEP lends it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from openami.drivers.dlms import DlmsClient, DlmsProtocolError, DlmsUnreachable
from openami.drivers.dlms.transport import ByteReader, ByteWriter, WrapperStreamTransport
from openami.protocols.dlms.association import ClientAssociation
from openami.protocols.dlms.wrapper import WrapperFrame, encode_wrapper
from openami.protocols.dlms.xdlms import CosemAttribute
from openami.simulator.dlms_meter import DEVICE_NAME, IMPORT_ENERGY, LOAD_PROFILE
from openami.simulator.dlms_server import DlmsSimulator, build_meters, hdlc_address
from tests.drivers.dlms.test_client_simulator import HOST, expected_rows, hls, public, yesterday

pytestmark = pytest.mark.timeout(30)


class _Kept:
    """One TCP connection several sessions use in turn: a session's close() does not close it."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.handed_back = 0

    async def read(self, n: int = -1) -> bytes:
        return await self.reader.read(n)

    def write(self, data: bytes) -> None:
        self.writer.write(data)

    async def drain(self) -> None:
        await self.writer.drain()

    def close(self) -> None:
        self.handed_back += 1


@pytest.fixture(params=["wrapper", "hdlc"])
async def kept(request: pytest.FixtureRequest) -> AsyncIterator[tuple[str, DlmsSimulator, _Kept]]:
    framing = request.param
    async with DlmsSimulator(HOST, build_meters(1, seed=5), 0, framing=framing) as sim:
        reader, writer = await asyncio.open_connection(HOST, sim.ports[0])
        try:
            yield framing, sim, _Kept(reader, writer)
        finally:
            writer.close()


def _client(framing: str, stream: _Kept, association: ClientAssociation) -> DlmsClient:
    async def opener() -> tuple[ByteReader, ByteWriter]:
        return stream, stream

    if framing == "hdlc":
        return DlmsClient.hdlc_stream(
            opener, association, peer="kept", server_address=hdlc_address(0), timeout=5
        )
    return DlmsClient.wrapper_stream(opener, association, peer="kept", timeout=5)


async def test_sessions_follow_each_other_over_one_stream(kept: tuple[str, DlmsSimulator, _Kept]) -> None:
    framing, sim, stream = kept
    meter = sim.meters[0]
    start, end = yesterday()
    async with _client(framing, stream, hls(meter)) as client:
        rows = await client.read_profile(LOAD_PROFILE, start, end)
    assert rows == expected_rows(meter, start, end)
    async with _client(framing, stream, public()) as client:
        name = await client.get(CosemAttribute(1, DEVICE_NAME, 2))
    assert name.value == meter.serial.encode()
    async with _client(framing, stream, hls(meter)) as client:
        value, _, _ = await client.read_register(IMPORT_ENERGY)
    assert isinstance(value, int) and value > 0
    assert stream.handed_back == 3  # each session handed the stream back once, none closed the socket
    assert not stream.writer.is_closing()


async def test_a_stream_closed_by_the_peer_is_unreachable_not_a_hang(
    kept: tuple[str, DlmsSimulator, _Kept],
) -> None:
    framing, sim, stream = kept
    await sim.stop()  # the meter side closes every connection
    with pytest.raises(DlmsUnreachable):
        async with _client(framing, stream, public()):
            pass


async def test_wrapper_stream_refuses_a_frame_of_another_association_and_times_out() -> None:
    answers: asyncio.Queue[bytes] = asyncio.Queue()

    class Scripted:
        async def read(self, n: int = -1) -> bytes:
            return await answers.get()

        def write(self, data: bytes) -> None:
            pass

        async def drain(self) -> None:
            pass

        def close(self) -> None:
            pass

    async def opener() -> tuple[ByteReader, ByteWriter]:
        return Scripted(), Scripted()

    transport = WrapperStreamTransport(opener, 1, 1, "scripted")
    await transport.open(1, 1)
    answers.put_nowait(encode_wrapper(WrapperFrame(9, 1, b"\x01")))
    with pytest.raises(DlmsProtocolError, match="not our association"):
        await transport.exchange(b"\x00", 1)
    with pytest.raises(TimeoutError):
        await transport.exchange(b"\x00", 0.05)
    transport.abort()
    assert not transport.connected
    with pytest.raises(DlmsUnreachable):
        await transport.exchange(b"\x00", 1)
