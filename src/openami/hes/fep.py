"""The front-end processor (FEP): cellular devices connect out to the head-end, which keeps their connections.

Modems, meters and concentrators on mobile networks have dynamic (often private, NATed) addresses the
head-end cannot dial. Instead each one opens a TCP connection to the FEP's fixed ``host:port``, sends an
identification line, and the FEP holds the connection; reads and commands then *borrow* it
(:meth:`FrontEndProcessor.lend`) as if they had dialled the device. See docs/operations/fep.md.

A connection goes through these steps:

1. **Allow list**: the peer address must lie in one of the ``allow`` networks (IPv4 and IPv6 CIDRs;
   IPv4-mapped IPv6 peers are compared as IPv4). Otherwise it is closed at once (``refused_address``).
   Beyond ``max_connections`` open sockets, a new one is closed at once (``refused_limit``).
2. **Identification**: within ``identify_timeout_s`` (else ``identify_timeouts``) the device sends one
   line, at most :data:`MAX_IDENT_LINE` bytes ending in CR or LF, that ``ident_pattern`` (a regular
   expression with a group named ``ident``) matches in full: by default ``ID:<ident>`` or ``<ident>``.
   A binary identification (a DLMS DataNotification or an AARQ carrying the system title, as some
   meters send) is not understood: the line must be text.
3. **Registration**: ``ident`` must be a registered, active ``comm_device`` of kind modem, gateway or
   concentrator; its tenant becomes the connection's. An unknown, inactive or (across tenants) ambiguous
   ident is closed (``refused_unknown``).
4. **Held**: the connection waits in the registry, keyed by ident, until a session borrows it. What the
   device sends meanwhile goes into a bounded buffer and is discarded (``stale_bytes``) when the next
   session starts, so a late answer to an earlier, failed session never reaches a new one. When the
   device closes it, it leaves the registry at once; with ``idle_timeout_s`` set, a connection that
   stays silent (no byte either way) that long while nobody uses it is closed (``idle_timeouts``).

Per-device policy: a device may hold ``max_per_device`` connections (default 1). When it connects
again while it already holds that many, the **newest replaces the oldest**, which is closed
(``replaced``): after a cellular network change the old connection is usually dead without either end
knowing (no FIN reached anyone), and the new one is the one the device listens on. A session using the
replaced connection fails with a typed error rather than hanging.

Security: the identification is a plain string, not an authentication. Anyone inside the allow list who
knows an ident can take over (and so cut off) that device's connection; the data stays protected by the
DLMS association itself (HLS-GMAC with the meter's keys), which an impostor cannot complete. Keep the
allow list to the operator's APN ranges.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import ipaddress
import logging
import re
import socket
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Final

from sqlalchemy import Engine, select, update
from sqlalchemy.exc import SQLAlchemyError

from openami.store.schema import comm_device, tenant
from openami.transports.errors import PortInUseError, TransportError
from openami.transports.ports import probe_port

if TYPE_CHECKING:
    from openami.drivers.lines import Line

__all__ = [
    "DEFAULT_IDENT_PATTERN",
    "FEP_DEVICE_KINDS",
    "MAX_IDENT_LINE",
    "PORT_SETTING",
    "FepDevice",
    "FepError",
    "FepIdentity",
    "FepLine",
    "FepStats",
    "FepUnavailable",
    "FrontEndProcessor",
    "IdentParser",
    "IdentificationError",
    "UnknownDevice",
    "compile_ident_pattern",
    "parse_allow_list",
    "resolve_ident",
]

log = logging.getLogger(__name__)

PORT_SETTING: Final = "OPENAMI_FEP_PORT"
MAX_IDENT_LINE: Final = 128
"""Longest identification line, terminator included; a longer one is refused."""
DEFAULT_IDENT_PATTERN: Final = r"(?:[Ii][Dd]:|(?![Ii][Dd]:))(?P<ident>[A-Za-z0-9][A-Za-z0-9._:@+\-]{0,63})"
"""``ID:<ident>`` or ``<ident>``: 1 to 64 characters (the length of ``comm_device.ident``), starting with
a letter or digit, then letters, digits and ``. _ : @ + -``. A line starting ``ID:`` always has the
prefix taken off (``ID:`` alone is no ident)."""
FEP_DEVICE_KINDS: Final = frozenset({"modem", "gateway", "concentrator"})
BUFFER_BYTES: Final = 0x10000
"""Bytes kept from a device while nobody uses its connection (and read ahead while someone does)."""
_READ_SIZE: Final = 0x10000
_TERMINATORS: Final = b"\r\n"


class FepError(Exception):
    """Base of the front-end processor's errors."""


