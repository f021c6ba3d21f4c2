"""The driver end to end over real loopback TCP and a pty, against the simulator and broken meters."""

from __future__ import annotations

import asyncio
import os
import termios
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from openami.drivers.iec62056_21 import (
    Iec62056ProtocolError,
    Iec62056Timeout,
    Iec62056Unreachable,
    SerialLine,
    read_serial,
    read_tcp,
)
from openami.protocols.iec62056_21 import to_json
from openami.simulator.iec62056_21_meter import IecMeterServer, SimulatedIecMeter, serve_iec_fd
from tests.protocols.iec62056_21.examples import EMH_DATA, EMH_IDENTIFICATION

pytestmark = pytest.mark.timeout(30)
HOST = "127.0.0.1"
FAST = {"answer_s": 1.0, "readout_s": 5.0}


@pytest.mark.parametrize("mode", ["A", "B", "C"])
async def test_tcp_readout_each_mode(mode: str) -> None:
    meter = SimulatedIecMeter("99887766", mode=mode)  # type: ignore[arg-type]
    async with IecMeterServer(meter) as server:
        readout = await read_tcp(HOST, server.port, **FAST)
    doc = to_json(readout)
    assert doc["manufacturer"] == "ISK" and doc["identification"] == "ME382-1000"
    assert readout.find("C.1.0").value == "99887766"  # type: ignore[union-attr]
    assert readout.bcc_checked and readout.timestamp is not None
    if mode == "C":
        assert readout.option is not None and readout.option.baudrate == 300  # a converter: no switch


async def test_tcp_readout_with_switch_and_address() -> None:
    meter = SimulatedIecMeter(address="12345678")
    async with IecMeterServer(meter) as server:
        readout = await read_tcp(HOST, server.port, address="12345678", switch_baudrate=True, **FAST)
        assert readout.option is not None and readout.option.baudrate == 9600
        with pytest.raises(Iec62056Timeout):
            await read_tcp(HOST, server.port, address="1", answer_s=0.3, readout_s=2)


async def test_tcp_multidrop_and_fixed_line_rate() -> None:
    meters = [SimulatedIecMeter("11111111", address="11111111"), SimulatedIecMeter("22222222", address="22")]
    async with IecMeterServer(meters) as server:
        first = await read_tcp(HOST, server.port, address="11111111", **FAST)
        second = await read_tcp(HOST, server.port, address="22", baudrate=9600, **FAST)
        with pytest.raises(Iec62056Timeout):  # /?! on a shared line: nobody answers
            await read_tcp(HOST, server.port, answer_s=0.3, readout_s=2)
    assert first.find("C.1.0").value == "11111111"  # type: ignore[union-attr]
    assert second.find("C.1.0").value == "22222222"  # type: ignore[union-attr]
    assert second.option is not None and second.option.baudrate == 9600  # asked to stay at the fixed rate


@pytest.fixture
async def pty_meter() -> AsyncIterator[tuple[SimulatedIecMeter, str]]:
    """A meter on the master side of a pty; the driver opens the slave's path."""
    meter = SimulatedIecMeter("55554444")
    master, slave = os.openpty()
    task = asyncio.create_task(serve_iec_fd(meter, master))
    try:
        yield meter, os.ttyname(slave)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        os.close(slave)  # held until now: with no slave open, the master would read EIO


async def test_serial_readout_over_pty(pty_meter: tuple[SimulatedIecMeter, str]) -> None:
    _meter, path = pty_meter
    readout = await read_serial(path, max_baudrate=4800, **FAST)
    assert readout.option is not None and readout.option.baudrate == 4800
    assert readout.find("C.1.0").value == "55554444"  # type: ignore[union-attr]
    again = await read_serial(path, **FAST)  # the line is closed and reopened cleanly
    assert again.option is not None and again.option.baudrate == 9600


async def test_serial_line_is_7e1_and_switches(
    pty_meter: tuple[SimulatedIecMeter, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The attributes asked for are checked as passed: a Linux pty forces CS8 and no parity on itself."""
    _, path = pty_meter
    asked: list[list[Any]] = []
    real = termios.tcsetattr

    def record(fd: int, when: int, attributes: list[Any]) -> None:
        asked.append(attributes)
        real(fd, when, attributes)

    monkeypatch.setattr(termios, "tcsetattr", record)
    line = await SerialLine.open(path)
    try:
        iflag, _, cflag, _, ispeed, ospeed, _ = asked[0]
        assert cflag & termios.CSIZE == termios.CS7
        assert cflag & termios.PARENB and not cflag & termios.PARODD and not cflag & termios.CSTOPB
        assert iflag == termios.ISTRIP
        assert ispeed == ospeed == termios.B300
        await line.send(b"/?!\r\n")
        await line.set_baudrate(9600, 1.0)
        assert asked[-1][4:6] == [termios.B9600, termios.B9600]
        fd = line._stream.fd
        assert fd is not None and termios.tcgetattr(fd)[4:6] == [termios.B9600, termios.B9600]
    finally:
        line.close()


async def test_serial_unreachable() -> None:
    with pytest.raises(Iec62056Unreachable):
        await read_serial("/nonexistent/tty", **FAST)


Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def run_broken(handler: Handler, **kwargs: float) -> None:
    server = await asyncio.start_server(handler, HOST, 0)
    port = server.sockets[0].getsockname()[1]
    try:
        await read_tcp(HOST, port, **{**FAST, **kwargs})  # type: ignore[arg-type]
    finally:
        server.close()
        await server.wait_closed()


async def test_silent_meter_times_out() -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(100)
        await asyncio.sleep(5)

    with pytest.raises(Iec62056Timeout, match="await identification"):
        await run_broken(silent, answer_s=0.2)


async def test_slow_data_message_bounded_by_readout_s() -> None:
    async def dribble(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(100)
        writer.write(b"/ABCZmeter\r\n\x02")
        for _ in range(100):
            writer.write(b"1.8.0(1*kWh)\r\n")
            await writer.drain()
            await asyncio.sleep(0.05)

    with pytest.raises(Iec62056Timeout, match="await data"):
        await run_broken(dribble, answer_s=1.0, readout_s=0.5)


async def test_bad_bcc_is_a_protocol_error() -> None:
    async def corrupt(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(100)
        writer.write(EMH_IDENTIFICATION)
        await reader.read(100)  # the option select
        writer.write(EMH_DATA[:-1] + b"?")
        await writer.drain()
        await asyncio.sleep(1)

    with pytest.raises(Iec62056ProtocolError, match="BCC"):
        await run_broken(corrupt)


async def test_closed_connection_is_unreachable() -> None:
    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(100)
        writer.write(b"/ISK5ME")
        writer.close()

    with pytest.raises(Iec62056Unreachable, match="closed"):
        await run_broken(hang_up)


async def test_connection_refused_is_unreachable() -> None:
    server = await asyncio.start_server(lambda r, w: None, HOST, 0)
    port = server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()
    with pytest.raises(Iec62056Unreachable):
        await read_tcp(HOST, port, **FAST)
