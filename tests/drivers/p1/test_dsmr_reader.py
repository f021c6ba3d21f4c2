"""The P1 reader over real loopback TCP and a pty, against the simulated meter and broken peers."""

from __future__ import annotations

import pytest

from openami.drivers.p1 import (
    P1ProtocolError,
    P1Reader,
    P1Timeout,
    P1Unreachable,
    dsmr,
    open_serial,
    open_tcp,
    read_dsmr_serial,
    read_dsmr_tcp,
)
from openami.protocols.dsmr import (
    AuthenticationError,
    CrcError,
    DsmrTelegram,
    P1Keys,
    WrongKeyError,
    readings,
)
from openami.simulator.p1_meter import P1Encryption, SimulatedP1Meter, serial_settings
from openami.simulator.push_port import PushPortServer
from tests.drivers.p1.support import HOST, closed_port, floods, hang_up, pty_meter, sends, silent, tcp_peer

pytestmark = pytest.mark.timeout(30)
TELEGRAM_S = 2.0
KEYS = P1Keys(bytes(range(16)), bytes(range(16, 32)))


@pytest.mark.parametrize("version", ["5", "4", "2.2"])
async def test_tcp_read_gives_what_the_meter_sent(version: str) -> None:
    meter = SimulatedP1Meter(2, version=version, interval_s=0.05)  # type: ignore[arg-type]
    async with PushPortServer(meter) as server:
        telegram = await read_dsmr_tcp(HOST, server.port, telegram_s=TELEGRAM_S)
    assert telegram.equipment_id == meter.equipment_id
    if version != "2.2":
        assert telegram.crc_ok and telegram.timestamp is not None
        got = {r.channel: r.value for r in readings(telegram)}
        assert got == {c: m.value for c, m in meter.measurements(telegram.timestamp).items()}


async def test_one_connection_reads_telegram_after_telegram() -> None:
    meter = SimulatedP1Meter(3, interval_s=0.05)
    async with (
        PushPortServer(meter) as server,
        await open_tcp(HOST, server.port, dsmr(), telegram_s=TELEGRAM_S) as reader,
    ):
        stamps = [(await reader.next()).timestamp for _ in range(5)]
    assert all(s is not None for s in stamps)
    assert stamps == sorted(stamps)  # type: ignore[type-var]


async def test_crc_corrupted_telegrams_are_skipped() -> None:
    meter = SimulatedP1Meter(4, interval_s=0.05)
    async with (
        PushPortServer(meter) as server,
        await open_tcp(HOST, server.port, dsmr(), telegram_s=TELEGRAM_S) as reader,
    ):
        meter.corrupt_next = 2
        telegram = await reader.next()
    assert telegram.crc_ok
    assert reader.refused == 2
    assert any(isinstance(e, CrcError) for e in reader.parser.errors)


async def test_only_corrupted_telegrams_is_a_protocol_error() -> None:
    meter = SimulatedP1Meter(4, interval_s=0.05)
    meter.corrupt_next = 10**6
    async with PushPortServer(meter) as server:
        with pytest.raises(P1ProtocolError, match="refused") as info:
            await read_dsmr_tcp(HOST, server.port, telegram_s=0.5)
    assert isinstance(info.value.cause, CrcError)