class FepUnavailable(FepError):
    """The device holds no connection here, or it stayed busy longer than the caller would wait."""


class IdentificationError(FepError):
    """A first line that is not an identification: too long, not text, or not matching the pattern."""


class UnknownDevice(FepError):
    """An ident that names no active modem, gateway or concentrator (or several, in different tenants)."""


def compile_ident_pattern(pattern: str | re.Pattern[str]) -> re.Pattern[str]:
    """``pattern`` compiled; :class:`ValueError` unless it is valid and has a group named ``ident``."""
    try:
        compiled = re.compile(pattern) if isinstance(pattern, str) else pattern
    except re.error as exc:
        raise ValueError(f"identification pattern {pattern!r} is not a regular expression: {exc}") from None
    if "ident" not in compiled.groupindex:
        raise ValueError(f"identification pattern {compiled.pattern!r} has no group named 'ident'")
    return compiled


def parse_allow_list(
    networks: Iterable[str],
) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    """The networks of an allow list (``10.0.0.0/8``, ``2001:db8::/32``, or one address); :class:`ValueError`
    naming the entry for a malformed one or one with host bits set (``10.0.0.1/8``: a typo, most likely)."""
    parsed: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
    for entry in networks:
        try:
            parsed.append(ipaddress.ip_network(entry.strip(), strict=True))
        except ValueError as exc:
            raise ValueError(f"allow list entry {entry!r}: {exc}") from None
    if not parsed:
        raise ValueError("the allow list is empty: every connection would be refused")
    return tuple(parsed)


class IdentParser:
    """Sans-IO reader of the identification line: feed bytes, get the ident once the line is complete.

    Empty lines before it (a stray CR LF) are skipped; every byte counts against ``max_bytes``. After the
    ident, :attr:`rest` holds what followed the terminator in the same bytes (not part of the line; a
    LF right after a CR terminator is dropped too, see :attr:`lf_may_follow`). Any input ends in a
    value, ``None`` (more needed) or :class:`IdentificationError`; after a value or an error, feeding
    again is an error.
    """

    def __init__(self, pattern: re.Pattern[str], max_bytes: int = MAX_IDENT_LINE) -> None:
        self.pattern = pattern
        self.max_bytes = max_bytes
        self.rest = b""
        self.lf_may_follow = False
        """The line ended with CR at the end of the bytes fed: a LF starting the next ones is its end."""
        self._line = bytearray()
        self._seen = 0
        self._done = False

    def feed(self, data: bytes) -> str | None:
        if self._done:
            raise IdentificationError("identification already complete")
        for index, byte in enumerate(data):
            self._seen += 1
            if self._seen > self.max_bytes:
                self._done = True
                raise IdentificationError(f"no identification line within {self.max_bytes} bytes")
            if byte in _TERMINATORS:
                if not self._line:
                    continue  # an empty line (or the LF of a CR LF) before the identification
                self._done = True
                rest = data[index + 1 :]
                if byte == 0x0D:
                    if rest[:1] == b"\n":
                        rest = rest[1:]
                    elif not rest:
                        self.lf_may_follow = True
                self.rest = rest
                return self._match(bytes(self._line))
            self._line.append(byte)
        return None

    def _match(self, line: bytes) -> str:
        try:
            text = line.decode("ascii")
        except UnicodeDecodeError:
            raise IdentificationError("identification is not ASCII text") from None
        text = text.strip(" \t")
        if not text.isprintable():
            raise IdentificationError("identification holds control characters")
        match = self.pattern.fullmatch(text)
        if match is None or not match.group("ident"):
            raise IdentificationError(f"identification {text[:64]!r} does not match the pattern")
        return match.group("ident")


@dataclass(frozen=True, slots=True)
class FepIdentity:
    """The registered device an ident names."""

    comm_device_id: int
    tenant_id: int
    tenant: str
    kind: str


