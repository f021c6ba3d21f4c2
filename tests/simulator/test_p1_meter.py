"""The simulated P1 meter: telegrams per DSMR version, the model behind them, and its TCP and pty ports."""

from __future__ import annotations

import asyncio
import contextlib
import os
import tty
from datetime import UTC, datetime, timedelta

import pytest

from openami.protocols.dsmr import (
    DsmrStreamParser,
    DsmrTelegram,
    P1Keys,
    parse_encrypted_telegram,
    parse_telegram,
    readings,
)
from openami.simulator.p1_meter import P1Encryption, SimulatedP1Meter, serial_settings
from openami.simulator.push_port import PushPortServer, push_to_fd

pytestmark = pytest.mark.timeout(30)
T0 = datetime(2025, 1, 15, 11, 7, 42, 250_000, tzinfo=UTC)  # a Wednesday, 12:07 in Amsterdam


@pytest.mark.parametrize("version", ["5", "4", "2.2"])
def test_telegram_reports_the_models_measurements(version: str) -> None:
    meter = SimulatedP1Meter(4, version=version)  # type: ignore[arg-type]
    telegram = parse_telegram(meter.telegram(T0))
    assert telegram.crc_ok is (None if version == "2.2" else True)
    got = {r.channel: (r.value, r.unit, r.ts) for r in readings(telegram, received_at=T0, meter="m")}
    expected = meter.measurements(T0)
    assert set(got) == set(expected)
    stamp = T0.replace(microsecond=0)
    for channel, (value, unit, ts) in expected.items():
        assert got[channel] == (value, unit, ts or T0), channel
        assert ts is None or ts <= stamp
    assert telegram.equipment_id == meter.equipment_id
    assert [d.equipment_id for d in telegram.mbus] == [meter.gas_id]
    if version == "2.2":
        assert telegram.timestamp is None and telegram.version is None
    else:
        assert telegram.timestamp == stamp and telegram.version == ("5.0" if version == "5" else "4.2")


def test_v5_layout_clock_flags_and_gas_capture() -> None:
    meter = SimulatedP1Meter(1)
    summer = datetime(2025, 7, 1, 10, 0, 0, tzinfo=UTC)
    assert "0-0:1.0.0(250701120000S)" in meter.lines(summer)
    assert "0-0:1.0.0(250115120742W)" in meter.lines(T0)
    # The repeated autumn hour: two instants an hour apart show the same wall time, told apart by S/W.
    first, second = datetime(2025, 10, 26, 0, 30, tzinfo=UTC), datetime(2025, 10, 26, 1, 30, tzinfo=UTC)
    assert parse_telegram(meter.telegram(first)).timestamp == first
    assert parse_telegram(meter.telegram(second)).timestamp == second
    assert "0-0:1.0.0(251026023000S)" in meter.lines(first) and "0-0:1.0.0(251026023000W)" in meter.lines(
        second
    )
    assert meter.gas_capture(T0) == datetime(2025, 1, 15, 11, 5, tzinfo=UTC)
    assert SimulatedP1Meter(1, version="4").gas_capture(T0) == datetime(2025, 1, 15, 11, tzinfo=UTC)
    text = meter.telegram(T0).decode()
    assert text.startswith("/OAM5\\2SIM-P1-5\r\n\r\n1-3:0.2.8(50)\r\n") and text.endswith("\r\n")
    assert meter.interval_s == 1.0 and SimulatedP1Meter(version="4").interval_s == 10.0
    assert serial_settings("5") == (115200, "8N1") and serial_settings("2.2") == (9600, "7E1")


def test_registers_grow_and_tariffs_add_up() -> None:
    meter = SimulatedP1Meter(9)
    last: dict[str, float] = {}
    for step in range(200):
        at = T0 + timedelta(minutes=7 * step, seconds=13)
        m = meter.measurements(at)
        assert m["1-0:1.8.1"].value + m["1-0:1.8.2"].value == meter.household.import_wh(at)
        assert m["1-0:2.8.1"].value + m["1-0:2.8.2"].value == meter.household.export_wh(at)
        for channel in ("1-0:1.8.1", "1-0:1.8.2", "1-0:2.8.1", "1-0:2.8.2", "0-1:24.2.1"):
            assert m[channel].value >= last.get(channel, 0), (channel, at)
            last[channel] = m[channel].value
        assert 226.0 <= m["1-0:32.7.0"].value <= 234.0
    assert meter.tariff(datetime(2025, 1, 18, 12, tzinfo=UTC)) == 1  # Saturday
    assert meter.tariff(datetime(2025, 1, 15, 23, tzinfo=UTC)) == 1  # midnight in Amsterdam
    assert meter.tariff(T0) == 2


