"""The head-end's DLMS push listener: meters' DataNotifications in, ReadingBatch messages out on the bus.

Meters and concentrators push on their own schedule, over TCP (one connection per device, a stream of
IEC 62056-47 wrapper frames or of HDLC frames) or UDP (one datagram holds one or more wrapper frames).
Both listen on the same port number (4059, the IANA port for DLMS/COSEM).

Ciphered pushes (general-glo/ded-ciphering, general-ciphering) carry the meter's system title. The
listener looks it up in the :class:`~openami.security.keyvault.KeyVault`, which gives the tenant, the
meter's serial and its keys:
the push is deciphered with the EK, and when an AK is stored the push must carry a tag that verifies
with it (an unauthenticated push from such a meter is refused, since the security control byte is not
protected otherwise). The invocation counter of every accepted push is checked with an
:class:`~openami.protocols.dlms.security.InvocationCounterGuard`, so a recorded push replayed later is
refused. Plain pushes name no tenant and go to ``default_tenant`` (refused when there is none).

Each APDU becomes one ReadingBatch, one register series per numeric value (meter serial from the push,
or from the key vault; channel = the OBIS code ``A-B:C.D.E``), published with the message id
``dlms-push:<sha256 of the APDU>`` so a meter retransmitting an unacknowledged push is stored once.
Anything that cannot become readings is counted and handed to ``on_rejected`` in the same shape as the
MQTT listener's rejects; nothing a peer sends stops the listener.

Not covered: General Block Transfer split over several frames (each APDU is decoded on its own) and
persisted invocation counters (after a restart the first push per title sets the floor again). A broken
wrapper header also costs the complete frames read with it (the wrapper parser drops its whole buffer).

The key vault, not ``decode_stream``, is consulted for keys: the replay guard needs the invocation
counter, which only :func:`~openami.protocols.dlms.security.decrypt` returns, so the listener opens the
ciphering envelope itself and hands the plain APDU to ``decode_stream``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import math
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final, Protocol

from openami.bus.base import Bus, BusError
from openami.bus.messages import ReadingBatch, Series, readings_subject
from openami.hes.rejected import RejectedHandler, hand_over
from openami.protocols.dlms.errors import DlmsError, FrameError, ReplayError
from openami.protocols.dlms.hdlc import FLAG, LLC_COMMAND, LLC_RESPONSE, HdlcStreamParser, SegmentReassembler
from openami.protocols.dlms.notification import Notification
from openami.protocols.dlms.security import (
    GENERAL_CIPHERING,
    GENERAL_DED_CIPHERING,
    GENERAL_GLO_CIPHERING,
    SYSTEM_TITLE_LENGTH,
    InvocationCounterGuard,
    decrypt,
    general_ciphering_header,
)
from openami.protocols.dlms.stream import decode_stream
from openami.protocols.dlms.wrapper import VERSION, WrapperStreamParser
from openami.security.errors import SecurityError
from openami.security.keyvault import KeyVault, PushKeys
from openami.transports.errors import PortInUseError
from openami.transports.ports import probe_port

__all__ = ["DEFAULT_PORT", "SOURCE", "DlmsPushListener", "PushStats", "push_message_id"]

log = logging.getLogger(__name__)

DEFAULT_PORT: Final = 4059
SOURCE: Final = "dlms-push"
PORT_SETTING: Final = "OPENAMI_DLMS_PUSH_PORT"
MAX_CONNECTIONS: Final = 1000
IDLE_TIMEOUT_S: Final = 300.0
MAX_PENDING_DATAGRAMS: Final = 1000
"""Datagrams being handled at once; more are dropped (UDP has no back-pressure to apply)."""
_READ_SIZE: Final = 65536
#: How long a system title's keys are reused before the vault is asked again, and how many are kept.
_KEY_CACHE_S: Final = 60.0
_KEY_CACHE_MAX: Final = 100_000
#: How long stop() lets connections finish the push in hand before cancelling them.
_STOP_GRACE_S: Final = 5.0
_WRAPPER_VERSION: Final = VERSION.to_bytes(2, "big")


@dataclass
class PushStats:
    """Counters for /metrics: every received APDU (or undecodable chunk) ends up accepted or rejected."""

    received: int = 0
    accepted: int = 0
    rejected: int = 0
    replays: int = 0
    readings: int = 0
    connections: int = 0
    refused_connections: int = 0
    dropped_datagrams: int = 0


class _Rejected(Exception):
    """One push refused, with the reason for the dead-letter record; ``tenant`` when it was known."""

    def __init__(self, reason: str, tenant: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.tenant = tenant


def push_message_id(apdu: bytes) -> str:
    """Bus de-duplication id of a push: its APDU's content (a retransmission repeats it byte for byte)."""
    return f"{SOURCE}:{hashlib.sha256(apdu).hexdigest()}"


