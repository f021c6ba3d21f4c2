"""The M-Bus master over a real pty: the simulated bus on the master side, the client on the slave's
path, as a level converter's tty would be."""

from __future__ import annotations

import asyncio
import os
import termios
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from typing import Any

import pytest

from openami.drivers.mbus import (
    MbusBaudrateRefused,
    MbusClient,
    MbusCollision,
    MbusProtocolError,
    MbusSerialClient,
    MbusTcpClient,
    MbusTimeout,
    MbusUnreachable,
)
from openami.protocols.mbus import MbusTelegram
from openami.protocols.mbus.master import SecondaryAddress
from openami.simulator.mbus_meter import MbusBusSimulator

pytestmark = pytest.mark.timeout(30)
FAST = 0.15


def _energy(telegram: MbusTelegram) -> dict[int, object]:
    """Energy by storage number (the heat meter sends storage 1 in its second telegram)."""
    return {
        r.storage: r.value
        for r in telegram.records
        if r.quantity == "energy" and r.function == "instantaneous"
    }


@pytest.fixture
async def pty_bus() -> AsyncIterator[tuple[MbusBusSimulator, str, int]]:
    """The default bus (heat meter at 1, water meters at 2 and 5) served on a pty's master side."""
    simulator = MbusBusSimulator()
    master, slave = os.openpty()
    task = asyncio.create_task(simulator.serve_fd(master))
    try:
        yield simulator, os.ttyname(slave), master
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        os.close(slave)  # held until now: with no slave open, the master would read EIO


async def test_primary_multi_telegram_read_over_a_tty(pty_bus: tuple[MbusBusSimulator, str, int]) -> None:
    _, path, _ = pty_bus
    async with MbusSerialClient(path, timeout=FAST) as client:
        assert client.baudrate == 2400 and client.peer == path
        telegram = await client.read_primary(1)
        water = await client.read_primary(2)
    assert telegram.header.id == "12345678"  # type: ignore[union-attr]
    assert _energy(telegram) == {0: 123456000, 1: 122456000}  # both telegrams, FCB toggled between
    assert not any(r.function == "more_records_follow" for r in telegram.records)
    assert water.header.id == "12345699"  # type: ignore[union-attr]


async def test_secondary_select_read_and_wildcard_search(pty_bus: tuple[MbusBusSimulator, str, int]) -> None:
    _, path, _ = pty_bus
    async with MbusSerialClient(path, timeout=FAST) as client:
        telegram = await client.read_secondary(SecondaryAddress("87654321"))
        volumes = [r.value for r in telegram.records if r.quantity == "volume" and not r.storage]
        assert volumes[0] == pytest.approx(4.242)
        client.timeout = 0.05  # every empty pattern of the search costs this (plus its 73 ms on the wire)
        assert sorted(await client.search(SecondaryAddress("123456FF"))) == ["12345678", "12345699"]
        assert await client.search(SecondaryAddress("8765432F")) == ["87654321"]


async def test_application_reset_restarts_the_readout(pty_bus: tuple[MbusBusSimulator, str, int]) -> None:
    _, path, _ = pty_bus
    async with MbusSerialClient(path, timeout=FAST) as client:
        await client.reset(1)
        first = await client.read_telegram(1)
        await client.application_reset(1)
        again = await client.read_telegram(1)  # the FCB toggled, yet the first telegram comes again
        await client.application_reset(1, 0x10)  # with a subcode (a long frame)
        assert (await client.read_telegram(1)).records == first.records
        with pytest.raises(ValueError, match="subcode"):
            await client.application_reset(1, 256)
    assert first.more_records_follow and again.records == first.records


