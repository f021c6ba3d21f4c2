"""Reading a wireless M-Bus receiver: a USB stick on a tty, or the same stick exposed over TCP (ser2net).

A receiver is a push source: it prints one line per telegram it hears, in one of the formats
:func:`openami.protocols.wmbus.parse_line` reads (plain hex with or without a leading RSSI, rtl-wmbus
fields, wmbusmeters-style). :class:`WmbusReceiver` turns such a byte stream into
:class:`ReceivedLine` items and keeps doing so for as long as it is iterated:

- lines are cut by the sans-IO :class:`~openami.protocols.wmbus.ingest.LineSplitter`, so a stick that
  babbles without newlines (wrong baud rate, a binary protocol, noise) costs one bounded buffer and one
  "line too long" item, never unbounded memory;
- a line that is not a telegram is yielded with its reason (``error``), not raised: one bad line costs
  only itself;
- when the line drops (the stick is unplugged, ser2net restarts, the TCP peer resets) the reader closes
  it, waits, and opens it again, with capped exponential backoff and jitter. The unfinished line at the
  moment of the drop is thrown away, because its first half and whatever arrives after reconnecting do
  not belong together. Only ``max_failures`` consecutive failed opens end the iteration, as
  :class:`~openami.drivers.wmbus.errors.WmbusReceiverUnreachable`; by default it never ends.

Serial sticks talk ASCII at 9600 or 115200 baud, 8N1 (``?baud=`` in the URL); the tty is opened raw by
:class:`openami.drivers.lines.SerialLine`, shared with the other serial drivers. TCP connections get
``SO_KEEPALIVE`` so a silently vanished peer is eventually noticed even when no meter is in range;
``idle_timeout_s`` reconnects sooner after that much silence, for receivers known to hear something all
the time. Sticks that speak a binary host protocol (IMST iM871A HCI, Amber AMB8465) are not read here:
they need a bridge that prints lines.

Decoding (and decryption, which needs the key vault) is not the driver's job: the head-end hands each
line's text to :class:`~openami.hes.wmbus_ingest.WmbusIngest`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import socket
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final, Literal
from urllib.parse import parse_qs, urlsplit

from openami.drivers.dlms.transport import serial_speed
from openami.drivers.lines import Line, SerialLine, TcpLine
from openami.drivers.wmbus.errors import WmbusReceiverUnreachable, WmbusReceiverUrlError
from openami.protocols.wmbus.errors import DecodeError
from openami.protocols.wmbus.ingest import (
    MAX_LINE,
    IngestedTelegram,
    LineSplitter,
    LineTooLong,
    parse_line,
)

__all__ = [
    "DEFAULT_BAUDRATE",
    "SCHEME_SERIAL",
    "SCHEME_TCP",
    "ReceivedLine",
    "ReceiverEndpoint",
    "ReceiverStats",
    "WmbusReceiver",
    "parse_receiver_url",
]

log = logging.getLogger(__name__)

SCHEME_TCP: Final = "wmbus+tcp"
SCHEME_SERIAL: Final = "wmbus+serial"
DEFAULT_BAUDRATE: Final = 9600
_FRAMING: Final = "8N1"


@dataclass(frozen=True, slots=True)
class ReceiverEndpoint:
    """Where a receiver is: ``host``/``port`` for TCP, ``path``/``baudrate`` for a tty."""

    kind: Literal["tcp", "serial"]
    host: str = ""
    port: int = 0
    path: str = ""
    baudrate: int = DEFAULT_BAUDRATE

    @property
    def display(self) -> str:
        """The endpoint as a URL, for logs, metrics and dead-letter origins (it never holds a secret)."""
        if self.kind == "tcp":
            host = f"[{self.host}]" if ":" in self.host else self.host
            return f"{SCHEME_TCP}://{host}:{self.port}"
        return f"{SCHEME_SERIAL}://{self.path}?baud={self.baudrate}"


def parse_receiver_url(url: str) -> ReceiverEndpoint:
    """``wmbus+tcp://host:port`` or ``wmbus+serial:///dev/ttyUSB0?baud=115200`` (baud defaults to 9600).

    Refused with :class:`WmbusReceiverUrlError`: other schemes, a missing port or path, credentials,
    unknown query parameters and baud rates the platform has no setting for.
    """
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError as exc:
        raise WmbusReceiverUrlError(f"receiver URL {url!r}: {exc}") from None
    if parts.username is not None or parts.password is not None:
        raise WmbusReceiverUrlError("receiver URLs carry no credentials")
    query = parse_qs(parts.query, keep_blank_values=True)
    if parts.scheme == SCHEME_TCP:
        if not parts.hostname or port is None or port == 0:
            raise WmbusReceiverUrlError(f"receiver URL {url!r}: want {SCHEME_TCP}://host:port")
        if parts.path not in ("", "/") or query or parts.fragment:
            raise WmbusReceiverUrlError(f"receiver URL {url!r}: a TCP receiver has no path or options")
        return ReceiverEndpoint("tcp", host=parts.hostname, port=port)
    if parts.scheme == SCHEME_SERIAL:
        if parts.netloc or not parts.path.startswith("/") or parts.fragment:
            raise WmbusReceiverUrlError(f"receiver URL {url!r}: want {SCHEME_SERIAL}:///dev/ttyX?baud=N")
        unknown = set(query) - {"baud"}
        if unknown:
            raise WmbusReceiverUrlError(f"receiver URL {url!r}: unknown option(s) {sorted(unknown)}")
        baudrate = DEFAULT_BAUDRATE
        if "baud" in query:
            try:
                baudrate = int(query["baud"][-1])
                serial_speed(baudrate)
            except ValueError:
                raise WmbusReceiverUrlError(f"receiver URL {url!r}: unsupported baud rate") from None
        return ReceiverEndpoint("serial", path=parts.path, baudrate=baudrate)
    raise WmbusReceiverUrlError(f"receiver URL {url!r}: scheme must be {SCHEME_TCP} or {SCHEME_SERIAL}")


@dataclass(frozen=True, slots=True)
class ReceivedLine:
    """One line the receiver printed, with its telegram or the reason it has none.

    ``text`` is the line without its line end, non-ASCII bytes replaced; for a line that was too long
    it is only the line's first 40 characters. ``received_at`` is when its newline arrived.
    """

    text: str
    received_at: datetime
    telegram: IngestedTelegram | None = None
    error: str | None = None


@dataclass
class ReceiverStats:
    """Counters for /metrics and operator screens."""

    connects: int = 0
    disconnects: int = 0
    failed_opens: int = 0
    lines: int = 0
    """Lines yielded (blank lines and ``#`` comments are skipped, not counted)."""
    telegrams: int = 0
    bad_lines: int = 0
    """Lines that are no telegram, including the over-long ones."""
    overlong_lines: int = 0
    bytes: int = 0
    last_error: str = ""


def _utcnow() -> datetime:
    return datetime.now(UTC)


class WmbusReceiver:
    """Lines from one receiver, reconnecting for as long as :meth:`lines` is iterated.

    Iterate with ``contextlib.aclosing`` (or break out of an ``async for`` in a task that ends) so the
    line is closed when the consumer stops.
    """

    def __init__(
        self,
        endpoint: ReceiverEndpoint | str,
        *,
        max_line: int = MAX_LINE,
        connect_timeout_s: float = 10.0,
        idle_timeout_s: float | None = None,
        reconnect_min_s: float = 0.5,
        reconnect_max_s: float = 30.0,
        max_failures: int | None = None,
        now: Callable[[], datetime] = _utcnow,
    ) -> None:
        self.endpoint = parse_receiver_url(endpoint) if isinstance(endpoint, str) else endpoint
        if not 1 <= max_line <= MAX_LINE:
            raise ValueError(f"max_line must be 1..{MAX_LINE} (longer lines are no telegram anyway)")
        if reconnect_min_s <= 0 or reconnect_max_s < reconnect_min_s:
            raise ValueError("reconnect delays must be positive, the maximum at least the minimum")
        self.max_line = max_line
        self.connect_timeout_s = connect_timeout_s
        self.idle_timeout_s = idle_timeout_s
        self.reconnect_min_s = reconnect_min_s
        self.reconnect_max_s = reconnect_max_s
        self.max_failures = max_failures
        self._now = now
        self._connected = asyncio.Event()
        self.stats = ReceiverStats()

    @property
    def peer(self) -> str:
        return self.endpoint.display

    @property
    def connected(self) -> bool:
        """The line is open right now (False while waiting to reconnect)."""
        return self._connected.is_set()

    async def wait_connected(self, timeout_s: float) -> None:
        """Until the line is open; ``TimeoutError`` after ``timeout_s``."""
        async with asyncio.timeout(timeout_s):
            await self._connected.wait()

    async def telegrams(self) -> AsyncGenerator[IngestedTelegram, None]:
        """Only the lines that carry a telegram (bad lines are still counted in :attr:`stats`)."""
        async with contextlib.aclosing(self.lines()) as lines:
            async for line in lines:
                if line.telegram is not None:
                    yield line.telegram

    async def lines(self) -> AsyncGenerator[ReceivedLine, None]:
        """Every telegram line and every bad line, across reconnects; see the module docstring."""
        delay = self.reconnect_min_s
        failures = 0
        while True:
            try:
                line = await self._open()
            except (OSError, TimeoutError, ValueError) as exc:
                failures += 1
                self.stats.failed_opens += 1
                self.stats.last_error = _describe(exc)
                if self.max_failures is not None and failures >= self.max_failures:
                    raise WmbusReceiverUnreachable(
                        f"{self.peer}: {failures} failed attempt(s), last: {self.stats.last_error}"
                    ) from exc
                log.warning("wM-Bus receiver %s: %s; retrying", self.peer, self.stats.last_error)
                await _pause(delay)
                delay = min(delay * 2, self.reconnect_max_s)
                continue
            failures = 0
            self.stats.connects += 1
            self._connected.set()
            log.info("wM-Bus receiver %s connected", self.peer)
            heard = False
            try:
                async with contextlib.aclosing(self._read(line)) as items:
                    async for item in items:
                        heard = True
                        yield item
            except (OSError, TimeoutError) as exc:
                self.stats.last_error = _describe(exc)
                log.warning("wM-Bus receiver %s dropped: %s", self.peer, self.stats.last_error)
            finally:
                self._connected.clear()
                line.close()
            self.stats.disconnects += 1
            # A line that delivered something earns a quick reconnect; one that opens and drops at once
            # (a busy ser2net port, a flapping USB hub) keeps backing off.
            delay = self.reconnect_min_s if heard else min(delay * 2, self.reconnect_max_s)
            await _pause(delay)

    async def _open(self) -> Line:
        endpoint = self.endpoint
        async with asyncio.timeout(self.connect_timeout_s):
            if endpoint.kind == "serial":
                return await SerialLine.open(endpoint.path, endpoint.baudrate, _FRAMING)
            reader, writer = await asyncio.open_connection(endpoint.host, endpoint.port)
        sock = writer.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        return TcpLine(endpoint.host, endpoint.port, reader, writer)

    async def _read(self, line: Line) -> AsyncGenerator[ReceivedLine, None]:
        splitter = LineSplitter(self.max_line)
        while True:
            if self.idle_timeout_s is None:
                data = await line.read()
            else:
                try:
                    async with asyncio.timeout(self.idle_timeout_s):
                        data = await line.read()
                except TimeoutError:
                    raise TimeoutError(f"nothing received for {self.idle_timeout_s:g} s") from None
            if not data:
                raise ConnectionResetError("the receiver closed the line")
            self.stats.bytes += len(data)
            now = self._now()
            for item in splitter.feed(data):
                received = self._received(item, now)
                if received is not None:
                    yield received

    def _received(self, item: bytes | LineTooLong, now: datetime) -> ReceivedLine | None:
        stats = self.stats
        if isinstance(item, LineTooLong):
            stats.lines += 1
            stats.bad_lines += 1
            stats.overlong_lines += 1
            head = item.head.decode("ascii", errors="replace")
            return ReceivedLine(head, now, error=f"line longer than {self.max_line} bytes, dropped")
        text = item.decode("ascii", errors="replace")
        try:
            telegram = parse_line(text)
        except DecodeError as exc:
            stats.lines += 1
            stats.bad_lines += 1
            return ReceivedLine(text, now, error=str(exc))
        if telegram is None:
            return None  # blank line or comment
        stats.lines += 1
        stats.telegrams += 1
        return ReceivedLine(text, now, telegram)


def _describe(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__


async def _pause(delay: float) -> None:
    """Sleep ``delay`` with jitter (50-100 %): receivers behind one ser2net host do not reconnect in step."""
    await asyncio.sleep(delay * random.uniform(0.5, 1.0))
