"""The M-Bus TCP driver against the virtual bus, over real loopback TCP (ephemeral ports)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from openami.drivers.mbus import MbusCollision, MbusTcpClient, MbusTimeout, MbusUnreachable
from openami.protocols.mbus.master import SecondaryAddress, narrow, select_secondary
from openami.simulator.mbus_meter import MbusBusSimulator, heat_meter, water_meter

pytestmark = pytest.mark.timeout(30)
FAST = 0.15  # seconds a silent address costs: loopback answers in well under a millisecond


@pytest.fixture
async def bus() -> AsyncIterator[MbusBusSimulator]:
    async with MbusBusSimulator() as sim:
        yield sim


def _values(telegram) -> dict[tuple[str, int, str], object]:  # type: ignore[no-untyped-def]
    found: dict[tuple[str, int, str], object] = {}
    for r in telegram.records:  # the first record of each kind (the water meter repeats volume)
        found.setdefault((r.quantity, r.storage, r.function), r.value)
    return found


async def test_read_primary_heat_meter_multi_telegram(bus: MbusBusSimulator) -> None:
    async with MbusTcpClient("127.0.0.1", bus.port, timeout=FAST) as client:
        telegram = await client.read_primary(1)
    header = telegram.header
    assert (header.id, header.manufacturer, header.medium) == ("12345678", "KAM", "heat_outlet")  # type: ignore[union-attr]
    values = _values(telegram)
    assert values[("energy", 0, "instantaneous")] == 123456000  # Wh
    assert values[("volume", 0, "instantaneous")] == pytest.approx(4567.89)
    assert values[("flow_temperature", 0, "instantaneous")] == pytest.approx(70.5)
    assert values[("date_time", 0, "instantaneous")] == "2024-03-15T13:45:00"
    # from the second telegram (the first ended with DIF 0x1F, the FCB toggled)
    assert values[("energy", 1, "instantaneous")] == 122456000
    assert values[("date", 1, "instantaneous")] == "2023-12-31"
    assert values[("energy", 0, "maximum")] == 61728000
    assert not any(r.function == "more_records_follow" for r in telegram.records)


async def test_fcb_repeat_gets_same_telegram(bus: MbusBusSimulator) -> None:
    async with MbusTcpClient("127.0.0.1", bus.port, timeout=FAST) as client:
        await client.reset(1)
        first = await client.read_telegram(1)
        client._fcb.answered(1)  # pretend the answer was lost: repeat with the same FCB
        again = await client.read_telegram(1)
        second = await client.read_telegram(1)
    assert first.more_records_follow and again.records == first.records
    assert not second.more_records_follow


async def test_read_water_meter_and_unknown_address_times_out(bus: MbusBusSimulator) -> None:
    async with MbusTcpClient("127.0.0.1", bus.port, timeout=FAST) as client:
        telegram = await client.read_primary(2)
        assert _values(telegram)[("volume", 0, "instantaneous")] == pytest.approx(98.765)
        with pytest.raises(MbusTimeout):
            await client.read_primary(77)
        # the client is still usable after a time-out
        assert (await client.read_primary(5)).header.id == "87654321"  # type: ignore[union-attr]


async def test_read_secondary(bus: MbusBusSimulator) -> None:
    async with MbusTcpClient("127.0.0.1", bus.port, timeout=FAST) as client:
        telegram = await client.read_secondary(SecondaryAddress("87654321", "ZRI", 1, 7))
        assert _values(telegram)[("volume", 0, "instantaneous")] == pytest.approx(4.242)
        with pytest.raises(MbusTimeout):
            await client.read_secondary(SecondaryAddress("87654321", "KAM"))


async def test_wildcard_selection_of_two_meters_collides(bus: MbusBusSimulator) -> None:
    async with MbusTcpClient("127.0.0.1", bus.port, timeout=FAST) as client:
        assert await client.select(SecondaryAddress("123456FF"))
        with pytest.raises(MbusCollision):
            await client.read_telegram(0xFD)


async def test_search_narrows_collisions(bus: MbusBusSimulator) -> None:
    async with MbusTcpClient("127.0.0.1", bus.port, timeout=FAST) as client:
        found = await client.search(SecondaryAddress("123456FF"))
    assert sorted(found) == ["12345678", "12345699"]


async def test_search_whole_bus() -> None:
    meters = [heat_meter(1, "11111111"), water_meter(2, "22222222"), water_meter(3, "23333333")]
    async with MbusBusSimulator(meters) as sim, MbusTcpClient("127.0.0.1", sim.port, timeout=0.1) as client:
        found = await client.search()
    assert sorted(found) == ["11111111", "22222222", "23333333"]


async def test_duplicate_secondary_address_is_reported() -> None:
    meters = [water_meter(2, "22222222"), water_meter(3, "22222222", 1)]
    async with MbusBusSimulator(meters) as sim, MbusTcpClient("127.0.0.1", sim.port, timeout=0.1) as client:
        with pytest.raises(MbusCollision, match="share"):
            await client.search(SecondaryAddress("2222222F"))


async def test_unreachable_converter(free_port: int) -> None:
    with pytest.raises(MbusUnreachable):
        async with MbusTcpClient("127.0.0.1", free_port, timeout=FAST):
            pass


async def test_garbage_on_the_line_is_a_typed_error() -> None:
    async def noisy(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(100)
        writer.write(b"\x68\x10\x11\x68garbage")
        await writer.drain()
        await asyncio.sleep(1)
        writer.close()

    server = await asyncio.start_server(noisy, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server, MbusTcpClient("127.0.0.1", port, timeout=FAST) as client:
        with pytest.raises(MbusCollision):
            await client.read_primary(1)


def test_narrow_and_select_bytes() -> None:
    pattern = SecondaryAddress("1234FFFF", "KAM", None, 4)
    assert [p.id for p in narrow(pattern)][:2] == ["12340FFF", "12341FFF"]
    assert narrow(SecondaryAddress("12345678")) == []
    assert select_secondary(SecondaryAddress("1234FFFF")).hex() == "680b0b6853fd52ffff3412ffffffffe216"
    assert pattern.matches("12345678", "KAM", 27, 4)
    assert not pattern.matches("12355678", "KAM", 27, 4)
