"""Wireless M-Bus at the edge: the gateway's own receivers, and the radio meters of its meter list.

A gateway with a receiver stick (on a tty, or behind ser2net: the ``[[receivers]]`` of its
configuration, the URL forms of :func:`openami.drivers.wmbus.parse_receiver_url`) listens to every
meter in range. The meters it is responsible for are the meter list's entries of protocol ``wmbus``,
named by the identification number printed on the meter, optionally pinned to its manufacturer::

    [[meters]]
    serial = "W-1"
    protocol = "wmbus"
    address = "wmbus://KAM/12345678"     # or "wmbus://12345678": any manufacturer
    keys = { encryption = "00112233445566778899AABBCCDDEEFF" }   # AES-128; none: sent in the clear

A sender is matched by its link-layer address (manufacturer and id, the address its key is filed under
in the head-end's key vault too), so a meter behind a radio module is listed under the module's id.

Telegrams of listed meters are decoded exactly as the head-end decodes forwarded lines
(:meth:`openami.hes.wmbus_ingest.WmbusIngest.decode`, with the meter list as its key source: same
decryption, compact frames, channel names) and published to the archive sink as one read per
telegram, stamped with the time the line arrived, so they leave in BATCHes like polled readings. Radio
meters push: they are not polled, and a round's report does not include them; the agent's HEALTH counts
the listed ones heard in the last poll interval instead. Telegrams of other senders are handed to
``on_unknown`` (discovery, :mod:`openami.edge.discovery`) and not decoded; lines that cannot be used (not
a telegram, wrong key) are counted and logged once per sender, and cost only themselves.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Final
from urllib.parse import urlsplit

from openami.bus.base import Publisher
from openami.drivers.wmbus.receiver import ReceivedLine, WmbusReceiver
from openami.edge.config import MeterConfig, ReceiverConfig
from openami.hes.rounds import publish_read
from openami.hes.wmbus_ingest import SOURCE, KeyRefused, MeterKey, WmbusIngest
from openami.protocols.wmbus import Address, WmbusError

__all__ = [
    "SCHEME",
    "ConfigKeys",
    "RadioMeter",
    "RadioReceivers",
    "RadioSender",
    "RadioStats",
    "add_radio_meter",
    "parse_radio_address",
]

log = logging.getLogger(__name__)

SCHEME: Final = "wmbus"
_IDENT = re.compile(r"[0-9A-Fa-f]{8}")
_MANUFACTURER = re.compile(r"[A-Za-z]{3}")
_MAX_WARNED: Final = 1024


def parse_radio_address(address: str) -> tuple[str | None, str]:
    """``wmbus://12345678`` or ``wmbus://KAM/12345678`` as (manufacturer or None, id); the id in the
    form a telegram's address renders it (hex digits, lower case). ``ValueError`` naming the problem."""
    parts = urlsplit(address.strip())
    want = f"{address!r}: expected {SCHEME}://ID or {SCHEME}://MAN/ID (the 8-digit id on the meter)"
    if parts.scheme != SCHEME or parts.query or parts.fragment or "@" in parts.netloc:
        raise ValueError(want)
    manufacturer: str | None
    if parts.path in ("", "/"):
        manufacturer, ident = None, parts.netloc
    else:
        manufacturer, ident = parts.netloc, parts.path.removeprefix("/")
        if not _MANUFACTURER.fullmatch(manufacturer):
            raise ValueError(f"{address!r}: the manufacturer is three letters (its FLAG id, e.g. KAM)")
    if not _IDENT.fullmatch(ident):
        raise ValueError(want)
    return None if manufacturer is None else manufacturer.upper(), ident.lower()


@dataclass(frozen=True, slots=True)
class RadioMeter:
    """A listed radio meter: its serial, the id (and manufacturer) it sends under, and its key."""

    serial: str
    ident: str
    manufacturer: str | None
    key: bytes | None

    def matches(self, ident: str, manufacturer: str) -> bool:
        return self.ident == ident.lower() and self.manufacturer in (None, manufacturer.upper())


def add_radio_meter(meters: list[RadioMeter], meter: MeterConfig) -> None:
    """Append ``meter``'s radio identity; ``ValueError`` when its address is unusable or another listed
    meter already sends under it (one telegram must name one meter)."""
    manufacturer, ident = parse_radio_address(meter.address)
    key = meter.keys.encryption_key if meter.keys is not None else None
    for other in meters:
        same_maker = None in (manufacturer, other.manufacturer) or manufacturer == other.manufacturer
        if other.ident == ident and same_maker:
            raise ValueError(f"{meter.address!r}: meter {other.serial} is heard under the same address")
    meters.append(RadioMeter(meter.serial, ident, manufacturer, key))


class ConfigKeys:
    """The meter list as :class:`~openami.hes.wmbus_ingest.KeySource`: only listed meters are read."""

    listed_only: Final = True

    def __init__(self, meters: Sequence[RadioMeter] = ()) -> None:
        self.use(meters)

    def use(self, meters: Sequence[RadioMeter]) -> None:
        self.meters = list(meters)

    def find(self, ident: str, manufacturer: str) -> RadioMeter | None:
        return next((m for m in self.meters if m.matches(ident, manufacturer)), None)

    async def lookup(self, tenant: str, address: Address) -> MeterKey | None:
        meter = self.find(address.id, address.manufacturer)
        return None if meter is None else MeterKey(meter.serial, meter.key)


