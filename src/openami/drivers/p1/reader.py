"""Read the next complete telegram from a consumer port that pushes: DSMR P1, encrypted P1, SML.

Both protocols work alike on the wire: the meter sends a frame every second or ten to whoever listens,
never answers, and a reader that connects mid-frame or on a noisy line must find the next whole one.
So there is one reader, :class:`P1Reader`, parametrised by a :class:`PortKind`: which sans-IO stream
parser splits the bytes (:class:`~openami.protocols.dsmr.stream.DsmrStreamParser`,
:class:`~openami.protocols.dsmr.encrypted.EncryptedP1StreamParser`,
:class:`~openami.protocols.sml.transport.SmlStreamParser`) and which of its errors mean that a complete
frame arrived and was refused. A refused frame (wrong CRC, does not decrypt) is skipped and the next one
awaited until the deadline.

Lines are the serial-bus drivers' (:mod:`openami.drivers.lines`): TCP to ser2net or a P1
dongle, and a tty (USB P1 cable, optical head) at 115200 8N1 (DSMR 4/5), 9600 7E1 (DSMR 2.2/3) or
9600 8N1 (SML). Every wait is bounded:

- ``connect_s``: opening the TCP connection;
- ``telegram_s``: from the call to :meth:`P1Reader.next` until a usable frame, whatever arrives in between
  (default 30 s: 2.5 intervals of a 10-second DSMR 4 meter; a DSMR 5 or eHZ meter sends every second);
- ``max_bytes``: bytes accepted while waiting for one frame (default 1 MiB, minutes of a real port), so
  a line that floods noise cannot keep a reader parsing; the parsers' buffers are bounded on their own
  and the reader checks that they stay so.

Failures come out as :mod:`openami.drivers.p1.errors`, and the line is closed by whoever opened it
(:func:`open_tcp`/:func:`open_serial` return the reader as an async context manager; the ``read_*``
functions close it themselves).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import tzinfo
from typing import Final, Generic, Literal, Protocol, TypeVar

from openami.drivers.lines import SerialLine, TcpLine
from openami.drivers.p1.errors import P1ProtocolError, P1Timeout, P1Unreachable
from openami.protocols.dsmr.encrypted import MAX_FRAME_BYTES, EncryptedP1StreamParser, P1Keys
from openami.protocols.dsmr.errors import CrcError, DecryptionError
from openami.protocols.dsmr.stream import DsmrStreamParser
from openami.protocols.dsmr.telegram import DEFAULT_TZ, MAX_TELEGRAM_BYTES, DsmrTelegram
from openami.protocols.sml.errors import SmlCrcError, SmlDecodeError
from openami.protocols.sml.messages import SmlFile
from openami.protocols.sml.transport import MAX_FILE_BYTES, SmlStreamParser

__all__ = [
    "DEFAULT_MAX_BYTES",
    "DEFAULT_TELEGRAM_S",
    "SML",
    "ByteLine",
    "FrameParser",
    "P1Reader",
    "PortKind",
    "dsmr",
    "open_serial",
    "open_tcp",
    "read_dsmr_serial",
    "read_dsmr_tcp",
    "read_sml_serial",
    "read_sml_tcp",
]

T = TypeVar("T")
T_co = TypeVar("T_co", covariant=True)
Framing = Literal["8N1", "7E1"]

DEFAULT_TELEGRAM_S: Final = 30.0
DEFAULT_MAX_BYTES: Final = 1 << 20
#: The most a line's read returns at once (the lines read 64 kB); a parser may hold that on top of its
#: own bound until the next feed resolves it.
_CHUNK: Final = 0x10000


class ByteLine(Protocol):
    """An open byte line the meter pushes on (:class:`TcpLine` or :class:`SerialLine` fit)."""

    peer: str

    async def read(self) -> bytes:
        """Some bytes once there are any; ``b""`` at end of stream."""

    def close(self) -> None: ...


class FrameParser(Protocol[T_co]):
    """A sans-IO stream parser: frames out of bytes, broken ones kept in :attr:`errors`."""

    @property
    def buffered(self) -> int: ...

    @property
    def errors(self) -> Sequence[Exception]: ...

    def feed(self, data: bytes) -> Sequence[T_co]: ...


@dataclass(frozen=True, slots=True)
class PortKind(Generic[T]):
    """What a port carries: its frames' name (for messages), a fresh parser per connection, the parser
    errors that mean a whole frame arrived and was refused, and the parser's buffer bound."""

    name: str
    parser: Callable[[], FrameParser[T]]
    refused: tuple[type[Exception], ...]
    max_buffered: int