def resolve_ident(engine: Engine, ident: str, *, touch: bool = True) -> FepIdentity:
    """The active modem, gateway or concentrator registered as ``ident``; :class:`UnknownDevice` otherwise.

    Idents are unique per tenant only: one registered in two tenants is refused as ambiguous, since the
    connection alone cannot tell whose it is. ``touch``: record the time in ``last_seen_at``. Blocking.
    """
    query = (
        select(comm_device.c.id, comm_device.c.tenant_id, comm_device.c.kind, tenant.c.slug)
        .join(tenant, tenant.c.id == comm_device.c.tenant_id)
        .where(
            comm_device.c.ident == ident,
            comm_device.c.status == "active",
            comm_device.c.kind.in_(sorted(FEP_DEVICE_KINDS)),
        )
        .limit(2)
    )
    with engine.connect() as conn:
        rows = conn.execute(query).all()
    if not rows:
        raise UnknownDevice(f"{ident!r} is no active modem, gateway or concentrator")
    if len(rows) > 1:
        raise UnknownDevice(f"{ident!r} is registered in more than one tenant")
    row = rows[0]
    if touch:
        try:
            with engine.begin() as conn:
                conn.execute(
                    update(comm_device)
                    .where(comm_device.c.id == row.id)
                    .values(last_seen_at=datetime.now(UTC))
                )
        except SQLAlchemyError as exc:  # a busy database must not turn a known device away
            log.debug("FEP: last_seen_at of %r not updated: %s", ident, exc)
    return FepIdentity(int(row.id), int(row.tenant_id), str(row.slug), str(row.kind))


@dataclass(slots=True)
class FepStats:
    """Counters for /metrics (running totals) and two gauges (``active``, ``identifying``)."""

    accepted: int = 0
    """Connections identified and held."""
    refused_address: int = 0
    refused_unknown: int = 0
    """Unknown, inactive or ambiguous idents, and first lines that are no identification."""
    refused_limit: int = 0
    """Closed at once because ``max_connections`` sockets were open."""
    identify_timeouts: int = 0
    identify_errors: int = 0
    """The registry could not be asked (database down); the device will try again."""
    replaced: int = 0
    closed_by_device: int = 0
    idle_timeouts: int = 0
    lends: int = 0
    lend_refusals: int = 0
    """Borrowers turned away: device not connected, or still busy when their wait ran out."""
    stale_bytes: int = 0
    """Bytes a device sent while nobody used its connection, discarded."""
    active: int = 0
    identifying: int = 0

    def outcomes(self) -> dict[str, float]:
        """The connection counters, by outcome (for one labelled Prometheus counter)."""
        return {
            "accepted": self.accepted,
            "refused_address": self.refused_address,
            "refused_unknown": self.refused_unknown,
            "refused_limit": self.refused_limit,
            "identify_timeouts": self.identify_timeouts,
            "identify_errors": self.identify_errors,
            "replaced": self.replaced,
            "closed_by_device": self.closed_by_device,
            "idle_timeouts": self.idle_timeouts,
        }

    def sessions(self) -> dict[str, float]:
        """The borrowing counters: connections lent, borrowers turned away, stale bytes discarded."""
        return {"lent": self.lends, "refused": self.lend_refusals, "stale_bytes": self.stale_bytes}

    def gauges(self) -> dict[str, float]:
        """Connections now: identified and held, and still identifying."""
        return {"active": self.active, "identifying": self.identifying}


@dataclass(frozen=True, slots=True)
class FepDevice:
    """One held connection, for the API: who, from where, since when, and whether a session has it."""

    ident: str
    tenant_id: int
    tenant: str
    comm_device_id: int
    kind: str
    peer: str
    connected_since: datetime
    last_activity: datetime
    in_use: bool