class _Framer(Protocol):
    """Cuts one connection's byte stream into APDUs; ``broken`` when the stream can no longer be followed."""

    broken: bool

    def feed(self, data: bytes) -> tuple[list[bytes], list[str]]: ...


class _WrapperFramer:
    def __init__(self) -> None:
        self._parser = WrapperStreamParser()
        self.broken = False

    def feed(self, data: bytes) -> tuple[list[bytes], list[str]]:
        try:
            return [frame.apdu for frame in self._parser.feed(data)], []
        except FrameError as exc:
            # The wrapper has no flag to resynchronise on: the connection must be dropped.
            self.broken = True
            return [], [f"wrapper: {exc}"]


class _HdlcFramer:
    def __init__(self) -> None:
        self._parser = HdlcStreamParser()
        self._segments = SegmentReassembler(max_size=1 << 16)
        self.broken = False

    def feed(self, data: bytes) -> tuple[list[bytes], list[str]]:
        frames = self._parser.feed(data)
        errors = [f"HDLC: {exc}" for exc in self._parser.errors]
        self._parser.errors.clear()
        apdus: list[bytes] = []
        for frame in frames:
            try:
                info = self._segments.add(frame)
            except DlmsError as exc:
                errors.append(f"HDLC: {exc}")
                continue
            if info:  # None: more segments to come; empty: a supervisory frame
                apdus.append(info[3:] if info[:3] in (LLC_COMMAND, LLC_RESPONSE) else info)
        return apdus, errors


def _framer_for(first: bytes) -> _Framer | None:
    if first[:1] == bytes([FLAG]):
        return _HdlcFramer()
    if first[:1] == _WRAPPER_VERSION[:1]:
        return _WrapperFramer()
    return None


def _reading(value: object) -> float | None:
    """The value as a reading, or None for what is not one (ids, clocks, text, NaN)."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return float(value)


def _series(notification: Notification, meter: str, received_at: datetime) -> list[Series]:
    """One register series per numeric value; ids, clocks and text are not readings.

    A timestamp without a UTC deviation is local meter time that cannot be placed without the meter's
    time zone, so the reception time stands in for it, as it does for pushes that carry no time.
    """
    ts = notification.timestamp
    when = ts.astimezone(UTC) if ts is not None and ts.tzinfo is not None else received_at
    series: list[Series] = []
    for value in notification.values:
        reading = _reading(value.value)
        if reading is not None:
            series.append(
                Series(
                    meter=meter,
                    channel=value.obis.reduced,
                    unit=value.unit or "",
                    kind="register",
                    points=[(when, reading, 0)],
                )
            )
    return series


_KEYED_TAGS: Final = frozenset(
    bytes([tag]) for tag in (GENERAL_GLO_CIPHERING, GENERAL_DED_CIPHERING, GENERAL_CIPHERING)
)
"""Envelopes that name the meter's system title, by which the key vault finds its keys."""


def _originator(apdu: bytes) -> bytes:
    """The system title a ciphered push names: right after the tag for general-glo/ded-ciphering, in
    the header (after the transaction id) for general-ciphering."""
    if apdu[0] == GENERAL_CIPHERING:
        try:
            return general_ciphering_header(apdu).originator_system_title
        except DlmsError as exc:
            raise _Rejected(f"general-ciphering header: {exc}") from None
    if len(apdu) < 2 + SYSTEM_TITLE_LENGTH or apdu[1] != SYSTEM_TITLE_LENGTH:
        raise _Rejected("general-ciphered APDU without an 8-byte system title")
    return apdu[2 : 2 + SYSTEM_TITLE_LENGTH]


class _Datagrams(asyncio.DatagramProtocol):
    def __init__(self, listener: DlmsPushListener) -> None:
        self._listener = listener

    def datagram_received(self, data: bytes, addr: tuple[str | object, ...]) -> None:
        self._listener._datagram(data, f"udp://{addr[0]}:{addr[1]}")