def dsmr(keys: P1Keys | None = None, *, tz: tzinfo = DEFAULT_TZ) -> PortKind[DsmrTelegram]:
    """DSMR P1 telegrams, plain or (with ``keys``) in E-MeterP1 frames; CRCs checked."""
    if keys is None:
        return PortKind(
            "DSMR telegram", lambda: DsmrStreamParser(tz=tz), (CrcError,), MAX_TELEGRAM_BYTES + 16
        )
    return PortKind(
        "encrypted DSMR frame",
        lambda: EncryptedP1StreamParser(keys, tz=tz),
        (CrcError, DecryptionError),
        MAX_FRAME_BYTES,
    )


SML: Final[PortKind[SmlFile]] = PortKind(
    "SML file", SmlStreamParser, (SmlCrcError, SmlDecodeError), MAX_FILE_BYTES
)


def _new_errors(errors: Sequence[Exception], last: Exception | None) -> list[Exception]:
    """The errors after ``last`` (the parser trims old ones, so positions cannot be remembered)."""
    fresh: list[Exception] = []
    for error in reversed(errors):
        if error is last:
            break
        fresh.append(error)
    fresh.reverse()
    return fresh


class P1Reader(Generic[T]):
    """One open consumer port; :meth:`next` returns its next usable frame. An async context manager
    that closes the line on exit."""

    def __init__(
        self,
        line: ByteLine,
        kind: PortKind[T],
        *,
        telegram_s: float = DEFAULT_TELEGRAM_S,
        max_bytes: int = DEFAULT_MAX_BYTES,
    ) -> None:
        self.line, self.kind = line, kind
        self.peer = line.peer
        self.telegram_s, self.max_bytes = telegram_s, max_bytes
        self.parser = kind.parser()
        self.refused = 0
        """Complete frames skipped since the line was opened (CRC, decryption, content)."""
        self._pending: deque[T] = deque()
        self._last_error: Exception | None = None

    async def __aenter__(self) -> P1Reader[T]:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.line.close()

    async def next(self) -> T:
        """The next usable frame, waiting at most ``telegram_s``.

        Raises :class:`P1Timeout` when none came in time, :class:`P1ProtocolError` when frames came but
        were all refused (or the line flooded ``max_bytes``), :class:`P1Unreachable` when the line closed
        or failed.
        """
        if self._pending:
            return self._pending.popleft()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.telegram_s
        received = refused = 0
        last_refusal: Exception | None = None
        while True:
            remaining = deadline - loop.time()
            try:
                if remaining <= 0:
                    raise TimeoutError
                async with asyncio.timeout(remaining):
                    data = await self.line.read()
            except TimeoutError:
                if last_refusal is not None:
                    raise P1ProtocolError(
                        f"{self.peer}: no usable {self.kind.name} within {self.telegram_s:g} s; {refused} "
                        f"refused, the last: {last_refusal}",
                        last_refusal,
                    ) from None
                raise P1Timeout(f"{self.peer}: no {self.kind.name} within {self.telegram_s:g} s") from None
            except OSError as exc:
                raise P1Unreachable(f"{self.peer}: {exc}") from exc
            if not data:
                raise P1Unreachable(f"{self.peer} closed the line")
            received += len(data)
            if received > self.max_bytes:
                raise P1ProtocolError(
                    f"{self.peer}: {received} bytes without a usable {self.kind.name}", last_refusal
                )
            frames = self.parser.feed(data)
            errors = self.parser.errors
            for error in _new_errors(errors, self._last_error):
                if isinstance(error, self.kind.refused):
                    refused += 1
                    self.refused += 1
                    last_refusal = error
            self._last_error = errors[-1] if errors else None
            if self.parser.buffered > self.kind.max_buffered + len(data):
                raise P1ProtocolError(f"{self.peer}: stream parser holds {self.parser.buffered} bytes")
            if frames:
                self._pending.extend(frames[1:])
                return frames[0]