def test_pv_households_export_only_while_the_sun_shines() -> None:
    meter = SimulatedP1Meter(0)  # seed 0 has PV
    noon = datetime(2025, 5, 5, 12, tzinfo=UTC)
    assert meter.measurements(noon)["1-0:2.7.0"].value == meter.household.pv_w > 0
    assert meter.measurements(noon.replace(hour=20))["1-0:2.7.0"].value == 0
    assert SimulatedP1Meter(2).household.pv_w == 0


def test_corrupted_telegram_fails_its_crc_once() -> None:
    meter = SimulatedP1Meter(3)
    meter.corrupt_next = 1
    parser = DsmrStreamParser()
    assert parser.feed(meter.frame(T0)) == []
    assert len(parser.feed(meter.frame(T0))) == 1
    assert len(parser.errors) == 1


def test_encrypted_meter_counts_its_frames() -> None:
    keys = P1Keys(bytes(range(16)), bytes(range(16, 32)))
    meter = SimulatedP1Meter(5, encryption=P1Encryption(b"LUXSMART", keys, frame_counter=41))
    frames = [meter.frame(T0), meter.frame(T0)]
    assert [int.from_bytes(f[14:18], "big") for f in frames] == [41, 42]
    assert parse_encrypted_telegram(frames[1], keys).equipment_id == meter.equipment_id


async def test_tcp_port_pushes_the_same_telegram_to_every_reader() -> None:
    meter = SimulatedP1Meter(6, interval_s=0.05)
    async with PushPortServer(meter) as server:
        (r1, w1), (r2, w2) = [await asyncio.open_connection("127.0.0.1", server.port) for _ in range(2)]
        try:
            p1, p2 = DsmrStreamParser(), DsmrStreamParser()
            got1: list[tuple[object, ...]] = []
            got2: list[tuple[object, ...]] = []
            async with asyncio.timeout(5):
                while len(got1) < 3 or len(got2) < 3:
                    got1 += [t.objects for t in p1.feed(await r1.read(4096))]
                    got2 += [t.objects for t in p2.feed(await r2.read(4096))]
            assert server.sent >= 3
            assert set(got1[-2:]) & set(got2[-2:])  # one meter clock: the same telegrams to both
        finally:
            w1.close()
            w2.close()


async def test_pty_port_writes_telegrams() -> None:
    meter = SimulatedP1Meter(8, interval_s=0.05)
    master, slave = os.openpty()
    tty.setraw(slave)
    os.set_blocking(slave, False)
    task = asyncio.create_task(push_to_fd(meter, master))
    try:
        parser = DsmrStreamParser()
        got: list[DsmrTelegram] = []
        async with asyncio.timeout(5):
            while len(got) < 2:
                await asyncio.sleep(0.01)
                with contextlib.suppress(BlockingIOError):
                    got += parser.feed(os.read(slave, 4096))
        assert all(t.crc_ok for t in got)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        os.close(slave)


async def test_pty_port_stops_after_its_frames() -> None:
    meter = SimulatedP1Meter(8, interval_s=0.01)
    master, slave = os.openpty()
    try:
        await asyncio.wait_for(push_to_fd(meter, master, frames=2), 5)
    finally:
        os.close(slave)


async def test_serve_push_meters_runs_one_port_per_meter() -> None:
    """The body of ``openami simulate p1``: ports reported once they listen, served until cancelled."""
    from openami.drivers.p1 import read_dsmr_tcp
    from openami.simulator.p1_meter import build_p1_meters
    from openami.simulator.push_port import serve_push_meters

    keys = P1Keys(bytes(range(16)), bytes(range(16)))
    meters = build_p1_meters(3, interval_s=0.05, keys=keys, seed=20)
    ready: asyncio.Future[list[PushPortServer]] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(serve_push_meters(meters, on_ready=ready.set_result))
    try:
        servers = await asyncio.wait_for(ready, 5)
        assert len({s.port for s in servers}) == 3
        telegram = await read_dsmr_tcp("127.0.0.1", servers[2].port, keys=keys, telegram_s=2)
        assert telegram.equipment_id == meters[2].equipment_id == "E0099000000000022"
        assert {m.encryption.system_title for m in meters if m.encryption} == {
            b"OAMP" + bytes([0, 0, 0, i]) for i in range(3)
        }
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