async def test_serial_line_is_8e1_at_2400(
    pty_bus: tuple[MbusBusSimulator, str, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The attributes asked for are checked as passed: a Linux pty forces CS8 and no parity on itself."""
    _, path, _ = pty_bus
    asked: list[list[Any]] = []
    real = termios.tcsetattr

    def record(fd: int, when: int, attributes: list[Any]) -> None:
        asked.append(attributes)
        real(fd, when, attributes)

    monkeypatch.setattr(termios, "tcsetattr", record)
    async with MbusSerialClient(path, timeout=FAST) as client:
        await client.read_primary(5)
    iflag, _, cflag, lflag, ispeed, ospeed, _ = asked[0]
    assert cflag & termios.CSIZE == termios.CS8
    assert cflag & termios.PARENB and not cflag & termios.PARODD and not cflag & termios.CSTOPB
    assert (iflag, lflag) == (0, 0)  # raw: no echo, no translation, no stripping of the eighth bit
    assert ispeed == ospeed == termios.B2400


async def test_baud_switch_changes_both_ends(
    pty_bus: tuple[MbusBusSimulator, str, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    simulator, path, master = pty_bus
    speeds: list[tuple[int, int]] = []
    real = termios.tcsetattr

    def record(fd: int, when: int, attributes: list[Any]) -> None:
        speeds.append((fd, attributes[5]))
        real(fd, when, attributes)

    monkeypatch.setattr(termios, "tcsetattr", record)
    async with MbusSerialClient(path, timeout=FAST) as client:
        line_fd = client._line._stream.fd  # type: ignore[union-attr]
        await client.switch_baudrate(1, 9600)
        assert simulator.meters[0].baudrate == 9600
        assert client.baudrate == 9600
        # the simulated slave set its side after its E5, and the master its own: both asked for 9600
        assert (master, termios.B9600) in speeds and (line_fd, termios.B9600) in speeds
        assert termios.tcgetattr(line_fd)[4:6] == [termios.B9600, termios.B9600]
        assert termios.tcgetattr(master)[4:6] == [termios.B9600, termios.B9600]
        assert _energy(await client.read_primary(1))[0] == 123456000  # at 9600
        with pytest.raises(MbusTimeout):
            await client.read_primary(2)  # still at 2400: it hears garbage at 9600
        await client.use_baudrate(2400)
        assert (await client.read_primary(2)).header.id == "12345699"  # type: ignore[union-attr]
        with pytest.raises(MbusTimeout):
            await client.read_primary(1)  # now the switched one is out of hearing
        await client.use_baudrate(9600)
        await client.switch_baudrate(1, 2400)
        assert (await client.read_primary(1)).header.id == "12345678"  # type: ignore[union-attr]
        with pytest.raises(ValueError, match="not an M-Bus rate"):
            await client.switch_baudrate(1, 57600)
    assert simulator.meters[0].baudrate == 2400


async def test_a_master_at_the_wrong_rate_hears_nothing(pty_bus: tuple[MbusBusSimulator, str, int]) -> None:
    _, path, _ = pty_bus
    async with MbusSerialClient(path, baudrate=9600, timeout=FAST) as client:
        with pytest.raises(MbusTimeout):
            await client.read_primary(1)


async def test_silent_address_times_out_and_the_line_stays_usable(
    pty_bus: tuple[MbusBusSimulator, str, int],
) -> None:
    _, path, _ = pty_bus
    async with MbusSerialClient(path, timeout=FAST) as client:
        started = time.perf_counter()
        with pytest.raises(MbusTimeout):
            await client.read_primary(77)
        assert time.perf_counter() - started < FAST + 0.5
        assert not await client.select(SecondaryAddress("99999999"))
        assert (await client.read_primary(5)).header.id == "87654321"  # type: ignore[union-attr]


Slave = Callable[[int], Coroutine[Any, Any, None]]


async def _run_against(slave: Slave, action: Callable[[MbusClient], Awaitable[object]]) -> None:
    """Run ``action`` with a client on a pty whose far end is ``slave(master_fd)``."""
    master, tty = os.openpty()
    path = os.ttyname(tty)
    task = asyncio.create_task(slave(master))
    try:
        async with MbusSerialClient(path, timeout=FAST, settle=0.05) as client:
            await action(client)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        os.close(master)
        os.close(tty)


async def _answer_with(master: int, reply: bytes, *, forever: bool = False) -> None:
    loop = asyncio.get_running_loop()
    readable = asyncio.Event()
    loop.add_reader(master, readable.set)
    try:
        await readable.wait()
        os.read(master, 512)
        while True:
            os.write(master, reply)
            if not forever:
                await asyncio.sleep(10)
            await asyncio.sleep(0.005)
    finally:
        loop.remove_reader(master)


@pytest.mark.parametrize(
    ("reply", "forever", "error"),
    [
        (b"\x68\x10\x11\x68garbage", False, MbusCollision),  # length fields that differ
        (b"\x68\x20\x20\x68\x08\x01\x72", False, MbusCollision),  # a frame cut short, then silence
        (b"\x10\x5b\x01\x5c\x16\xe5", False, MbusProtocolError),  # an echoed request, then E5
        (b"\x55\xaa" * 64, True, MbusCollision),  # a slave babbling without pause
    ],
)
async def test_a_slave_answering_garbage_is_a_typed_error(
    reply: bytes, forever: bool, error: type[Exception]
) -> None:
    started = time.perf_counter()
    with pytest.raises(error):
        await _run_against(lambda fd: _answer_with(fd, reply, forever=forever), lambda c: c.read_primary(1))
    assert time.perf_counter() - started < 5  # bounded: 2400 baud, one maximal frame's time and the time-out


async def test_unopenable_tty_is_unreachable() -> None:
    with pytest.raises(MbusUnreachable):
        async with MbusSerialClient("/nonexistent/ttyUSB9"):
            pass
    with pytest.raises(ValueError, match="not an M-Bus rate"):
        MbusSerialClient("/dev/null", baudrate=1234)
    with pytest.raises(MbusUnreachable):  # not a tty: termios refuses it
        async with MbusSerialClient("/dev/null"):
            pass


async def test_baud_switch_over_tcp_needs_a_following_converter() -> None:
    async with MbusBusSimulator() as plain, MbusTcpClient("127.0.0.1", plain.port, timeout=FAST) as client:
        with pytest.raises(MbusBaudrateRefused, match="follows_baudrate"):
            await client.switch_baudrate(1, 9600)
        with pytest.raises(MbusBaudrateRefused):
            await client.use_baudrate(9600)
        assert plain.meters[0].baudrate == 2400  # nothing was sent
        assert (await client.read_primary(1)).header.id == "12345678"  # type: ignore[union-attr]
    async with (
        MbusBusSimulator(converter_follows=True) as following,
        MbusTcpClient("127.0.0.1", following.port, timeout=FAST, follows_baudrate=True) as client,
    ):
        await client.switch_baudrate(1, 9600)
        assert following.meters[0].baudrate == 9600 and client.baudrate is None  # the converter's business
        assert (await client.read_primary(1)).header.id == "12345678"  # type: ignore[union-attr]
    async with (
        MbusBusSimulator() as fixed,
        MbusTcpClient("127.0.0.1", fixed.port, timeout=FAST, follows_baudrate=True) as client,
    ):  # told it follows, but it does not: the switched meter falls silent
        await client.switch_baudrate(1, 9600)
        with pytest.raises(MbusTimeout):
            await client.read_primary(1)
