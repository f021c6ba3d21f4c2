"""The byte lines the serial-bus drivers run over: a tty (any framing, baud switch) or a TCP converter.

Shared by the IEC 62056-21 readout (7E1, switching after the option select) and the wired M-Bus master
(8E1, switching after an acknowledged EN 13757-2 baud-rate request), because both protocols change the
line rate mid-conversation and only the line knows what that means:

- :class:`SerialLine`: a tty opened with ``os.open`` and set raw with ``termios``; a switch waits
  (``tcdrain``, bounded) until the last byte at the old rate has left, then changes both speeds. Works
  on USB optical heads, RS-485 adapters and M-Bus level converters.
- :class:`TcpLine`: a serial-to-TCP converter in transparent ("raw socket") mode. Its serial side runs
  at a rate configured in the converter, so :meth:`TcpLine.set_baudrate` changes nothing here; whether
  the far end follows a switch by itself (auto-bauding converters) is what the caller says with
  ``follows_baudrate``. Converters driven by commands (RFC 2217 COM-port control, vendor commands) are
  not driven here.

Reads and writes on a tty go through :class:`~openami.drivers.dlms.transport.FdStream`, the one
event-loop fd stream of the drivers (the DLMS HDLC serial path uses it too).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import re
import termios
from dataclasses import dataclass
from typing import Any, Final, Protocol, Self

from openami.drivers.dlms.transport import FdStream, serial_speed

__all__ = ["Framing", "Line", "SerialLine", "TcpLine", "configure_serial_line", "tty_baudrate"]

_READ_SIZE: Final = 0x10000
_FRAMING = re.compile(r"([78])([NEO])([12])")


@dataclass(frozen=True, slots=True)
class Framing:
    """Character framing of a serial line, parsed from the usual ``8E1`` / ``7E1`` / ``8N1`` spelling."""

    data_bits: int
    parity: str
    stop_bits: int

    @classmethod
    def parse(cls, text: str) -> Framing:
        match = _FRAMING.fullmatch(text.strip().upper())
        if match is None:
            raise ValueError(f"unsupported serial framing {text!r} (want e.g. 8E1, 7E1, 8N1)")
        return cls(int(match[1]), match[2], int(match[3]))

    def __str__(self) -> str:
        return f"{self.data_bits}{self.parity}{self.stop_bits}"


def configure_serial_line(fd: int, baudrate: int, framing: Framing | str) -> None:
    """Raw ``framing`` at ``baudrate``: no echo, no CR/LF translation, no flow control, modem lines
    ignored. With 7 data bits ``ISTRIP`` clears the eighth bit should an adapter deliver the parity bit
    in it. Parity errors are not checked by the tty: both protocols check their frames themselves (BCC,
    M-Bus check sum), and a garbled byte must reach their parsers to be reported as such."""
    framing = Framing.parse(framing) if isinstance(framing, str) else framing
    speed = serial_speed(baudrate)
    attributes = termios.tcgetattr(fd)  # iflag, oflag, cflag, lflag, ispeed, ospeed, cc
    cflag, cc = attributes[2], attributes[6]
    cflag &= ~(
        termios.CSIZE
        | termios.PARENB
        | termios.PARODD
        | termios.CSTOPB
        | getattr(termios, "CRTSCTS", 0)
        | termios.HUPCL
    )
    cflag |= (termios.CS7 if framing.data_bits == 7 else termios.CS8) | termios.CREAD | termios.CLOCAL
    if framing.parity != "N":
        cflag |= termios.PARENB | (termios.PARODD if framing.parity == "O" else 0)
    if framing.stop_bits == 2:
        cflag |= termios.CSTOPB
    iflag = termios.ISTRIP if framing.data_bits == 7 else 0
    cc[termios.VMIN], cc[termios.VTIME] = 1, 0
    wanted = [iflag, 0, cflag, 0, speed, speed, cc]
    try:
        termios.tcsetattr(fd, termios.TCSANOW, wanted)
    except termios.error as exc:
        # Linux refuses with EINVAL a request none of whose changes it can make: a pty (which forces
        # CS8 without parity on itself) reopened at the rate it already runs at. With everything else
        # as asked, that is what a first open gives too, where the kernel drops the bits silently.
        if exc.args[0] != errno.EINVAL or not _as_asked_but_framing(fd, wanted):
            raise
    termios.tcflush(fd, termios.TCIOFLUSH)


_FRAMING_BITS: Final = termios.CSIZE | termios.PARENB | termios.PARODD


def _as_asked_but_framing(fd: int, wanted: list[Any]) -> bool:
    """Does the tty have every attribute of ``wanted`` but character size and parity?"""
    have = termios.tcgetattr(fd)
    return (
        have[0:2] == wanted[0:2]
        and have[2] & ~_FRAMING_BITS == wanted[2] & ~_FRAMING_BITS
        and have[3:6] == wanted[3:6]
        and [have[6][termios.VMIN], have[6][termios.VTIME]] == [1, 0]
    )


_RATES: Final = (50, 75, 110, 134, 150, 200, 300, 600, 1200, 1800, 2400, 4800, 9600, 19200, 38400)
_SPEEDS: Final = {getattr(termios, f"B{rate}"): rate for rate in _RATES if hasattr(termios, f"B{rate}")}


def tty_baudrate(fd: int) -> int | None:
    """The output speed ``fd`` is set to, in baud; None for a speed outside the usual table."""
    return _SPEEDS.get(termios.tcgetattr(fd)[5])


class Line(Protocol):
    """One open byte line to one meter or one bus."""

    peer: str
    """Where the far end is, for messages: ``host:port`` or the tty path."""
    baudrate: int | None
    """The rate the line runs at when this side knows it (a tty), else None (a TCP converter)."""
    follows_baudrate: bool
    """True when after :meth:`set_baudrate` the far end runs at the new rate: a tty always, a TCP
    converter only when it was said to follow switches by itself."""

    async def read(self) -> bytes:
        """Some bytes once there are any; ``b""`` at end of stream."""

    async def send(self, data: bytes) -> None:
        """Write ``data`` and wait until the OS has taken it."""

    async def set_baudrate(self, baudrate: int, drain_s: float) -> None:
        """Switch to ``baudrate`` once what was sent has left the line (waiting at most ``drain_s``)."""

    def close(self) -> None:
        """Drop the line now (safe to call twice)."""

    async def aclose(self) -> None:
        """:meth:`close`, then wait until the far end has seen it (a converter that takes one
        connection at a time is free again when this returns)."""


class SerialLine:
    """A raw tty; :meth:`open` sets its framing and starting rate."""

    follows_baudrate = True

    def __init__(self, path: str, stream: FdStream, baudrate: int | None = None) -> None:
        self.peer = path
        self.baudrate = baudrate
        self._stream = stream

    @classmethod
    async def open(cls, path: str, baudrate: int = 9600, framing: Framing | str = "8N1") -> Self:
        """Open ``path`` raw at ``baudrate`` and ``framing``; ``OSError`` (no such tty, not a tty) or
        ``ValueError`` (a rate or framing the platform has no setting for)."""
        framing = Framing.parse(framing) if isinstance(framing, str) else framing
        serial_speed(baudrate)
        fd = os.open(path, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
        try:
            configure_serial_line(fd, baudrate, framing)
        except termios.error as exc:
            os.close(fd)
            raise OSError(f"{path}: cannot configure the serial line: {exc}") from exc
        except BaseException:
            with contextlib.suppress(OSError):
                os.close(fd)
            raise
        return cls(path, FdStream(fd), baudrate)

    async def read(self) -> bytes:
        return await self._stream.read(_READ_SIZE)

    async def send(self, data: bytes) -> None:
        self._stream.write(data)
        await self._stream.drain()

    async def set_baudrate(self, baudrate: int, drain_s: float) -> None:
        speed = serial_speed(baudrate)
        fd = self._stream.fd
        if fd is None:
            raise ConnectionResetError("serial line closed")
        # tcdrain blocks until the UART's buffer is empty (at 300 baud, 33 ms a byte): off the loop, and
        # bounded, since a wedged adapter must not hold the read forever (the thread ends with it).
        async with asyncio.timeout(drain_s):
            await asyncio.to_thread(termios.tcdrain, fd)
        attributes = termios.tcgetattr(fd)
        attributes[4] = attributes[5] = speed
        termios.tcsetattr(fd, termios.TCSANOW, attributes)
        self.baudrate = baudrate

    def close(self) -> None:
        self._stream.close()

    async def aclose(self) -> None:
        self.close()


class TcpLine:
    """A TCP connection to a transparent serial converter; :meth:`set_baudrate` is a no-op (see above).

    ``follows_baudrate``: the converter follows a rate switch by itself (it sniffs the protocol or
    auto-bauds); only then may a caller switch the meter's rate through it.
    """

    baudrate: int | None = None

    def __init__(
        self,
        host: str,
        port: int,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        *,
        follows_baudrate: bool = False,
    ) -> None:
        self.peer = f"{host}:{port}"
        self.follows_baudrate = follows_baudrate
        self._reader, self._writer = reader, writer

    @classmethod
    async def open(cls, host: str, port: int, *, follows_baudrate: bool = False) -> Self:
        reader, writer = await asyncio.open_connection(host, port)
        return cls(host, port, reader, writer, follows_baudrate=follows_baudrate)

    async def read(self) -> bytes:
        return await self._reader.read(_READ_SIZE)

    async def send(self, data: bytes) -> None:
        self._writer.write(data)
        await self._writer.drain()

    async def set_baudrate(self, baudrate: int, drain_s: float) -> None:
        """Nothing to do: the converter's serial side runs at its configured rate (or follows alone)."""

    def close(self) -> None:
        self._writer.close()

    async def aclose(self) -> None:
        self.close()
        with contextlib.suppress(ConnectionError):
            await self._writer.wait_closed()