class DlmsPushListener:
    """Accepts DLMS pushes on TCP and UDP ``host:port`` and publishes their readings on the bus.

    ``key_vault`` may be None where only plain pushes are expected; ciphered ones are then refused.
    """

    def __init__(
        self,
        host: str,
        port: int,
        bus: Bus,
        key_vault: KeyVault | None,
        *,
        default_tenant: str | None,
        on_rejected: RejectedHandler | None = None,
        max_connections: int = MAX_CONNECTIONS,
        idle_timeout_s: float = IDLE_TIMEOUT_S,
        counters: InvocationCounterGuard | None = None,
    ) -> None:
        self._host = host
        self._port = port
        self._bus = bus
        self._vault = key_vault
        self._default_tenant = default_tenant
        self._on_rejected = on_rejected
        self._max_connections = max_connections
        self._idle_timeout_s = idle_timeout_s
        self._counters = counters or InvocationCounterGuard()
        self._server: asyncio.Server | None = None
        self._udp: asyncio.DatagramTransport | None = None
        self._connections: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()
        self._key_cache: dict[bytes, tuple[float, PushKeys | None]] = {}
        self._datagram_tasks: set[asyncio.Task[None]] = set()
        self.stats = PushStats()

    @property
    def port(self) -> int:
        """The port listened on (the OS's pick when constructed with 0), once started."""
        return self._port

    async def start(self) -> None:
        """Listen on TCP and UDP; :class:`PortInUseError` names the setting when the port is taken."""
        if self._server is not None:
            return
        self._port = probe_port(self._host, self._port, PORT_SETTING)
        self._server = await asyncio.start_server(
            self._serve, self._host, self._port, reuse_address=True, limit=_READ_SIZE
        )
        try:
            loop = asyncio.get_running_loop()
            self._udp, _ = await loop.create_datagram_endpoint(
                lambda: _Datagrams(self), local_addr=(self._host, self._port)
            )
        except OSError as exc:
            await self.stop()
            raise PortInUseError(
                f"cannot listen on UDP {self._host}:{self._port}: {exc.strerror or exc} (set {PORT_SETTING})"
            ) from exc
        log.info("DLMS push listener on tcp+udp %s:%d", self._host, self._port)

    async def stop(self) -> None:
        """Stop listening, close every connection and wait for pushes being handled."""
        server, self._server = self._server, None
        if self._udp is not None:
            self._udp.close()
            self._udp = None
        if server is not None:
            server.close()
        # Close the connections' transports rather than cancelling their tasks: a pending read then ends
        # (EOF) and each handler returns normally, finishing the push in hand. Cancelling a stream
        # handler makes Python 3.11's asyncio log a spurious CancelledError traceback.
        for writer in list(self._writers):
            writer.close()
        pending = {*self._connections, *self._datagram_tasks}
        if pending:
            _, late = await asyncio.wait(pending, timeout=_STOP_GRACE_S)
            for task in late:
                task.cancel()
            await asyncio.gather(*late, return_exceptions=True)
        if server is not None:
            await server.wait_closed()

    # ------------------------------------------------------------------------------------ transports

    async def _push_keys(self, title: bytes) -> PushKeys | None:
        """The vault's keys for a system title, cached briefly: a meter pushes every few minutes, and a
        database round trip per push is most of a push's cost. Re-keyed meters are picked up within
        ``_KEY_CACHE_S``."""
        assert self._vault is not None
        now = time.monotonic()
        cached = self._key_cache.get(title)
        if cached is not None and cached[0] > now:
            return cached[1]
        keys = await asyncio.to_thread(self._vault.push_keys, title)
        if len(self._key_cache) >= _KEY_CACHE_MAX:
            self._key_cache.clear()
        self._key_cache[title] = (now + _KEY_CACHE_S, keys)
        return keys

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername") or ("?", 0)
        origin = f"tcp://{peer[0]}:{peer[1]}"
        task = asyncio.current_task()
        if len(self._connections) >= self._max_connections or task is None:
            self.stats.refused_connections += 1
            log.warning("refused %s: %d connections open", origin, len(self._connections))
            writer.close()
            return
        self._connections.add(task)
        self._writers.add(writer)
        self.stats.connections += 1
        try:
            await self._read_stream(reader, origin)
        except TimeoutError:
            log.info("closing idle connection %s", origin)
        except ConnectionError:
            pass
        except Exception:
            log.exception("connection %s failed", origin)  # one connection, never the listener
        finally:
            self._connections.discard(task)
            self._writers.discard(writer)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _read_stream(self, reader: asyncio.StreamReader, origin: str) -> None:
        framer: _Framer | None = None
        while True:
            async with asyncio.timeout(self._idle_timeout_s):
                data = await reader.read(_READ_SIZE)
            if not data:
                return
            received_at = datetime.now(UTC)
            if framer is None:
                framer = _framer_for(data)
                if framer is None:
                    await self._reject(origin, "neither a DLMS wrapper nor an HDLC stream", data, received_at)
                    return
            apdus, errors = framer.feed(data)
            for apdu in apdus:
                await self._handle(apdu, origin, received_at)
            if errors:
                await self._reject(origin, "; ".join(errors[:5]), data, received_at)
            if framer.broken:
                return

    def _datagram(self, data: bytes, origin: str) -> None:
        if len(self._datagram_tasks) >= MAX_PENDING_DATAGRAMS:
            self.stats.dropped_datagrams += 1
            return
        task = asyncio.create_task(self._handle_datagram(data, origin))
        self._datagram_tasks.add(task)
        task.add_done_callback(self._datagram_tasks.discard)

    async def _handle_datagram(self, data: bytes, origin: str) -> None:
        received_at = datetime.now(UTC)
        framer = _WrapperFramer()
        apdus, errors = framer.feed(data) if data[:2] == _WRAPPER_VERSION else ([], ["not a wrapper frame"])
        if not errors and sum(8 + len(apdu) for apdu in apdus) != len(data):
            errors.append("wrapper: incomplete frame at the end of the datagram")
        for apdu in apdus:
            await self._handle(apdu, origin, received_at)
        if errors:
            await self._reject(origin, "; ".join(errors), data, received_at)

    # ------------------------------------------------------------------------------------------ APDUs

    async def _handle(self, apdu: bytes, origin: str, received_at: datetime) -> None:
        try:
            batch = await self._to_batch(apdu, received_at)
            await self._bus.publish(
                readings_subject(batch.tenant), batch.to_bytes(), msg_id=push_message_id(apdu)
            )
        except _Rejected as exc:
            await self._reject(origin, exc.reason, apdu, received_at, exc.tenant)
        except BusError as exc:
            await self._reject(origin, f"bus publish failed: {exc}", apdu, received_at)
        except Exception as exc:
            # A bug must cost one push (kept as a dead letter), never the listener.
            log.exception("failed to handle a push from %s", origin)
            await self._reject(origin, f"internal error: {type(exc).__name__}", apdu, received_at)
        else:
            self.stats.received += 1
            self.stats.accepted += 1
            self.stats.readings += batch.reading_count

    async def _to_batch(self, apdu: bytes, received_at: datetime) -> ReadingBatch:
        tenant, meter_serial = self._default_tenant, None
        plain = apdu
        if apdu[:1] in _KEYED_TAGS:
            keys = await self._keys(apdu)
            tenant, meter_serial = keys.tenant, keys.meter_serial
            plain = self._decipher(apdu, keys)
        result = decode_stream(plain)
        if result.errors:
            raise _Rejected("; ".join(result.errors[:5]), tenant)
        if tenant is None:
            raise _Rejected("plain push and no default tenant configured")
        series: list[Series] = []
        for notification in result.notifications:
            meter = notification.meter_id or meter_serial
            if meter is None:
                raise _Rejected("the push names no meter and its system title is not linked to one", tenant)
            series += _series(notification, meter, received_at)
        if not series:
            raise _Rejected("the push holds no numeric values", tenant)
        return ReadingBatch(tenant=tenant, source=SOURCE, received_at=received_at, series=series)

    async def _keys(self, apdu: bytes) -> PushKeys:
        title = _originator(apdu)
        if self._vault is None:
            raise _Rejected(f"ciphered push from {title.hex().upper()} but no key vault configured")
        try:
            keys = await self._push_keys(title)
        except SecurityError as exc:
            raise _Rejected(f"keys of system title {title.hex().upper()}: {exc}") from None
        if keys is None or keys.encryption_key is None:
            raise _Rejected(f"unknown system title {title.hex().upper()} (no encryption key stored)")
        return keys

    def _decipher(self, apdu: bytes, keys: PushKeys) -> bytes:
        assert keys.encryption_key is not None  # checked by _keys
        try:
            deciphered = decrypt(
                apdu,
                encryption_key=keys.encryption_key,
                authentication_key=keys.authentication_key,
                verify_tag=keys.authentication_key is not None,
            )
            if keys.authentication_key is not None and not deciphered.security_control.authenticated:
                raise _Rejected("unauthenticated push refused: an authentication key is stored", keys.tenant)
            assert deciphered.system_title is not None  # general ciphering always carries it
            # Only after the tag verified: a forged counter must not push the floor up.
            self._counters.accept(deciphered.system_title, deciphered.invocation_counter)
        except ReplayError as exc:
            self.stats.replays += 1
            raise _Rejected(f"replay: {exc}", keys.tenant) from None
        except DlmsError as exc:
            raise _Rejected(f"cannot decipher: {exc}", keys.tenant) from None
        return deciphered.plaintext

    async def _reject(
        self, origin: str, reason: str, payload: bytes, received_at: datetime, tenant: str | None = None
    ) -> None:
        self.stats.received += 1
        self.stats.rejected += 1
        log.warning("rejected push from %s: %s", origin, reason)
        await hand_over(self._on_rejected, origin, tenant, reason, payload, received_at)