async def test_a_reader_joining_mid_telegram_takes_the_next_whole_one() -> None:
    meter = SimulatedP1Meter(5)
    one = meter.telegram()
    async with tcp_peer(sends(one[len(one) // 3 :] + b"\x00\xff" + one)) as port:
        telegram = await read_dsmr_tcp(HOST, port, telegram_s=TELEGRAM_S)
    assert telegram.crc_ok and telegram.equipment_id == meter.equipment_id


async def test_silent_port_times_out() -> None:
    async with tcp_peer(silent) as port:
        with pytest.raises(P1Timeout, match=r"no DSMR telegram within 0\.3 s"):
            await read_dsmr_tcp(HOST, port, telegram_s=0.3)


async def test_fragment_then_silence_is_a_timeout_not_a_protocol_error() -> None:
    async with tcp_peer(sends(SimulatedP1Meter(1).telegram()[:200])) as port:
        with pytest.raises(P1Timeout):
            await read_dsmr_tcp(HOST, port, telegram_s=0.3)


async def test_peer_closing_is_unreachable() -> None:
    async with tcp_peer(hang_up) as port:
        with pytest.raises(P1Unreachable, match="closed the line"):
            await read_dsmr_tcp(HOST, port, telegram_s=TELEGRAM_S)
    meter = SimulatedP1Meter(6, interval_s=0.05)
    async with (
        PushPortServer(meter) as server,
        await open_tcp(HOST, server.port, dsmr(), telegram_s=TELEGRAM_S) as reader,
    ):
        await reader.next()
        server.disconnect_all()  # the dongle reboots
        with pytest.raises(P1Unreachable):
            await _drain(reader)


async def _drain(reader: P1Reader[DsmrTelegram]) -> None:
    """Read until the line fails: telegrams already on the way may still arrive first."""
    for _ in range(1000):
        await reader.next()


async def test_nobody_listening_is_unreachable() -> None:
    with pytest.raises(P1Unreachable) as info:
        await read_dsmr_tcp(HOST, closed_port(), connect_s=1.0, telegram_s=TELEGRAM_S)
    assert not isinstance(info.value, P1Timeout)


async def test_a_flood_of_noise_is_bounded() -> None:
    async with tcp_peer(floods(b"1-0:1.8.1(000001.000*kWh)\r\n" * 100)) as port:
        reader = await open_tcp(HOST, port, dsmr(), max_bytes=50_000, telegram_s=TELEGRAM_S)
        with pytest.raises(P1ProtocolError, match="bytes without a usable"):
            async with reader:
                await reader.next()
        assert reader.parser.buffered <= 16 * 1024 + 16 + 0x10000


async def test_encrypted_port() -> None:
    meter = SimulatedP1Meter(7, interval_s=0.05, encryption=P1Encryption(b"LUXSMART", KEYS))
    async with PushPortServer(meter) as server:
        telegram = await read_dsmr_tcp(HOST, server.port, keys=KEYS, telegram_s=TELEGRAM_S)
        assert telegram.crc_ok and telegram.equipment_id == meter.equipment_id
        async with await open_tcp(HOST, server.port, dsmr(KEYS), telegram_s=TELEGRAM_S) as reader:
            meter.corrupt_next = 1
            assert (await reader.next()).crc_ok
        assert reader.refused == 1 and any(isinstance(e, AuthenticationError) for e in reader.parser.errors)
        with pytest.raises(P1ProtocolError) as info:
            await read_dsmr_tcp(HOST, server.port, keys=P1Keys(bytes(16), None), telegram_s=0.5)
        assert isinstance(info.value.cause, WrongKeyError)


@pytest.mark.parametrize("version", ["5", "2.2"])
async def test_serial_read_over_pty(version: str) -> None:
    meter = SimulatedP1Meter(8, version=version, interval_s=0.05)  # type: ignore[arg-type]
    baudrate, framing = serial_settings(meter.version)
    async with pty_meter(meter) as path:
        telegram = await read_dsmr_serial(path, baudrate=baudrate, framing=framing, telegram_s=TELEGRAM_S)
        assert telegram.equipment_id == meter.equipment_id
        async with await open_serial(
            path, dsmr(), baudrate=baudrate, framing=framing, telegram_s=TELEGRAM_S
        ) as reader:
            assert (await reader.next()).equipment_id == meter.equipment_id  # reopened cleanly


async def test_serial_unreachable() -> None:
    with pytest.raises(P1Unreachable):
        await read_dsmr_serial("/nonexistent/ttyUSB9", telegram_s=TELEGRAM_S)
    with pytest.raises(P1Unreachable):
        await read_dsmr_serial("/dev/null", baudrate=12345, telegram_s=TELEGRAM_S)  # no such rate