async def open_tcp(
    host: str,
    port: int,
    kind: PortKind[T],
    *,
    connect_s: float = 5.0,
    telegram_s: float = DEFAULT_TELEGRAM_S,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> P1Reader[T]:
    """Connect to ``host:port`` (ser2net, a P1 dongle's raw TCP port). Raises :class:`P1Timeout` or
    :class:`P1Unreachable` when the connection fails."""
    try:
        async with asyncio.timeout(connect_s):
            line = await TcpLine.open(host, port)
    except TimeoutError as exc:
        raise P1Timeout(f"{host}:{port}: no connection within {connect_s:g} s") from exc
    except OSError as exc:
        raise P1Unreachable(f"{host}:{port}: {exc}") from exc
    return P1Reader(line, kind, telegram_s=telegram_s, max_bytes=max_bytes)


async def open_serial(
    path: str,
    kind: PortKind[T],
    *,
    baudrate: int = 115200,
    framing: Framing = "8N1",
    telegram_s: float = DEFAULT_TELEGRAM_S,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> P1Reader[T]:
    """Open the tty at ``path`` raw at ``baudrate`` and ``framing``. Raises :class:`P1Unreachable`."""
    try:
        line = await SerialLine.open(path, baudrate, framing)
    except (OSError, ValueError) as exc:
        raise P1Unreachable(f"{path}: {exc}") from exc
    return P1Reader(line, kind, telegram_s=telegram_s, max_bytes=max_bytes)


async def _first(reader: P1Reader[T]) -> T:
    async with reader:
        return await reader.next()


async def read_dsmr_tcp(
    host: str,
    port: int,
    *,
    keys: P1Keys | None = None,
    connect_s: float = 5.0,
    telegram_s: float = DEFAULT_TELEGRAM_S,
    tz: tzinfo = DEFAULT_TZ,
) -> DsmrTelegram:
    """The next telegram of the P1 port behind ``host:port`` (``keys``: an encrypted port)."""
    return await _first(
        await open_tcp(host, port, dsmr(keys, tz=tz), connect_s=connect_s, telegram_s=telegram_s)
    )


async def read_dsmr_serial(
    path: str,
    *,
    baudrate: int = 115200,
    framing: Framing = "8N1",
    keys: P1Keys | None = None,
    telegram_s: float = DEFAULT_TELEGRAM_S,
    tz: tzinfo = DEFAULT_TZ,
) -> DsmrTelegram:
    """The next telegram of the P1 port on the tty ``path`` (DSMR 2.2/3: ``baudrate=9600, framing="7E1"``)."""
    reader = await open_serial(
        path, dsmr(keys, tz=tz), baudrate=baudrate, framing=framing, telegram_s=telegram_s
    )
    return await _first(reader)


async def read_sml_tcp(
    host: str, port: int, *, connect_s: float = 5.0, telegram_s: float = DEFAULT_TELEGRAM_S
) -> SmlFile:
    """The next SML file of the meter behind ``host:port``."""
    return await _first(await open_tcp(host, port, SML, connect_s=connect_s, telegram_s=telegram_s))


async def read_sml_serial(
    path: str, *, baudrate: int = 9600, telegram_s: float = DEFAULT_TELEGRAM_S
) -> SmlFile:
    """The next SML file on the tty ``path`` (an optical head on the info interface: 9600 8N1)."""
    return await _first(await open_serial(path, SML, baudrate=baudrate, telegram_s=telegram_s))