def _peer_ip(peer: object) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    if not isinstance(peer, tuple) or not peer or not isinstance(peer[0], str):
        return None
    try:
        ip = ipaddress.ip_address(peer[0].split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def _peer_text(peer: object) -> str:
    if isinstance(peer, tuple) and len(peer) >= 2:
        host = str(peer[0])
        return f"[{host}]:{peer[1]}" if ":" in host else f"{host}:{peer[1]}"
    return str(peer)


class _Connection(asyncio.Protocol):
    """One device's TCP connection: identification first, then held in the registry and lent out."""

    def __init__(self, fep: FrontEndProcessor) -> None:
        self.fep = fep
        self.transport: asyncio.Transport | None = None
        self.peer = "?"
        self.ident: str | None = None
        self.identity: FepIdentity | None = None
        self.device: _Device | None = None
        self.closed = False
        self.in_use = False
        self.buffer = bytearray()
        self.parser: IdentParser | None = IdentParser(fep.ident_pattern)
        self.since_wall = datetime.now(UTC)
        self.since_mono = self.last_mono = time.monotonic()
        self._timer: asyncio.TimerHandle | None = None
        self._data_waiter: asyncio.Future[None] | None = None
        self._write_waiter: asyncio.Future[None] | None = None
        self._writing_paused = False
        self._reading_paused = False
        self._skip_lf = False

    # --------------------------------------------------------------------------- asyncio callbacks

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # a TCP connection is an asyncio.Transport
        self.fep._accept(self)

    def data_received(self, data: bytes) -> None:
        self.last_mono = time.monotonic()
        parser = self.parser
        if parser is not None:
            try:
                ident = parser.feed(data)
            except IdentificationError as exc:
                self.fep.stats.refused_unknown += 1
                log.info("FEP: %s refused: %s", self.peer, exc)
                self.drop()
                return
            if ident is None:
                return
            self.parser = None
            self.ident = ident
            data = parser.rest
            self._skip_lf = parser.lf_may_follow
            self.fep._identified(self, ident)
        elif self._skip_lf:
            self._skip_lf = False
            if data[:1] == b"\n":
                data = data[1:]
        if not data:
            return
        buffer = self.buffer
        buffer += data
        if self.in_use:
            if len(buffer) > self.fep.buffer_bytes and not self._reading_paused and self.transport:
                self._reading_paused = True
                self.transport.pause_reading()  # the borrower reads slower than the device sends
            self._wake_reader()
        elif len(buffer) > self.fep.buffer_bytes:
            excess = len(buffer) - self.fep.buffer_bytes
            del buffer[:excess]
            self.fep.stats.stale_bytes += excess

    def connection_lost(self, exc: Exception | None) -> None:
        by_device = not self.closed
        self.closed = True
        self._cancel_timer()
        self.fep._forget(self, by_device=by_device)
        self._wake_reader()
        self._wake_writer()

    def pause_writing(self) -> None:
        self._writing_paused = True

    def resume_writing(self) -> None:
        self._writing_paused = False
        self._wake_writer()

    # ---------------------------------------------------------------------------------- helpers

    def start_timer(self, delay: float, callback: Callable[[], None]) -> None:
        self._cancel_timer()
        self._timer = asyncio.get_running_loop().call_later(delay, callback)

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def drop(self) -> None:
        """Close the connection now and take it out of the registry (no wait for the OS's callback)."""
        if self.closed:
            return
        self.closed = True
        self._cancel_timer()
        self.fep._forget(self, by_device=False)
        if self.transport is not None:
            self.transport.abort()
        self._wake_reader()
        self._wake_writer()

    @property
    def last_activity(self) -> datetime:
        return self.since_wall + timedelta(seconds=self.last_mono - self.since_mono)

    def claim(self) -> None:
        """Start a lend: stale bytes out, reading on."""
        self.in_use = True
        if self.buffer:
            self.fep.stats.stale_bytes += len(self.buffer)
            self.buffer.clear()
        self._resume_reading()

    def release(self) -> None:
        self.in_use = False
        self._resume_reading()
        device = self.device
        if device is not None:
            device.wake()

    def _resume_reading(self) -> None:
        if self._reading_paused and self.transport is not None and not self.closed:
            self._reading_paused = False
            self.transport.resume_reading()

    async def wait_data(self) -> None:
        waiter = self._data_waiter = asyncio.get_running_loop().create_future()
        try:
            await waiter
        finally:
            self._data_waiter = None

    async def wait_writable(self) -> None:
        while self._writing_paused and not self.closed:
            waiter = self._write_waiter = asyncio.get_running_loop().create_future()
            try:
                await waiter
            finally:
                self._write_waiter = None

    def take(self, n: int) -> bytes:
        buffer = self.buffer
        if n < 0 or n >= len(buffer):
            data = bytes(buffer)
            buffer.clear()
        else:
            data = bytes(buffer[:n])
            del buffer[:n]
        if len(buffer) <= self.fep.buffer_bytes // 2:
            self._resume_reading()
        return data

    def _wake_reader(self) -> None:
        waiter = self._data_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _wake_writer(self) -> None:
        waiter = self._write_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)


