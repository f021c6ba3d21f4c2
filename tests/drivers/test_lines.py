"""The shared serial/TCP lines on real ptys: framing, reopening, speeds."""

from __future__ import annotations

import os
import termios
from collections.abc import Iterator

import pytest

from openami.drivers.lines import Framing, SerialLine, configure_serial_line, tty_baudrate

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
def pty() -> Iterator[tuple[int, str]]:
    master, slave = os.openpty()
    try:
        yield master, os.ttyname(slave)
    finally:
        os.close(master)
        os.close(slave)


def test_framing_spellings() -> None:
    assert Framing.parse("8e1") == Framing(8, "E", 1) and str(Framing.parse("7O2")) == "7O2"
    with pytest.raises(ValueError, match="framing"):
        Framing.parse("9N1")


async def test_reopening_a_pty_at_the_same_rate(pty: tuple[int, str]) -> None:
    """A pty cannot do parity; Linux refuses with EINVAL a reconfiguration whose only change would be
    parity, which a reopen at the same rate is. The line opens all the same, raw and at its rate."""
    master, path = pty
    for _ in range(3):
        line = await SerialLine.open(path, 2400, "8E1")
        try:
            fd = line._stream.fd
            assert fd is not None and tty_baudrate(fd) == 2400 == line.baudrate
            iflag, _, _, lflag, *_ = termios.tcgetattr(fd)
            assert (iflag, lflag) == (0, 0)
        finally:
            line.close()
    assert tty_baudrate(master) == 2400  # one set of attributes for both ends of a Linux pty


async def test_bad_rates_and_non_ttys_are_refused(pty: tuple[int, str]) -> None:
    _, path = pty
    fd = os.open(path, os.O_RDWR | os.O_NOCTTY)
    try:
        configure_serial_line(fd, 2400, "8E1")
        with pytest.raises(ValueError, match="baud rate"):
            configure_serial_line(fd, 1234, "8E1")
    finally:
        os.close(fd)
    with pytest.raises(OSError, match="cannot configure"):
        await SerialLine.open("/dev/null", 2400, "8E1")  # not a tty
