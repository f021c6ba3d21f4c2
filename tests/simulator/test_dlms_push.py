"""The simulated DLMS push meter: what it sends must decode, decipher and read back as its model says."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from itertools import pairwise

import pytest

from openami.protocols.dlms.security import InvocationCounterGuard, decrypt
from openami.protocols.dlms.stream import decode_stream
from openami.protocols.dlms.wrapper import WrapperStreamParser
from openami.simulator.dlms_push import DlmsPushMeter
from openami.simulator.gateway import SimMeter

TITLE = bytes.fromhex("4F414D0102030405")
EK = bytes(range(16))
AK = bytes(range(16, 32))
DAY = datetime(2026, 3, 2, tzinfo=UTC)


def _meter() -> DlmsPushMeter:
    return DlmsPushMeter("DLMS-000001", TITLE, EK, AK, seed=7)


def test_pushes_decode_to_the_models_registers() -> None:
    meter = _meter()
    frames = list(meter.frames(DAY, DAY + timedelta(days=1)))
    assert len(frames) == 96
    result = decode_stream(b"".join(frames), encryption_key=EK, authentication_key=AK)
    assert result.errors == []
    assert len(result.notifications) == 96
    times = [n.timestamp for n in result.notifications]
    assert times == [DAY + timedelta(minutes=15 * k) for k in range(1, 97)]
    assert {n.meter_id for n in result.notifications} == {"DLMS-000001"}

    values = [{v.obis.reduced: (v.value, v.unit) for v in n.values} for n in result.notifications]
    assert [v["0-0:1.0.0"][0] for v in values] == [t.isoformat() for t in times if t is not None]
    imported = [v["1-0:1.8.0"] for v in values]
    assert {unit for _, unit in imported} == {"Wh"}
    assert {v["1-0:2.8.0"][1] for v in values} == {"Wh"}
    assert {v["1-0:1.7.0"][1] for v in values} == {"W"}
    # The import register is the same cumulative count the MQTT simulator reports (in kWh there).
    expected = next(
        s
        for s in SimMeter("x", "electricity", seed=7).series(DAY, DAY + timedelta(days=1))
        if s.kind == "register"
    )
    assert [value / 1000 for value, _ in imported] == pytest.approx(expected.values)
    wh = [value for value, _ in imported]
    assert all(b >= a for a, b in pairwise(wh)) and wh[-1] > wh[0]
    exported = [e for v in values if isinstance(e := v["1-0:2.8.0"][0], int)]
    assert len(exported) == 96
    assert exported == sorted(exported)
    # Power is the mean of the quarter hour that just ended: its energy times four.
    power = [v["1-0:1.7.0"][0] for v in values]
    assert power[1:] == [4 * (b - a) for a, b in pairwise(wh)]


def test_every_push_is_ciphered_wrapped_and_counts_up() -> None:
    meter = _meter()
    frames = WrapperStreamParser().feed(b"".join(meter.frames(DAY, DAY + timedelta(hours=2))))
    assert {(f.source, f.destination) for f in frames} == {(1, 1)}
    guard = InvocationCounterGuard()
    for counter, frame in enumerate(frames, start=1):
        assert frame.apdu[0] == 0xDB  # general-glo-ciphering
        deciphered = decrypt(frame.apdu, encryption_key=EK, authentication_key=AK)
        assert deciphered.security_control.to_byte() == 0x30
        assert (deciphered.system_title, deciphered.invocation_counter) == (TITLE, counter)
        assert deciphered.plaintext[0] == 0x0F  # data-notification
        guard.accept(TITLE, counter)
    assert meter.invocation_counter == 8
    # A later span continues the count rather than reusing counters the head-end has seen.
    later = WrapperStreamParser().feed(next(meter.frames(DAY, DAY + timedelta(minutes=15))))
    assert decrypt(later[0].apdu, encryption_key=EK, authentication_key=AK).invocation_counter == 9


def test_the_wrong_key_does_not_open_a_push() -> None:
    frame = next(_meter().frames(DAY, DAY + timedelta(minutes=15)))
    result = decode_stream(frame, encryption_key=EK, authentication_key=bytes(16))
    assert result.notifications == []
    assert len(result.errors) == 1


@pytest.mark.parametrize("every", [timedelta(0), timedelta(minutes=10), timedelta(minutes=-15)])
def test_the_push_period_is_whole_quarter_hours(every: timedelta) -> None:
    with pytest.raises(ValueError, match="multiple of 15 minutes"):
        _meter().push_times(DAY, DAY + timedelta(hours=1), every)


def test_hourly_pushes() -> None:
    times = _meter().push_times(DAY, DAY + timedelta(days=1), timedelta(hours=1))
    assert times == [DAY + timedelta(hours=h) for h in range(1, 25)]


async def test_push_span_sends_every_push_over_one_connection() -> None:
    received = bytearray()
    connections = 0

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        received.extend(await reader.read())
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        meter = _meter()
        sent = await meter.push_span("127.0.0.1", port, DAY, DAY + timedelta(hours=6))
        assert await meter.push_span("127.0.0.1", port, DAY, DAY) == 0  # nothing to send, no connection
        for _ in range(100):
            if len(WrapperStreamParser().feed(bytes(received))) == sent:
                break
            await asyncio.sleep(0.02)
    assert sent == 24
    assert connections == 1
    result = decode_stream(bytes(received), encryption_key=EK, authentication_key=AK)
    assert (len(result.notifications), result.errors) == (24, [])


async def test_run_live_pushes_each_completed_quarter_hour() -> None:
    seen: list[datetime | None] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        result = decode_stream(await reader.read(), encryption_key=EK, authentication_key=AK)
        seen.extend(n.timestamp for n in result.notifications)
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        start = DAY + timedelta(minutes=7)
        sent = await _meter().run_live("127.0.0.1", port, time_factor=90_000, start=start, intervals=3)
        for _ in range(100):
            if len(seen) == 3:
                break
            await asyncio.sleep(0.02)
    assert sent == 3
    assert seen == [DAY + timedelta(minutes=m) for m in (15, 30, 45)]