class _Device:
    """The connections one ident holds (oldest first) and the sessions waiting for one of them."""

    def __init__(self, ident: str, identity: FepIdentity) -> None:
        self.ident = ident
        self.identity = identity
        self.connections: list[_Connection] = []
        self.waiters: deque[asyncio.Future[None]] = deque()

    def idle(self) -> _Connection | None:
        """The newest connection nobody uses (after a network change the newest is the live one)."""
        for conn in reversed(self.connections):
            if not conn.in_use and not conn.closed:
                return conn
        return None

    def wake(self) -> None:
        for waiter in self.waiters:
            if not waiter.done():
                waiter.set_result(None)


class FepLine:
    """A held connection lent to one session: a :class:`~openami.drivers.lines.Line` and a DLMS
    :class:`~openami.drivers.dlms.transport.ByteReader` / ``ByteWriter`` at once.

    :meth:`close` gives the connection back to the FEP (the socket stays open); afterwards every call
    raises ``ConnectionResetError``. :meth:`read` returns ``b""`` once the device has closed the
    connection, or the FEP has (replaced by a newer one, or stopping).
    """

    baudrate: int | None = None
    follows_baudrate = False

    def __init__(self, conn: _Connection, ident: str) -> None:
        self._conn: _Connection | None = conn
        self.ident = ident
        self.peer = f"fep://{ident} ({conn.peer})"

    def _held(self) -> _Connection:
        conn = self._conn
        if conn is None:
            raise ConnectionResetError(f"{self.peer}: the connection was handed back to the FEP")
        return conn

    @property
    def closed(self) -> bool:
        """Handed back, or the connection itself is gone."""
        return self._conn is None or self._conn.closed

    async def read(self, n: int = -1) -> bytes:
        """Up to ``n`` (all, when negative) bytes once some are there; ``b""`` at end of stream."""
        conn = self._held()
        while not conn.buffer:
            if conn.closed:
                return b""
            await conn.wait_data()
            conn = self._held()
        conn.last_mono = time.monotonic()
        return conn.take(n)

    def write(self, data: bytes) -> None:
        conn = self._held()
        if conn.closed or conn.transport is None:
            raise ConnectionResetError(f"{self.peer} closed the connection")
        conn.last_mono = time.monotonic()
        conn.transport.write(data)

    async def drain(self) -> None:
        conn = self._held()
        await conn.wait_writable()
        if conn.closed:
            raise ConnectionResetError(f"{self.peer} closed the connection")

    async def send(self, data: bytes) -> None:
        self.write(data)
        await self.drain()

    async def set_baudrate(self, baudrate: int, drain_s: float) -> None:
        """Nothing to do: the modem's serial side runs at the rate configured in it."""

    def close(self) -> None:
        """Hand the connection back to the FEP for the next session (safe to call twice)."""
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.release()

    async def aclose(self) -> None:
        self.close()


if TYPE_CHECKING:

    def _a_lent_connection_is_a_line(line: FepLine) -> Line:
        return line  # mypy checks that FepLine satisfies drivers.lines.Line


