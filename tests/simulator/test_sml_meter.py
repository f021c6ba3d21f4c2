"""The simulated eHZ: SML files from the household model, with and without a clock, over TCP and a pty."""

from __future__ import annotations

import asyncio
import contextlib
import os
import tty
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from openami.protocols.sml import GetListResponse, SmlFile, SmlStreamParser, parse_file, values
from openami.simulator.push_port import PushPortServer, push_to_fd
from openami.simulator.sml_meter import SimulatedSmlMeter

pytestmark = pytest.mark.timeout(30)
T0 = datetime(2025, 6, 21, 12, 30, 9, 900_000, tzinfo=UTC)


def _reported(data: bytes) -> dict[str, tuple[Any, Any, Any]]:
    return {r.name: (r.value, r.unit, r.timestamp) for r in values(parse_file(data))}


@pytest.mark.parametrize("seed", [0, 2, 13])
def test_file_reports_the_models_measurements(seed: int) -> None:
    meter = SimulatedSmlMeter(seed)
    data = meter.file(T0)
    sml = parse_file(data)
    assert sml.crc_ok and all(m.crc_ok for m in sml.messages)
    got = _reported(data)
    for channel, (value, unit, stamp) in meter.measurements(T0).items():
        assert got[channel] == (value, unit, stamp)
    assert got["129-129:199.130.3"][0] == "OAM"
    assert got["1-0:0.0.9"][0] == meter.server_id.hex().upper()
    body = sml.messages[1].body
    assert isinstance(body, GetListResponse) and body.act_sensor_time is not None
    assert body.act_sensor_time.sec_index is not None and body.act_sensor_time.timestamp is None


def test_net_power_is_negative_while_feeding_in() -> None:
    meter = SimulatedSmlMeter(1)  # a PV household: 950 W at noon against a few hundred W of load
    assert meter.measurements(T0)["1-0:16.7.0"].value == meter.household.import_w(T0) - 950 < 0
    assert _reported(meter.file(T0))["1-0:16.7.0"][0] < 0  # a signed integer on the wire
    night = T0.replace(hour=23)
    assert meter.measurements(night)["1-0:16.7.0"].value == meter.household.import_w(night) >= 0


def test_registers_grow_and_files_are_numbered() -> None:
    meter = SimulatedSmlMeter(7)
    previous = 0
    ids = set()
    for step in range(50):
        at = T0 + timedelta(minutes=11 * step)
        value = meter.measurements(at)["1-0:1.8.0"].value
        assert value >= previous
        previous = int(value)
        ids.add(parse_file(meter.file(at)).messages[0].transaction_id)
    assert len(ids) == 50


def test_clock_option_stamps_values() -> None:
    meter = SimulatedSmlMeter(1, clock=True)
    got = _reported(meter.file(T0))
    assert got["1-0:1.8.0"][2] == T0.replace(microsecond=0)


def test_corrupted_file_is_refused_once() -> None:
    meter = SimulatedSmlMeter(3)
    meter.corrupt_next = 1
    parser = SmlStreamParser()
    assert parser.feed(meter.frame(T0)) == []
    assert parser.errors  # a CRC mismatch, or a broken escape, depending on the byte hit
    assert len(parser.feed(meter.frame(T0))) == 1


async def test_tcp_port_pushes_files() -> None:
    meter = SimulatedSmlMeter(4, interval_s=0.05)
    async with PushPortServer(meter) as server:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        try:
            parser = SmlStreamParser()
            files: list[SmlFile] = []
            async with asyncio.timeout(5):
                while len(files) < 3:
                    files += parser.feed(await reader.read(4096))
            assert all(f.crc_ok for f in files)
        finally:
            writer.close()


async def test_pty_port_writes_files() -> None:
    meter = SimulatedSmlMeter(5, interval_s=0.05)
    master, slave = os.openpty()
    tty.setraw(slave)
    os.set_blocking(slave, False)
    task = asyncio.create_task(push_to_fd(meter, master))
    try:
        parser = SmlStreamParser()
        files: list[SmlFile] = []
        async with asyncio.timeout(5):
            while len(files) < 2:
                await asyncio.sleep(0.01)
                with contextlib.suppress(BlockingIOError):
                    files += parser.feed(os.read(slave, 4096))
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        os.close(slave)
