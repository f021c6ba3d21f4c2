"""The byte lines an IEC 62056-21 readout runs over: a serial tty (7E1, baud switch) or TCP.

Why a line knows how to change its baud rate: the protocol itself switches mid-session (mode C after
the option select, mode B after the identification), and only the line knows what that means:

- :class:`SerialLine`: a tty opened with ``os.open`` and set raw 7E1 with ``termios`` at 300 baud; a
  switch waits (``tcdrain``, bounded) until the last byte at the old rate has left, then changes both
  speeds. Works on an optical probe (USB IR head) or an RS-485 adapter.
- :class:`TcpLine`: an RS-485/optical-to-TCP converter in transparent ("raw socket") mode. It runs
  its serial side at one configured rate and does not follow the meter, so the switch is a no-op:
  read such meters with ``switch_baudrate=False`` (mode C stays at 300 baud, or at whatever fixed
  rate the converter and meter are set to). Converters that change their rate on request (RFC 2217
  Telnet COM-port control, vendor commands) are not driven here.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import termios
from typing import Protocol

from openami.drivers.dlms.transport import FdStream, serial_speed

__all__ = ["Line", "SerialLine", "TcpLine", "configure_serial_7e1"]

_READ_SIZE = 0x10000


class Line(Protocol):
    """One open byte line to one meter (or one bus)."""

    peer: str
    """Where the meter is, for messages: ``host:port`` or the tty path."""

    async def read(self) -> bytes:
        """Some bytes once there are any; ``b""`` at end of stream."""

    async def send(self, data: bytes) -> None:
        """Write ``data`` and wait until the OS has taken it."""

    async def set_baudrate(self, baudrate: int, drain_s: float) -> None:
        """Switch to ``baudrate`` once what was sent has left the line (waiting at most ``drain_s``)."""

    def close(self) -> None: ...


def configure_serial_7e1(fd: int, baudrate: int = 300) -> None:
    """Raw 7E1 at ``baudrate``: 7 data bits, even parity, 1 stop bit, no echo, no CR/LF translation,
    no flow control. ``ISTRIP`` clears the eighth bit should an adapter deliver the parity bit in it."""
    speed = serial_speed(baudrate)
    attributes = termios.tcgetattr(fd)  # iflag, oflag, cflag, lflag, ispeed, ospeed, cc
    cflag, cc = attributes[2], attributes[6]
    cflag &= ~(
        termios.CSIZE | termios.PARODD | termios.CSTOPB | getattr(termios, "CRTSCTS", 0) | termios.HUPCL
    )
    cflag |= termios.CS7 | termios.PARENB | termios.CREAD | termios.CLOCAL
    cc[termios.VMIN], cc[termios.VTIME] = 1, 0
    termios.tcsetattr(fd, termios.TCSANOW, [termios.ISTRIP, 0, cflag, 0, speed, speed, cc])
    termios.tcflush(fd, termios.TCIOFLUSH)


class SerialLine:
    """A tty at 7E1; :meth:`open` starts it at 300 baud, as every sign-on does."""

    def __init__(self, path: str, stream: FdStream) -> None:
        self.peer = path
        self._stream = stream

    @classmethod
    async def open(cls, path: str, baudrate: int = 300) -> SerialLine:
        serial_speed(baudrate)
        fd = os.open(path, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
        try:
            configure_serial_7e1(fd, baudrate)
        except termios.error as exc:
            os.close(fd)
            raise OSError(f"{path}: cannot configure the serial line: {exc}") from exc
        except BaseException:
            with contextlib.suppress(OSError):
                os.close(fd)
            raise
        return cls(path, FdStream(fd))

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
        # bounded, since a wedged adapter must not hold the readout forever (the thread ends with it).
        async with asyncio.timeout(drain_s):
            await asyncio.to_thread(termios.tcdrain, fd)
        attributes = termios.tcgetattr(fd)
        attributes[4] = attributes[5] = speed
        termios.tcsetattr(fd, termios.TCSANOW, attributes)

    def close(self) -> None:
        self._stream.close()


class TcpLine:
    """A TCP connection to a transparent serial converter; :meth:`set_baudrate` is a no-op (see above)."""

    def __init__(self, host: str, port: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.peer = f"{host}:{port}"
        self._reader, self._writer = reader, writer

    @classmethod
    async def open(cls, host: str, port: int) -> TcpLine:
        reader, writer = await asyncio.open_connection(host, port)
        return cls(host, port, reader, writer)

    async def read(self) -> bytes:
        return await self._reader.read(_READ_SIZE)

    async def send(self, data: bytes) -> None:
        self._writer.write(data)
        await self._writer.drain()

    async def set_baudrate(self, baudrate: int, drain_s: float) -> None:
        """Nothing to do: the converter's serial side runs at its configured rate."""

    def close(self) -> None:
        self._writer.close()
