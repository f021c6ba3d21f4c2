"""Setting an M-Bus meter's clock (SND_UD CI 0x51, date/time record) against the simulated bus over TCP:
the encoding byte for byte, and a meter whose clock the set really moves (or that refuses it)."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest

from openami.drivers.mbus.client import MbusTcpClient, encode_date_time, set_time_request
from openami.drivers.mbus.errors import MbusTimeout
from openami.protocols.mbus.values import decode_time_point
from openami.simulator.mbus_meter import MbusBusSimulator, VirtualMbusMeter, record, type_f

pytestmark = pytest.mark.timeout(20)

WHEN = datetime(2024, 3, 15, 13, 45, 7)  # a Friday


def clock_meter(primary: int, offset_s: float, dif: int = 0x06, **settings: object) -> VirtualMbusMeter:
    """A water meter whose telegram carries its running clock, type I (DIF 0x06) or type F (0x04)."""
    volume = record(0x4, b"\x13", (1234).to_bytes(4, "little"))
    block = volume + record(dif, b"\x6d", bytes(4 if dif == 0x04 else 6))  # filled in as sent
    meter = VirtualMbusMeter(
        primary, f"{40_000_000 + primary}", "ZRI", 1, 7, [block], clock_offset_s=offset_s
    )
    for key, value in settings.items():
        setattr(meter, key, value)
    return meter


def test_date_time_fields_byte_for_byte() -> None:
    assert encode_date_time(WHEN, "second").hex() == "072dad0f3300"  # second; minute; hour | Friday (5)
    assert encode_date_time(WHEN, "minute") == type_f(2024, 3, 15, 13, 45) == bytes.fromhex("2d0d0f33")
    summer = encode_date_time(WHEN, "minute", summer_time=True)
    assert summer[1] & 0x80 and decode_time_point(summer) == "2024-03-15T13:45:00"
    assert decode_time_point(encode_date_time(WHEN, "second", summer_time=True)) == "2024-03-15T13:45:07"
    frame = set_time_request(5, WHEN)
    assert frame.hex() == "680b0b68530551066d072dad0f33003f16"  # L 11, SND_UD, CI 51, DIF 06 VIF 6D, CS
    with pytest.raises(ValueError, match="naive"):
        encode_date_time(WHEN.replace(tzinfo=UTC))
    with pytest.raises(ValueError, match=r"2000\.\.2080"):
        encode_date_time(datetime(2099, 1, 1))
    with pytest.raises(ValueError, match="out of range"):
        set_time_request(256, WHEN)


async def test_set_time_moves_the_meters_clock_and_the_telegram_shows_it() -> None:
    meter = clock_meter(3, -600.0, clock_zone="Europe/Berlin")
    async with MbusBusSimulator([meter]) as bus, MbusTcpClient("127.0.0.1", bus.port, timeout=0.5) as client:
        telegram = await client.read_primary(3)
        shown = next(r.value for r in telegram.records if r.quantity == "date_time")
        expected = datetime.fromtimestamp(time.time() - 600, ZoneInfo("Europe/Berlin"))
        assert abs(datetime.fromisoformat(str(shown)) - expected.replace(tzinfo=None)).total_seconds() < 2
        local = datetime.now(ZoneInfo("Europe/Berlin"))
        assert await client.set_time(
            3, local.replace(tzinfo=None, microsecond=0), summer_time=bool(local.dst())
        )
        assert meter.clock_sets == 1 and meter.clock_offset_s is not None
        assert abs(meter.clock_offset_s) < 1.5  # set to the second (the fraction dropped)
        again = await client.read_primary(3)
        shown = next(r.value for r in again.records if r.quantity == "date_time")
        assert abs(datetime.fromisoformat(str(shown)) - local.replace(tzinfo=None)).total_seconds() < 2
        assert not await client.set_time(255, local.replace(tzinfo=None))  # broadcast: nobody answers


async def test_minute_clock_takes_the_minute_and_refusing_meters_are_visible() -> None:
    minute = clock_meter(1, 3600.0, dif=0x04)
    ignoring = clock_meter(2, -900.0, clock_write="ignore")
    silent = clock_meter(4, -900.0, clock_write="silent")
    async with (
        MbusBusSimulator([minute, ignoring, silent]) as bus,
        MbusTcpClient("127.0.0.1", bus.port, timeout=0.3) as client,
    ):
        utc = datetime.now(UTC).replace(tzinfo=None)
        assert await client.set_time(1, utc, "minute")
        assert minute.clock_offset_s is not None and -61 < minute.clock_offset_s <= 0.5
        assert await client.set_time(2, utc)  # acknowledged ...
        assert ignoring.clock_offset_s == -900.0  # ... and kept: only a read shows it
        with pytest.raises(MbusTimeout):
            await client.set_time(4, utc)
        assert silent.clock_sets == 1 and silent.clock_offset_s == -900.0
