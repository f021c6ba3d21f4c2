"""The SML reader over real loopback TCP and a pty, against the simulated eHZ and broken peers."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from openami.drivers.p1 import (
    SML,
    P1ProtocolError,
    P1Timeout,
    P1Unreachable,
    open_tcp,
    read_sml_serial,
    read_sml_tcp,
)
from openami.protocols.sml import SmlCrcError, SmlError, values
from openami.simulator.push_port import PushPortServer
from openami.simulator.sml_meter import SimulatedSmlMeter
from tests.drivers.p1.support import HOST, hang_up, pty_meter, sends, silent, tcp_peer

pytestmark = pytest.mark.timeout(30)
TELEGRAM_S = 2.0


def _values(file: object) -> dict[str, object]:
    return {r.name: r.value for r in values(file)}  # type: ignore[arg-type]


async def test_tcp_read_gives_what_the_meter_sent() -> None:
    meter = SimulatedSmlMeter(3, interval_s=0.05)
    async with PushPortServer(meter) as server:
        sml = await read_sml_tcp(HOST, server.port, telegram_s=TELEGRAM_S)
    assert sml.crc_ok
    got = _values(sml)
    assert got["1-0:0.0.9"] == meter.server_id.hex().upper()
    assert got["1-0:1.8.0"] >= 0 and "1-0:16.7.0" in got  # type: ignore[operator]


async def test_values_match_the_model_for_a_fixed_clock() -> None:
    at = datetime(2025, 2, 3, 4, 5, 6, tzinfo=UTC)
    meter = SimulatedSmlMeter(9, interval_s=0.05, now=lambda: at)
    async with PushPortServer(meter) as server:
        got = _values(await read_sml_tcp(HOST, server.port, telegram_s=TELEGRAM_S))
    assert {c: got[c] for c in meter.measurements(at)} == {
        c: m.value for c, m in meter.measurements(at).items()
    }


async def test_corrupted_files_are_skipped() -> None:
    meter = SimulatedSmlMeter(4, interval_s=0.05)
    async with (
        PushPortServer(meter) as server,
        await open_tcp(HOST, server.port, SML, telegram_s=TELEGRAM_S) as reader,
    ):
        meter.corrupt_next = 2
        sml = await reader.next()
    assert sml.crc_ok
    assert any(isinstance(e, SmlError) for e in reader.parser.errors)


async def test_only_corrupted_files_is_a_protocol_error() -> None:
    meter = SimulatedSmlMeter(4, interval_s=0.05)
    meter.corrupt_next = 10**6
    async with PushPortServer(meter) as server:
        with pytest.raises(P1ProtocolError, match="refused") as info:
            await read_sml_tcp(HOST, server.port, telegram_s=0.5)
    assert isinstance(info.value.cause, SmlCrcError)


async def test_join_mid_file_takes_the_next_whole_one() -> None:
    one = SimulatedSmlMeter(5).file()
    async with tcp_peer(sends(one[len(one) // 2 :] + one)) as port:
        sml = await read_sml_tcp(HOST, port, telegram_s=TELEGRAM_S)
    assert sml.crc_ok


async def test_silent_and_closing_peers() -> None:
    async with tcp_peer(silent) as port:
        with pytest.raises(P1Timeout, match="no SML file"):
            await read_sml_tcp(HOST, port, telegram_s=0.3)
    async with tcp_peer(hang_up) as port:
        with pytest.raises(P1Unreachable, match="closed"):
            await read_sml_tcp(HOST, port, telegram_s=TELEGRAM_S)


async def test_serial_read_over_pty() -> None:
    meter = SimulatedSmlMeter(6, interval_s=0.05)
    async with pty_meter(meter) as path:
        sml = await read_sml_serial(path, telegram_s=TELEGRAM_S)
    assert sml.crc_ok and _values(sml)["1-0:0.0.9"] == meter.server_id.hex().upper()


async def test_serial_unreachable() -> None:
    with pytest.raises(P1Unreachable):
        await read_sml_serial("/nonexistent/ttyUSB0", telegram_s=TELEGRAM_S)