class FrontEndProcessor:
    """Listens on ``host:port`` for devices connecting out; see the module docstring.

    ``engine`` is the store the idents are looked up in; ``host`` ``""`` listens on every interface of
    both families, ``"0.0.0.0"`` on IPv4 only, ``"::"`` on IPv6 only.
    """

    def __init__(
        self,
        host: str,
        port: int,
        engine: Engine,
        *,
        allow: Iterable[str] = ("0.0.0.0/0",),
        identify_timeout_s: float = 10.0,
        ident_pattern: str | re.Pattern[str] = DEFAULT_IDENT_PATTERN,
        max_connections: int = 10000,
        max_per_device: int = 1,
        idle_timeout_s: float | None = None,
        buffer_bytes: int = BUFFER_BYTES,
    ) -> None:
        if identify_timeout_s <= 0:
            raise ValueError("identify_timeout_s must be positive")
        if max_connections < 1 or max_per_device < 1:
            raise ValueError("max_connections and max_per_device must be at least 1")
        if idle_timeout_s is not None and idle_timeout_s <= 0:
            raise ValueError("idle_timeout_s must be positive (or None: never)")
        if buffer_bytes < 1:
            raise ValueError("buffer_bytes must be at least 1")
        self.host = host
        self._port = port
        self._engine = engine
        self.allow = parse_allow_list(allow)
        self.identify_timeout_s = identify_timeout_s
        self.ident_pattern = compile_ident_pattern(ident_pattern)
        self.max_connections = max_connections
        self.max_per_device = max_per_device
        self.idle_timeout_s = idle_timeout_s
        self.buffer_bytes = buffer_bytes
        self.stats = FepStats()
        self._server: asyncio.Server | None = None
        self._open: set[_Connection] = set()
        self._devices: dict[str, _Device] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._sweeper: asyncio.Task[None] | None = None

    @property
    def port(self) -> int:
        """The port listened on (the OS's pick when constructed with 0), once started."""
        return self._port

    @property
    def running(self) -> bool:
        return self._server is not None

    async def start(self) -> None:
        """Listen; :class:`PortInUseError` names the setting when the port is taken."""
        if self._server is not None:
            return
        self._port = probe_port(self.host, self._port, PORT_SETTING)
        loop = asyncio.get_running_loop()
        try:
            self._server = await loop.create_server(
                lambda: _Connection(self),
                self.host or None,
                self._port,
                reuse_address=True,
                backlog=min(4096, max(100, self.max_connections)),
            )
        except OSError as exc:
            where = f"cannot listen on {self.host}:{self._port}: {exc.strerror or exc}"
            if exc.errno == errno.EADDRINUSE:
                raise PortInUseError(f"{where} (set {PORT_SETTING})") from exc
            raise TransportError(where) from exc
        if self.idle_timeout_s is not None:
            self._sweeper = asyncio.create_task(self._sweep(self.idle_timeout_s))
        log.info("FEP listening on %s:%d", self.host or "*", self._port)

    async def stop(self) -> None:
        """Stop listening and close every connection; sessions using one fail, waiters are turned away."""
        server, self._server = self._server, None
        if server is not None:
            server.close()
        if self._sweeper is not None:
            self._sweeper.cancel()
            await asyncio.gather(self._sweeper, return_exceptions=True)
            self._sweeper = None
        for conn in list(self._open):
            conn.drop()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for device in list(self._devices.values()):
            device.wake()
        self._devices.clear()
        if server is not None:
            await server.wait_closed()

    async def __aenter__(self) -> FrontEndProcessor:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # ------------------------------------------------------------------------------------ registry

    def is_connected(self, ident: str) -> bool:
        device = self._devices.get(ident)
        return device is not None and any(not c.closed for c in device.connections)

    def devices(self) -> list[FepDevice]:
        """Every held connection, by ident then age."""
        found: list[FepDevice] = []
        for ident in sorted(self._devices):
            device = self._devices[ident]
            identity = device.identity
            for conn in device.connections:
                found.append(
                    FepDevice(
                        ident=ident,
                        tenant_id=identity.tenant_id,
                        tenant=identity.tenant,
                        comm_device_id=identity.comm_device_id,
                        kind=identity.kind,
                        peer=conn.peer,
                        connected_since=conn.since_wall,
                        last_activity=conn.last_activity,
                        in_use=conn.in_use,
                    )
                )
        return found

    @contextlib.asynccontextmanager
    async def lend(
        self, ident: str, wait_s: float, *, tenant_id: int | None = None
    ) -> AsyncIterator[FepLine]:
        """``async with fep.lend(ident, wait_s) as line``: exclusive use of the device's connection.

        Waits at most ``wait_s`` while other sessions use it; :class:`FepUnavailable` when the device
        holds no connection (or, with ``tenant_id``, none of that tenant's), or is still busy then. The
        connection goes back to the FEP on exit, whatever happened inside.
        """
        conn = await self._claim(ident, wait_s, tenant_id)
        line = FepLine(conn, ident)
        try:
            yield line
        finally:
            line.close()

    async def _claim(self, ident: str, wait_s: float, tenant_id: int | None) -> _Connection:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(0.0, wait_s)
        while True:
            device = self._devices.get(ident)
            if device is None or (tenant_id is not None and device.identity.tenant_id != tenant_id):
                self.stats.lend_refusals += 1
                raise FepUnavailable(f"{ident} is not connected to the front-end processor")
            conn = device.idle()
            if conn is not None:
                conn.claim()
                self.stats.lends += 1
                return conn
            waiter: asyncio.Future[None] = loop.create_future()
            device.waiters.append(waiter)
            try:
                async with asyncio.timeout_at(deadline):
                    await waiter
            except TimeoutError:
                self.stats.lend_refusals += 1
                raise FepUnavailable(f"{ident} stayed busy for {wait_s}s") from None
            finally:
                with contextlib.suppress(ValueError):
                    device.waiters.remove(waiter)

    # ------------------------------------------------------------------------ connection lifecycle

    def _accept(self, conn: _Connection) -> None:
        transport = conn.transport
        assert transport is not None
        peer = transport.get_extra_info("peername")
        conn.peer = _peer_text(peer)
        ip = _peer_ip(peer)
        if ip is None or not any(ip in network for network in self.allow):
            self.stats.refused_address += 1
            log.debug("FEP: %s refused: outside the allow list", conn.peer)
            conn.closed = True
            transport.abort()
            return
        if len(self._open) >= self.max_connections:
            self.stats.refused_limit += 1
            log.warning("FEP: %s refused: %d connections open", conn.peer, len(self._open))
            conn.closed = True
            transport.abort()
            return
        self._open.add(conn)
        self.stats.identifying += 1
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        conn.start_timer(self.identify_timeout_s, lambda: self._identify_expired(conn))

    def _identify_expired(self, conn: _Connection) -> None:
        if conn.closed or conn.device is not None:
            return
        self.stats.identify_timeouts += 1
        log.info("FEP: %s closed: no identification within %ss", conn.peer, self.identify_timeout_s)
        conn.drop()

    def _identified(self, conn: _Connection, ident: str) -> None:
        task = asyncio.get_running_loop().create_task(self._register(conn, ident))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _register(self, conn: _Connection, ident: str) -> None:
        try:
            identity = await asyncio.to_thread(resolve_ident, self._engine, ident)
        except UnknownDevice as exc:
            if not conn.closed:
                self.stats.refused_unknown += 1
                log.info("FEP: %s refused: %s", conn.peer, exc)
                conn.drop()
            return
        except Exception as exc:  # the registry is down: the device will try again, the FEP goes on
            if not conn.closed:
                self.stats.identify_errors += 1
                log.warning("FEP: %s: cannot look up %r: %s", conn.peer, ident, exc)
                conn.drop()
            return
        if conn.closed:
            return  # gone (or timed out) while the registry was asked
        conn._cancel_timer()
        device = self._devices.get(ident)
        if device is not None and device.identity.tenant_id != identity.tenant_id:
            for old in list(device.connections):  # the ident moved to another tenant since
                old.drop()
            device = None
        if device is None:
            device = self._devices[ident] = _Device(ident, identity)
        else:
            device.identity = identity
        conn.identity = identity
        conn.device = device
        device.connections.append(conn)
        self.stats.identifying -= 1
        self.stats.active += 1
        self.stats.accepted += 1
        log.info("FEP: %s (%s) connected from %s", ident, identity.tenant, conn.peer)
        while len(device.connections) > self.max_per_device:
            oldest = device.connections[0]
            self.stats.replaced += 1
            log.info("FEP: %s: connection from %s replaced by %s", ident, oldest.peer, conn.peer)
            oldest.drop()
        device.wake()

    def _forget(self, conn: _Connection, *, by_device: bool) -> None:
        """Take ``conn`` out of the registry (called once, when it closes, by whichever end)."""
        if conn in self._open:
            self._open.discard(conn)
            if conn.device is None:
                self.stats.identifying -= 1
        device = conn.device
        if device is None or conn not in device.connections:
            return
        device.connections.remove(conn)
        self.stats.active -= 1
        if by_device:
            self.stats.closed_by_device += 1
            log.info("FEP: %s closed the connection from %s", device.ident, conn.peer)
        if not device.connections and self._devices.get(device.ident) is device:
            del self._devices[device.ident]
        device.wake()

    async def _sweep(self, idle_s: float) -> None:
        """Close connections nobody used and nothing crossed for ``idle_s``."""
        interval = min(max(idle_s / 4, 0.05), 30.0)
        while True:
            await asyncio.sleep(interval)
            limit = time.monotonic() - idle_s
            for device in list(self._devices.values()):
                for conn in list(device.connections):
                    if not conn.in_use and conn.last_mono < limit:
                        self.stats.idle_timeouts += 1
                        log.info("FEP: %s: closing %s, idle for %ss", device.ident, conn.peer, idle_s)
                        conn.drop()
