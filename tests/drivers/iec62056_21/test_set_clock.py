"""Setting a meter's clock in programming mode, over real loopback TCP against the simulator."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from openami.drivers.iec62056_21 import (
    Iec62056PasswordRejected,
    Iec62056Refused,
    Iec62056Timeout,
    read_tcp,
    set_clock,
)
from openami.protocols.iec62056_21 import Readout
from openami.protocols.iec62056_21.programming import BREAK, Reply, encode_password, encode_write, parse_reply
from openami.simulator.iec62056_21_meter import IecMeterServer, SimulatedIecMeter

pytestmark = pytest.mark.timeout(30)
HOST = "127.0.0.1"


def shown(readout: Readout) -> datetime:
    date, clock = readout.find("0.9.2"), readout.find("0.9.1")
    assert date is not None and clock is not None
    return datetime.strptime(f"{date.value}{clock.value}", "%y%m%d%H%M%S").replace(tzinfo=UTC)


async def test_right_password_sets_the_clock_and_the_readout_shows_it() -> None:
    meter = SimulatedIecMeter(password="s3cret", clock_offset_s=-7200.0)  # two hours (and a day?) behind
    async with IecMeterServer(meter) as server:
        before = shown(await read_tcp(HOST, server.port, answer_s=1.0, readout_s=5.0))
        assert abs((before - datetime.now(UTC)).total_seconds() + 7200) < 2
        target = datetime.now(UTC) + timedelta(days=3, seconds=30)
        await set_clock(HOST, server.port, target, password="s3cret", answer_s=1.0)
        after = shown(await read_tcp(HOST, server.port, answer_s=1.0, readout_s=5.0))
    assert abs((after - target).total_seconds()) < 2 and meter.clock_writes == 2


async def test_wrong_password_is_typed_and_leaves_the_clock() -> None:
    meter = SimulatedIecMeter(password="s3cret", clock_offset_s=-600.0)
    async with IecMeterServer(meter) as server:
        with pytest.raises(Iec62056PasswordRejected, match="password"):
            await set_clock(HOST, server.port, datetime.now(UTC), password="guess", answer_s=1.0)
        after = shown(await read_tcp(HOST, server.port, answer_s=1.0, readout_s=5.0))
    assert meter.clock_offset_s == -600.0 and meter.clock_writes == 0
    assert abs((after - datetime.now(UTC)).total_seconds() + 600) < 2


async def test_meter_without_programming_and_silent_line() -> None:
    meter = SimulatedIecMeter()  # no password: programming mode refused with NAK
    async with IecMeterServer(meter) as server:
        with pytest.raises(Iec62056PasswordRejected, match="programming mode refused"):
            await set_clock(HOST, server.port, datetime.now(UTC), password="x", answer_s=1.0)
        with pytest.raises(Iec62056Timeout):  # a sign-on for another meter: nobody answers
            await set_clock(HOST, server.port, datetime.now(UTC), address="9", password="x", answer_s=0.3)
    assert meter.clock_writes == 0


async def test_mode_a_meter_cannot_be_programmed() -> None:
    async with IecMeterServer(SimulatedIecMeter(mode="A", password="p")) as server:
        with pytest.raises(Iec62056Refused, match="mode C"):
            await set_clock(HOST, server.port, datetime.now(UTC), password="p", answer_s=1.0)


def test_simulator_refuses_other_writes_and_bad_bcc() -> None:
    """Sans-IO: an unknown address or a malformed time is ``(ERROR)``, a wrong BCC is NAKed, and no
    write counts before the password."""
    meter = SimulatedIecMeter(password="pw", clock_offset_s=0.0)
    session = meter.session()
    assert session.receive(b"/?!\r\n").startswith(b"/ISK5")
    assert session.receive(b"\x06001\r\n").startswith(b"\x01P0\x02(71234567)\x03")
    assert session.receive(encode_write("0.9.1", "000000")) == b"\x15"  # not yet authorised
    assert session.receive(encode_password("pw")) == b"\x06"
    error = session.receive(encode_write("1.8.0", "0"))
    assert parse_reply(error) == (Reply("error", "ERROR"), len(error))
    assert parse_reply(session.receive(encode_write("0.9.1", "256161")))[0].kind == "error"  # type: ignore[index]
    corrupted = bytearray(encode_write("0.9.1", "000000"))
    corrupted[-1] ^= 0x40
    assert session.receive(bytes(corrupted)) == b"\x15"
    assert session.receive(BREAK) == b"" and not session.programming
    assert meter.clock_writes == 0 and meter.clock_offset_s == 0.0
