"""What carries a DLMS client's APDUs to the meter: the TCP wrapper, or HDLC over TCP or a serial line.

Why separate from :mod:`openami.drivers.dlms.client`: the services, the association and the translation of
failures are the same whatever the carrier, so the client holds one transport and calls
:meth:`Transport.exchange`. Every wait is bounded by the time-out the caller passes (``connect_s``,
``answer_s``); a transport never retries on its own unless asked (``retries``), because a second attempt
doubles how long a dead meter holds a collection slot.

- :class:`WrapperTransport`: IEC 62056-47 over TCP, the head-end's bulk path. Its :meth:`exchange` is
  the hot path of every read: a write, and a wait for the frame the socket's protocol has parsed.
- :class:`WrapperStreamTransport`: the same wrapper over any byte stream an opener gives, such as a
  connection a cellular modem opened to the head-end's front-end processor (:mod:`openami.hes.fep`).
- :class:`HdlcTransport`: the sans-IO :class:`~openami.protocols.dlms.hdlc_link.HdlcClientLink` over any
  byte stream: a TCP connection to a terminal server or concentrator (``asyncio.open_connection``), or a
  serial line (:func:`open_serial`).
- :func:`open_serial`: a tty opened with ``os.open`` and set raw with ``termios`` (default 9600 8N1, no
  flow control), read and written through :class:`FdStream`. Mode E of IEC 62056-21 (the optical
  probe's 300-baud handshake before HDLC) is not done.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import termios
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Final, Protocol, TypeVar

from openami.drivers.dlms.errors import DlmsProtocolError, DlmsUnreachable
from openami.protocols.dlms.errors import DlmsError
from openami.protocols.dlms.hdlc_link import (
    ApduReceived,
    Connected,
    Disconnected,
    HdlcClientLink,
    LinkEvent,
    LinkState,
)
from openami.protocols.dlms.wrapper import WrapperFrame, WrapperStreamParser, encode_wrapper

__all__ = [
    "ByteReader",
    "ByteWriter",
    "FdStream",
    "HdlcTransport",
    "Opener",
    "Transport",
    "WrapperStreamTransport",
    "WrapperTransport",
    "configure_serial",
    "open_serial",
    "serial_speed",
]

_READ_SIZE: Final = 0x10000
_Event = TypeVar("_Event", bound=LinkEvent)


class Transport(Protocol):
    """One connection to one meter, as :class:`~openami.drivers.dlms.client.DlmsClient` uses it.

    Failures are the stack's and the OS's own (``TimeoutError``, ``OSError``,
    :class:`~openami.protocols.dlms.errors.DlmsError`); the client translates them at its edge.
    """

    peer: str
    """Where the meter is, for messages: ``host:port`` or the tty path."""

    @property
    def connected(self) -> bool: ...

    async def open(self, connect_s: float, answer_s: float) -> None: ...

    async def exchange(self, apdu: bytes, answer_s: float) -> bytes: ...

    async def close(self, answer_s: float) -> None:
        """End the link politely (HDLC: DISC, bounded by ``answer_s``), then drop it."""

    def abort(self) -> None:
        """Drop the connection at once (after a failure the link state is unknown)."""


class ByteReader(Protocol):
    async def read(self, n: int = -1) -> bytes: ...


class ByteWriter(Protocol):
    def write(self, data: bytes) -> None: ...

    async def drain(self) -> None: ...

    def close(self) -> None: ...


class _WrapperProtocol(asyncio.Protocol):
    """The socket side of :class:`WrapperTransport`: frames parsed as bytes arrive, one waiter woken.

    A protocol rather than asyncio streams: a read costs a callback and a parser call, not a stream
    reader, a writer and their futures per exchange, and every read of a collection round goes
    through here.
    """

    def __init__(self) -> None:
        self.parser = WrapperStreamParser()
        self.frames: deque[WrapperFrame] = deque()
        self.transport: asyncio.Transport | None = None
        self.failure: BaseException | None = None
        self.waiter: asyncio.Future[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # a TCP connection is an asyncio.Transport

    def data_received(self, data: bytes) -> None:
        try:
            self.frames.extend(self.parser.feed(data))
        except DlmsError as exc:  # a broken stream: which answer is whose can no longer be told
            self._fail(exc)
            return
        if self.frames:
            self._wake()

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(exc or ConnectionResetError("connection closed by the meter"))

    def _fail(self, exc: BaseException) -> None:
        if self.failure is None:
            self.failure = exc
        if self.transport is not None:
            self.transport.close()
        self._wake()

    def _wake(self) -> None:
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)


class WrapperTransport:
    """IEC 62056-47 over TCP: each APDU in one wrapper frame from ``client_sap`` to ``server_sap``."""

    def __init__(self, host: str, port: int, client_sap: int, server_sap: int) -> None:
        self.host, self.port = host, port
        self.peer = f"{host}:{port}"
        self.client_sap, self.server_sap = client_sap, server_sap
        self._protocol: _WrapperProtocol | None = None

    @property
    def connected(self) -> bool:
        return self._protocol is not None

    async def open(self, connect_s: float, answer_s: float) -> None:
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(connect_s):
            _, self._protocol = await loop.create_connection(_WrapperProtocol, self.host, self.port)

    async def exchange(self, apdu: bytes, answer_s: float) -> bytes:
        """Send one APDU and wait for the next frame; one from another association is refused."""
        protocol = self._protocol
        if protocol is None or protocol.transport is None:
            raise DlmsUnreachable(f"not connected to {self.peer}")
        if protocol.failure is None:
            protocol.transport.write(encode_wrapper(WrapperFrame(self.client_sap, self.server_sap, apdu)))
        frames = protocol.frames
        if not frames and protocol.failure is None:
            protocol.waiter = asyncio.get_running_loop().create_future()
            try:
                async with asyncio.timeout(answer_s):
                    await protocol.waiter
            finally:
                protocol.waiter = None
        if not frames:
            raise protocol.failure or ConnectionResetError("connection closed by the meter")
        frame = frames.popleft()
        if (frame.source, frame.destination) != (self.server_sap, self.client_sap):
            raise DlmsProtocolError(
                f"frame from wPort {frame.source} to {frame.destination}: not our association"
            )
        return frame.apdu

    async def close(self, answer_s: float) -> None:
        self.abort()

    def abort(self) -> None:
        protocol, self._protocol = self._protocol, None
        if protocol is not None and protocol.transport is not None:
            protocol.transport.close()


Opener = Callable[[], Awaitable[tuple[ByteReader, ByteWriter]]]
"""Opens the byte stream under the link: ``asyncio.open_connection`` or :func:`open_serial`."""


class WrapperStreamTransport:
    """IEC 62056-47 over a byte stream from ``opener`` (any :class:`ByteReader` / :class:`ByteWriter`).

    What :class:`WrapperTransport` does over its own socket, for streams someone else opened: a
    connection a device opened to the head-end and lends for a session, or a test pipe. Frames queued
    before a request is written cannot be its answer and are dropped; :meth:`abort` closes the writer
    (which for a lent connection means handing it back, not necessarily closing a socket).
    """

    def __init__(self, opener: Opener, client_sap: int, server_sap: int, peer: str) -> None:
        self.peer = peer
        self.client_sap, self.server_sap = client_sap, server_sap
        self._opener = opener
        self._reader: ByteReader | None = None
        self._writer: ByteWriter | None = None
        self._parser = WrapperStreamParser()
        self._frames: deque[WrapperFrame] = deque()

    @property
    def connected(self) -> bool:
        return self._writer is not None

    async def open(self, connect_s: float, answer_s: float) -> None:
        async with asyncio.timeout(connect_s):
            self._reader, self._writer = await self._opener()
        self._parser.reset()
        self._frames.clear()

    async def exchange(self, apdu: bytes, answer_s: float) -> bytes:
        """Send one APDU and wait for the next frame; one from another association is refused."""
        reader, writer = self._reader, self._writer
        if reader is None or writer is None:
            raise DlmsUnreachable(f"not connected to {self.peer}")
        frames = self._frames
        frames.clear()
        async with asyncio.timeout(answer_s):
            writer.write(encode_wrapper(WrapperFrame(self.client_sap, self.server_sap, apdu)))
            await writer.drain()
            while not frames:
                data = await reader.read(_READ_SIZE)
                if not data:
                    raise ConnectionResetError(f"{self.peer} closed the connection")
                frames.extend(self._parser.feed(data))
        frame = frames.popleft()
        if (frame.source, frame.destination) != (self.server_sap, self.client_sap):
            raise DlmsProtocolError(
                f"frame from wPort {frame.source} to {frame.destination}: not our association"
            )
        return frame.apdu

    async def close(self, answer_s: float) -> None:
        self.abort()

    def abort(self) -> None:
        writer, self._writer, self._reader = self._writer, None, None
        self._frames.clear()
        if writer is not None:
            writer.close()


class HdlcTransport:
    """HDLC (IEC 62056-46) over a byte stream: SNRM/UA on open, I-frames per APDU, DISC on close.

    ``retries``: after a time-out, how many times the last frames are sent again before giving up
    (checkpoint recovery, for lossy serial lines); each attempt waits ``answer_s`` again.
    """

    def __init__(self, opener: Opener, link: HdlcClientLink, peer: str, *, retries: int = 0) -> None:
        self.peer = peer
        self.link = link
        self.retries = retries
        self._opener = opener
        self._reader: ByteReader | None = None
        self._writer: ByteWriter | None = None
        self._events: deque[LinkEvent] = deque()

    @property
    def connected(self) -> bool:
        return self._writer is not None

    async def open(self, connect_s: float, answer_s: float) -> None:
        async with asyncio.timeout(connect_s):
            self._reader, self._writer = await self._opener()
        self.link.connect()
        await self._wait(Connected, answer_s)

    async def exchange(self, apdu: bytes, answer_s: float) -> bytes:
        self.link.send(apdu)
        return (await self._wait(ApduReceived, answer_s)).apdu

    async def close(self, answer_s: float) -> None:
        try:
            if self._writer is not None and self.link.state is LinkState.CONNECTED:
                self.link.disconnect()
                await self._wait(Disconnected, answer_s)
        finally:
            self.abort()

    def abort(self) -> None:
        if self._writer is not None:
            self._writer.close()
        self._reader = self._writer = None
        self._events.clear()

    async def _wait(self, kind: type[_Event], answer_s: float) -> _Event:
        """Write what the link queued, then read until it reports ``kind``; other events are dropped."""
        reader, writer, link = self._reader, self._writer, self.link
        if reader is None or writer is None:
            raise DlmsUnreachable(f"not connected to {self.peer}")
        attempts = self.retries
        while True:
            try:
                async with asyncio.timeout(answer_s):
                    while True:
                        out = link.data_to_send()
                        if out:
                            writer.write(out)
                            await writer.drain()
                        while self._events:
                            event = self._events.popleft()
                            if isinstance(event, kind):
                                return event
                        data = await reader.read(_READ_SIZE)
                        if not data:
                            raise ConnectionResetError(f"{self.peer} closed the connection")
                        self._events.extend(link.receive(data))
            except TimeoutError:
                if attempts <= 0:
                    raise
                attempts -= 1
                link.resend()


class FdStream:
    """Reads and writes on a non-blocking tty (or pty) descriptor through the event loop, owning the fd.

    Why not ``connect_read_pipe``/``connect_write_pipe``: one tty would need two transports on two
    descriptors and a private stream protocol to drain and close them together; readiness callbacks on
    the one descriptor are simpler and use only public API.
    """

    def __init__(self, fd: int) -> None:
        os.set_blocking(fd, False)
        self.fd: int | None = fd
        self._loop = asyncio.get_running_loop()
        self._out = bytearray()

    async def read(self, n: int = -1) -> bytes:
        """Up to ``n`` bytes once some are there; ``b""`` at end of file. EIO (pty closed) raises OSError."""
        size = _READ_SIZE if n < 0 else n
        while True:
            fd = self._fd()
            try:
                return os.read(fd, size)
            except BlockingIOError:
                await self._ready(fd, writing=False)

    def write(self, data: bytes) -> None:
        self._out += data

    async def drain(self) -> None:
        while self._out:
            fd = self._fd()
            try:
                del self._out[: os.write(fd, self._out)]
            except BlockingIOError:
                await self._ready(fd, writing=True)

    def close(self) -> None:
        if self.fd is not None:
            fd, self.fd = self.fd, None
            os.close(fd)

    def _fd(self) -> int:
        if self.fd is None:
            raise ConnectionResetError("serial line closed")
        return self.fd

    async def _ready(self, fd: int, *, writing: bool) -> None:
        loop = self._loop
        waiter: asyncio.Future[None] = loop.create_future()

        def wake() -> None:
            if not waiter.done():
                waiter.set_result(None)

        (loop.add_writer if writing else loop.add_reader)(fd, wake)
        try:
            await waiter
        finally:
            (loop.remove_writer if writing else loop.remove_reader)(fd)


def serial_speed(baudrate: int) -> int:
    """The termios constant of ``baudrate``; :class:`ValueError` when the platform has none."""
    speed = getattr(termios, f"B{baudrate}", None)
    if not isinstance(speed, int) or baudrate <= 0:
        raise ValueError(f"unsupported serial baud rate {baudrate}")
    return speed


def configure_serial(fd: int, baudrate: int = 9600) -> None:
    """Raw 8N1 at ``baudrate``: no echo, no line editing, no CR/LF translation, no flow control.

    HDLC frames are binary, so any of the tty's text processing would corrupt them.
    """
    speed = serial_speed(baudrate)
    attributes = termios.tcgetattr(fd)  # iflag, oflag, cflag, lflag, ispeed, ospeed, cc
    cflag, cc = attributes[2], attributes[6]
    cflag &= ~(termios.CSIZE | termios.PARENB | termios.CSTOPB | getattr(termios, "CRTSCTS", 0))
    cflag |= termios.CS8 | termios.CREAD | termios.CLOCAL
    cc[termios.VMIN], cc[termios.VTIME] = 1, 0
    termios.tcsetattr(fd, termios.TCSANOW, [0, 0, cflag, 0, speed, speed, cc])
    termios.tcflush(fd, termios.TCIOFLUSH)


async def open_serial(path: str, baudrate: int = 9600) -> tuple[FdStream, FdStream]:
    """Open the tty at ``path`` raw at ``baudrate`` (8N1); the stream is both reader and writer."""
    serial_speed(baudrate)
    fd = os.open(path, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
    try:
        configure_serial(fd, baudrate)
    except termios.error as exc:
        os.close(fd)
        raise OSError(f"{path}: cannot configure the serial line: {exc}") from exc
    except BaseException:
        with contextlib.suppress(OSError):
            os.close(fd)
        raise
    stream = FdStream(fd)
    return stream, stream