@dataclass(frozen=True, slots=True)
class RadioSender:
    """A telegram of a meter not in the list: who sent it, how loud, when, and through which receiver."""

    address: Address
    installation: bool
    rssi: int | None
    seen: datetime
    receiver: str


@dataclass
class RadioStats:
    lines: int = 0
    telegrams: int = 0
    """Telegrams of listed meters decoded and archived."""
    readings: int = 0
    rejected: int = 0
    """Lines that are no telegram, and listed meters' telegrams that do not decode (wrong key ...)."""
    unknown: int = 0
    """Telegrams of senders not in the meter list."""


class RadioReceivers:
    """The gateway's receivers (module docstring): :meth:`start` returns at once, a receiver that is
    not there is retried in the background with the driver's backoff."""

    def __init__(
        self,
        receivers: Sequence[ReceiverConfig],
        tenant: str,
        sink: Publisher,
        meters: Sequence[RadioMeter] = (),
        *,
        on_unknown: Callable[[RadioSender], None] | None = None,
        reconnect_min_s: float = 0.5,
        reconnect_max_s: float = 30.0,
    ) -> None:
        self.tenant = tenant
        self.keys = ConfigKeys(meters)
        self.receivers = [
            WmbusReceiver(
                r.url,
                idle_timeout_s=r.idle_timeout_s,
                reconnect_min_s=reconnect_min_s,
                reconnect_max_s=reconnect_max_s,
            )
            for r in receivers
        ]
        self.stats = RadioStats()
        self._sink = sink
        self._ingest = WmbusIngest(self.keys)
        self._on_unknown = on_unknown
        self._heard: dict[str, float] = {}  # serial -> monotonic time last heard
        self._warned: set[str] = set()
        self._tasks: list[asyncio.Task[None]] = []

    def use(self, meters: Sequence[RadioMeter]) -> None:
        """A new meter list (CONFIG from the head-end): from the next telegram on."""
        self.keys.use(meters)
        listed = {m.serial for m in meters}
        self._heard = {serial: at for serial, at in self._heard.items() if serial in listed}
        self._warned.clear()

    @property
    def connected(self) -> int:
        """Receivers whose line is open right now."""
        return sum(receiver.connected for receiver in self.receivers)

    def heard_within(self, seconds: float) -> int:
        """Listed meters heard in the last ``seconds``."""
        since = time.monotonic() - seconds
        return sum(at >= since for at in self._heard.values())

    async def start(self) -> None:
        if not self._tasks:
            self._tasks = [
                asyncio.create_task(self._run(receiver), name=f"wmbus-receiver {receiver.peer}")
                for receiver in self.receivers
            ]

    async def stop(self) -> None:
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def wait_connected(self, timeout_s: float) -> None:
        """Until every receiver's line is open; ``TimeoutError`` after ``timeout_s``."""
        async with asyncio.timeout(timeout_s):
            for receiver in self.receivers:
                await receiver.wait_connected(timeout_s)

    async def _run(self, receiver: WmbusReceiver) -> None:
        while True:
            try:
                async with contextlib.aclosing(receiver.lines()) as lines:
                    async for line in lines:
                        await self._handle(receiver.peer, line)
            except Exception:
                # The driver handles line and connection failures itself; this is a bug. Keep the
                # receiver alive, slowly, so a bug that repeats does not spin.
                log.exception("wM-Bus receiver %s failed; restarting", receiver.peer)
                await asyncio.sleep(receiver.reconnect_max_s)

    async def _handle(self, peer: str, line: ReceivedLine) -> None:
        stats = self.stats
        stats.lines += 1
        if line.telegram is None:
            stats.rejected += 1
            log.debug("wM-Bus receiver %s: %s", peer, line.error)
            return
        try:
            heard = await self._ingest.decode(self.tenant, line.telegram, line.received_at)
        except (WmbusError, KeyRefused) as exc:
            stats.rejected += 1
            self._warn_once(peer, line, exc)
            return
        if heard.serial is None:
            stats.unknown += 1
            if self._on_unknown is not None:
                sender = RadioSender(
                    heard.address, heard.installation, line.telegram.rssi, line.received_at, peer
                )
                self._on_unknown(sender)
            return
        self._heard[heard.serial] = time.monotonic()
        await publish_read(self._sink, SOURCE, self.tenant, heard.serial, line.received_at, heard.series)
        stats.telegrams += 1
        stats.readings += len(heard.series)

    def _warn_once(self, peer: str, line: ReceivedLine, exc: Exception) -> None:
        """A listed meter whose telegrams fail (a wrong key) is worth one warning, not one a telegram."""
        frame = line.telegram.frame if line.telegram is not None else b""
        sender = frame[2:10].hex() if len(frame) >= 10 else ""
        if sender in self._warned:
            log.debug("wM-Bus receiver %s: telegram not used: %s", peer, exc)
            return
        if len(self._warned) >= _MAX_WARNED:
            self._warned.clear()
        self._warned.add(sender)
        log.warning("wM-Bus receiver %s: telegram of %s not used: %s", peer, sender.upper() or "?", exc)
