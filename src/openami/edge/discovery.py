"""Finding meters the gateway is not told about, and reporting them to the head-end (DISCOVERY).

Two sources:

- **Radio**: every telegram the gateway's receivers hear from a meter that is not in its meter list
  (:mod:`openami.edge.wmbus`) makes that sender a discovered device: protocol ``wmbus``, its id,
  manufacturer, medium, version and device type, the RSSI when the receiver printed one, and
  ``address`` ``wmbus://MAN/ID``, which the gateway accepts as that meter's address once it is listed.
  ``[discovery] wmbus = "installation"`` reports only senders of installation telegrams (SND-IR),
  ``"off"`` none.
- **Wired M-Bus**: for each bus of ``[discovery] mbus_buses`` (off when empty, the default), every
  ``mbus_search_interval_s`` (default daily, first a minute after start) the driver's secondary-address
  search (:meth:`openami.drivers.mbus.client.MbusClient.search`). Each slave found that is not a listed
  meter of that bus (by ``secondary=``, or by ``primary=`` and the primary address it answers with) is
  read once (:meth:`~openami.drivers.mbus.client.MbusClient.read_secondary`) for its manufacturer,
  version and medium, and reported with an address the gateway's M-Bus collector reads:
  ``<bus>?secondary=<id>``. Each search step waits ``mbus_search_timeout_s`` (default 0.5 s) for an
  answer, as most patterns get none. The search holds the M-Bus collector's lock of that bus
  (:meth:`openami.hes.mbus_collector.MbusCollector.bus_lock`) from start to end, so a poll round waits
  for it (or it for the round) and the two never talk over each other on one line.

Devices are kept in the archive's ``discovered`` table (upserted by protocol and id, with first and last
seen; at most ``max_devices``, the ones seen longest ago dropped first). A new device is reported at
once: devices found within :data:`DEBOUNCE_S` of each other go in one envelope. Every not-listed device
is reported again after each (re)connect of the link and every ``report_interval_s`` (default daily):
DISCOVERY has no acknowledgement, and the head-end files devices idempotently. A device that is in the
meter list (from the local file or a CONFIG) is not reported. Payloads are cut to at most
:data:`MAX_PAYLOAD` bytes of JSON, far below the head-end's limit (16 x ``MAX_SMALL_PAYLOAD``), and carry
only the fields the head-end reads: ``protocol``, ``id``, ``address``, ``manufacturer``, ``medium``
(the meter table's media, else null) and ``seen`` (last seen).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, Final

from openami.drivers.mbus.errors import MbusDriverError
from openami.edge.archive import Archive, ArchivedDevice
from openami.edge.config import DiscoveryConfig
from openami.edge.meters import MeterTargets, check_address
from openami.edge.wmbus import SCHEME, RadioSender
from openami.hes.gateway_link import MAX_SMALL_PAYLOAD
from openami.hes.mbus_collector import MbusCollector, parse_bus
from openami.hes.wmbus_ingest import meter_medium
from openami.protocols.edge import Kind
from openami.protocols.mbus import MbusError
from openami.protocols.mbus.master import ADDRESS_NETWORK, SecondaryAddress

__all__ = ["DEBOUNCE_S", "MAX_PAYLOAD", "Discovery", "DiscoveryStats", "discovery_payloads"]

log = logging.getLogger(__name__)

DEBOUNCE_S: Final = 1.0
MAX_PAYLOAD: Final = MAX_SMALL_PAYLOAD
"""Bytes of JSON in one DISCOVERY envelope at most (the head-end takes up to 16 times that)."""
FIRST_SEARCH_S: Final = 60.0
"""The first M-Bus search, this long after start (or after one interval, when that is shorter)."""
_MAX_PENDING: Final = 4096

Send = Callable[[Kind, dict[str, Any]], Awaitable[int | None]]


def _entry(device: ArchivedDevice) -> dict[str, Any]:
    return {
        "protocol": device.protocol,
        "id": device.ident,
        "address": device.address,
        "manufacturer": device.manufacturer,
        "medium": device.medium,
        "seen": device.last_seen.isoformat(),
    }


def discovery_payloads(
    devices: Sequence[ArchivedDevice], max_bytes: int = MAX_PAYLOAD
) -> list[dict[str, Any]]:
    """``{"devices": [...]}`` payloads of at most ``max_bytes`` of JSON each, in order."""
    payloads: list[dict[str, Any]] = []
    chunk: list[dict[str, Any]] = []
    size = len(b'{"devices":[]}')
    for device in devices:
        entry = _entry(device)
        length = len(json.dumps(entry, separators=(",", ":"))) + 1
        if chunk and size + length > max_bytes:
            payloads.append({"devices": chunk})
            chunk, size = [], len(b'{"devices":[]}')
        chunk.append(entry)
        size += length
    if chunk:
        payloads.append({"devices": chunk})
    return payloads


@dataclass
class DiscoveryStats:
    devices: int = 0
    """Discovered devices in the archive that are not in the meter list (at the last report)."""
    envelopes_sent: int = 0
    searches: int = 0
    search_errors: int = 0


class Discovery:
    """The gateway's discovery (module docstring). ``send`` is the forwarder's; ``targets`` gives the
    meter list in use (it changes with CONFIG)."""

    def __init__(
        self,
        config: DiscoveryConfig,
        archive: Archive,
        send: Send,
        targets: Callable[[], MeterTargets],
        mbus: MbusCollector,
        *,
        now: Callable[[], datetime],
    ) -> None:
        self.config = config
        self.stats = DiscoveryStats()
        self._archive, self._send, self._targets, self._mbus = archive, send, targets, mbus
        self._now = now
        self._pending: dict[tuple[str, str], ArchivedDevice] = {}
        self._due = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    # -- lifecycle ----------------------------------------------------------------------------------

    async def start(self) -> None:
        """Start archiving and reporting what is noted. The periodic work (:meth:`report_all` every
        ``report_interval_s``, :meth:`search_mbus` every ``mbus_search_interval_s``) is the caller's
        to schedule: the agent runs it with its other periodic tasks."""
        if not self._tasks:
            self._tasks = [asyncio.create_task(self._flush_loop(), name="discovery-flush")]

    async def stop(self) -> None:
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        with contextlib.suppress(Exception):  # what was heard last is kept, if the archive still takes it
            await self.flush(send=False)

    # -- what was found -----------------------------------------------------------------------------

    def heard(self, sender: RadioSender) -> None:
        """A telegram of an unlisted radio meter (:class:`~openami.edge.wmbus.RadioReceivers`)."""
        policy = self.config.wmbus
        if policy == "off" or (policy == "installation" and not sender.installation):
            return
        address = sender.address
        manufacturer = address.manufacturer
        self.note(
            ArchivedDevice(
                protocol="wmbus",
                ident=address.id,
                address=f"{SCHEME}://{manufacturer}/{address.id}" if manufacturer.isalpha() else "",
                manufacturer=manufacturer,
                medium=meter_medium(address.device_type),
                last_seen=sender.seen,
                version=address.version,
                device_type=address.device_type,
                rssi=sender.rssi,
            )
        )

    def note(self, device: ArchivedDevice) -> None:
        """Remember a device; it is archived (and reported when new) within :data:`DEBOUNCE_S`."""
        key = (device.protocol, device.ident)
        if key not in self._pending and len(self._pending) >= _MAX_PENDING:
            return  # a flood of senders between two flushes: the next telegrams bring them again
        self._pending[key] = device
        self._due.set()

    async def _flush_loop(self) -> None:
        while True:
            await self._due.wait()
            await asyncio.sleep(DEBOUNCE_S)
            try:
                await self.flush()
            except Exception:
                log.exception("discovery: devices not archived")

    async def flush(self, *, send: bool = True) -> list[ArchivedDevice]:
        """Archive what was noted since the last flush and report the new devices; those new."""
        self._due.clear()
        devices, self._pending = list(self._pending.values()), {}
        if not devices:
            return []
        new = await asyncio.to_thread(self._archive.note_devices, devices, limit=self.config.max_devices)
        new = [d for d in new if not self.listed(d)]
        for device in new:
            log.info("discovered %s device %s (%s)", device.protocol, device.ident, device.address)
        if new and send:
            await self._report(new)
        return new

    def listed(self, device: ArchivedDevice) -> bool:
        """Is ``device`` in the meter list in use?"""
        targets = self._targets()
        if device.protocol == "wmbus":
            return any(m.matches(device.ident, device.manufacturer) for m in targets.wmbus)
        if device.protocol == "mbus":
            return any(t.secondary == device.ident for t in targets.mbus)
        return False

    async def unlisted(self) -> list[ArchivedDevice]:
        devices = await asyncio.to_thread(self._archive.devices)
        found = [d for d in devices if not self.listed(d)]
        self.stats.devices = len(found)
        return found

    async def report_all(self) -> int:
        """Send every discovered device that is not listed (after a reconnect, and daily); envelopes sent."""
        return await self._report(await self.unlisted())

    async def _report(self, devices: Sequence[ArchivedDevice]) -> int:
        sent = 0
        for payload in discovery_payloads(devices):
            if await self._send(Kind.DISCOVERY, payload) is None:
                break  # the link is down: everything goes again after the reconnect
            sent += 1
        self.stats.envelopes_sent += sent
        return sent

    # -- the M-Bus search ---------------------------------------------------------------------------

    async def search_mbus(self) -> list[ArchivedDevice]:
        """Search every configured bus now; the unlisted slaves found (archived, the new ones reported)."""
        found: list[ArchivedDevice] = []
        for url in self.config.mbus_buses:
            self.stats.searches += 1
            try:
                found += await self._search_bus(url)
            except (MbusDriverError, MbusError, OSError) as exc:
                self.stats.search_errors += 1
                log.warning("M-Bus search on %s failed: %s: %s", url, type(exc).__name__, exc)
        for device in found:
            self.note(device)
        await self.flush()
        return found

    async def _search_bus(self, url: str) -> list[ArchivedDevice]:
        line = parse_bus(url)
        members = [t for t in self._targets().mbus if t.bus == line.bus]
        secondaries = {t.secondary for t in members if t.secondary is not None}
        primaries = {t.primary for t in members if t.primary is not None}
        known = {d.ident: d for d in await asyncio.to_thread(self._archive.devices) if d.protocol == "mbus"}
        separator = "&" if "?" in url else "?"
        found = []
        async with self._mbus.bus_lock(line.bus), line.client(self.config.mbus_search_timeout_s) as client:
            idents = await client.search()
            log.info("M-Bus search on %s: %d slaves", url, len(idents))
            for ident in idents:
                if ident in secondaries:
                    continue
                address = f"{url}{separator}secondary={ident}"
                try:
                    check_address("mbus", address)
                except ValueError as exc:  # a slave with a hex id: the collector cannot select it
                    log.warning("M-Bus slave %s on %s not reported: %s", ident, url, exc)
                    continue
                now = self._now()
                previous = known.get(ident)
                if previous is not None and previous.address == address:
                    found.append(replace(previous, last_seen=now))  # read before: seen again
                    continue
                try:
                    telegram = await client.read_secondary(SecondaryAddress(ident))
                except (MbusDriverError, MbusError) as exc:
                    log.warning("M-Bus slave %s on %s found but not read: %s", ident, url, exc)
                    continue
                finally:
                    with contextlib.suppress(MbusDriverError, MbusError):
                        await client.reset(ADDRESS_NETWORK)  # deselect it again
                if telegram.address in primaries:
                    continue  # a listed meter read by its primary address
                header = telegram.header
                medium_code = getattr(header, "medium_code", None)
                found.append(
                    ArchivedDevice(
                        protocol="mbus",
                        ident=ident,
                        address=address,
                        manufacturer=str(getattr(header, "manufacturer", "")),
                        medium=None if medium_code is None else meter_medium(medium_code),
                        last_seen=now,
                        version=getattr(header, "version", None),
                        device_type=medium_code,
                    )
                )
        return found
