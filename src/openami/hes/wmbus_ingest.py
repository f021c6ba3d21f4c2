"""Wireless M-Bus telegrams forwarded by gateways, as receivers print them, turned into readings.

A gateway with a wM-Bus receiver (USB stick, concentrator radio) forwards what it hears as text, one
telegram per line (:func:`openami.protocols.wmbus.parse_line` formats). Telegrams are decoded here, in
the head-end, not on the gateway, because the meters' AES keys live in the key vault and never leave it.
The vault finds a meter's key by the 8 bytes of its link address (manufacturer, id, version, device
type), stored in the same ``system_title`` column that holds DLMS system titles: both are the 8-byte
identity a device's frames carry. The vault row also names the meter's serial and tenant; a telegram
whose keys belong to another tenant than the gateway's is refused, so one tenant's gateway cannot
inject readings for another's meters.

Readings go on the meter's channels named as for wired M-Bus (:func:`~openami.protocols.mbus.channels
.channel_codes`), stamped with the time the gateway's message was received. A line that cannot be used
is reported with its reason and costs only itself.

Compact frames (the data without their record headers) decode once the head-end has seen a full frame of
the same meter model: formats are remembered per tenant (:class:`~openami.protocols.wmbus.FormatCache`),
so a gateway's compact frames never depend on what another tenant's meters sent.

Who a sender is and which key opens its telegrams comes from a :class:`KeySource`: the head-end's is the
key vault (:class:`VaultKeys`); an OpenAMI gateway with its own receivers uses its configured meter list
(:mod:`openami.edge.wmbus`), so both decode, decrypt and name channels the same way
(:meth:`WmbusIngest.decode`). A source that is ``listed_only`` knows every meter it may read, so any
other sender is a discovered device rather than a line to refuse.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Final, Protocol

from openami.bus.messages import ReadingBatch, Series
from openami.hes.gateway_link_store import DiscoveredDevice
from openami.protocols.mbus.channels import channel_codes
from openami.protocols.wmbus import (
    Address,
    FormatCache,
    IngestedTelegram,
    KeyRequiredError,
    WmbusError,
    WmbusTelegram,
    decode_link_frame,
    parse_line,
    parse_link,
)
from openami.security.errors import SecurityError
from openami.security.keyvault import KeyVault

__all__ = [
    "SOURCE",
    "Heard",
    "KeyRefused",
    "KeySource",
    "MeterKey",
    "VaultKeys",
    "WmbusIngest",
    "WmbusResult",
    "discovered_device",
    "meter_medium",
    "telegram_series",
]

SOURCE = "wmbus"
MAX_LINES = 5000
"""Telegrams one message may carry: a gateway forwarding a 30-day buffer sends several messages."""


@dataclass
class WmbusResult:
    """What one forwarded message gave: its readings, per line it could not use the reason, and the
    meters that asked to be installed (SND-IR) without a key here: candidates for an operator."""

    batch: ReadingBatch | None
    rejected: list[str] = field(default_factory=list)
    discovered: list[DiscoveredDevice] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class MeterKey:
    """A known wM-Bus meter: its serial here, and its AES-128 key (None: it sends in the clear)."""

    serial: str | None
    """None: the meter is named ``<manufacturer>-<id>`` (the vault knows the key, not the serial)."""
    encryption_key: bytes | None


class KeyRefused(Exception):
    """A telegram that decodes but may not be used here (no key, another tenant's meter)."""


class KeySource(Protocol):
    """Who sent a telegram, by its link-layer address (the 8 bytes a key is filed under).

    ``lookup`` returns None for a sender it does not know and raises :class:`KeyRefused` for one whose
    telegrams must not be used here. ``listed_only``: only the senders it knows are read (the gateway's
    meter list); otherwise it is asked only when a telegram is encrypted (the key vault), and clear
    telegrams of unknown meters are read under ``<manufacturer>-<id>``.
    """

    @property
    def listed_only(self) -> bool: ...

    async def lookup(self, tenant: str, address: Address) -> MeterKey | None: ...


class VaultKeys:
    """The head-end's key source: the key vault, which also names the meter's serial and tenant."""

    listed_only: Final = False

    def __init__(self, vault: KeyVault | None) -> None:
        self._vault = vault

    async def lookup(self, tenant: str, address: Address) -> MeterKey | None:
        if self._vault is None:
            raise KeyRefused("encrypted telegram and no key vault")
        title = address.to_bytes()
        try:
            keys = await asyncio.to_thread(self._vault.push_keys, title)
        except SecurityError as exc:
            raise KeyRefused(f"keys of {title.hex().upper()}: {exc}") from None
        if keys is None or keys.encryption_key is None:
            return None
        if keys.tenant != tenant:
            raise KeyRefused("the meter's keys belong to another tenant")
        return MeterKey(keys.meter_serial or None, keys.encryption_key)


@dataclass(frozen=True, slots=True)
class Heard:
    """One telegram: who sent it (link-layer address), and either the readings of a meter known here
    (``serial`` set) or nothing (``serial`` None: a sender the key source does not know)."""

    address: Address
    installation: bool
    serial: str | None = None
    series: list[Series] = field(default_factory=list)


def telegram_series(serial: str, telegram: WmbusTelegram, received_at: datetime) -> list[Series]:
    """A decoded telegram's current values as register readings of ``serial``, stamped ``received_at``."""
    return [
        Series(
            meter=serial,
            channel=code,
            unit=record.unit or "",
            kind="register",
            points=[(received_at, float(record.value), 0)],  # type: ignore[arg-type]
        )
        for code, record in channel_codes(telegram.records)
    ]


class WmbusIngest:
    """Decodes telegrams with keys from ``keys``: a :class:`KeySource`, or a key vault (None: only
    unencrypted telegrams)."""

    def __init__(self, keys: KeyVault | KeySource | None) -> None:
        self._keys: KeySource = VaultKeys(keys) if keys is None or isinstance(keys, KeyVault) else keys
        self._formats: dict[str, FormatCache] = {}

    async def handle(self, tenant: str, text: str, received_at: datetime) -> WmbusResult:
        series: list[Series] = []
        rejected: list[str] = []
        discovered: dict[str, DiscoveredDevice] = {}
        lines = text.splitlines()
        if len(lines) > MAX_LINES:
            return WmbusResult(None, [f"{len(lines)} lines in one message, more than {MAX_LINES}"])
        for number, line in enumerate(lines, start=1):
            try:
                received = parse_line(line)
                if received is None:
                    continue  # blank or comment
                heard = await self.decode(tenant, received, received_at)
            except _Unknown as exc:
                if exc.installation:  # a new meter asking to be installed: not an error
                    discovered[exc.address.id] = discovered_device(exc.address)
                else:
                    rejected.append(f"line {number}: {exc}")
                continue
            except (WmbusError, KeyRefused) as exc:
                rejected.append(f"line {number}: {exc}")
                continue
            if heard.serial is None:
                discovered[heard.address.id] = discovered_device(heard.address)
            series += heard.series
        batch = None
        if series:
            batch = ReadingBatch(tenant=tenant, source=SOURCE, received_at=received_at, series=series)
        return WmbusResult(batch, rejected, list(discovered.values()))

    async def decode(self, tenant: str, received: IngestedTelegram, received_at: datetime) -> Heard:
        """One telegram of ``tenant``'s receivers. Raises :class:`WmbusError` for bytes that do not
        decode and :class:`KeyRefused` for a telegram that may not be used (an encrypted one of a
        sender without a key here names that sender: ``address`` and ``installation`` of the error)."""
        link = parse_link(received.frame)
        formats = self._formats.setdefault(tenant, FormatCache())
        installation = link.is_installation
        if self._keys.listed_only:
            known = await self._keys.lookup(tenant, link.address)
            if known is None:
                return Heard(link.address, installation)
            telegram = decode_link_frame(link, key=known.encryption_key, formats=formats)
        else:
            try:
                telegram = decode_link_frame(link, formats=formats)
                known = None
            except KeyRequiredError:
                known = await self._keys.lookup(tenant, link.address)
                if known is None or known.encryption_key is None:
                    title = link.address.to_bytes().hex().upper()
                    raise _Unknown(
                        f"no key stored for wM-Bus address {title}", link.address, installation
                    ) from None
                telegram = decode_link_frame(link, key=known.encryption_key, formats=formats)
        address = telegram.address
        serial = known.serial if known is not None and known.serial else None
        serial = serial or f"{address.manufacturer}-{address.id}"
        return Heard(link.address, installation, serial, telegram_series(serial, telegram, received_at))


class _Unknown(KeyRefused):
    """An encrypted telegram of a meter the vault has no key for; ``installation``: it was an SND-IR."""

    def __init__(self, reason: str, address: Address, installation: bool) -> None:
        super().__init__(reason)
        self.address, self.installation = address, installation


def meter_medium(code: int) -> str | None:
    """The meter table's medium (``electricity``, ``gas``, ``heat``, ``water``) of an EN 13757 device
    type / medium byte (wired M-Bus uses the same codes), None for the others."""
    return _MEDIA.get(code)


def discovered_device(address: Address, *, address_text: str | None = None) -> DiscoveredDevice:
    """A wM-Bus sender as a pending device; ``address_text`` defaults to the 8-byte link address in hex
    (what the key vault files its key under)."""
    return DiscoveredDevice(
        protocol="wmbus",
        ident=address.id,
        address=address.to_bytes().hex().upper() if address_text is None else address_text,
        manufacturer=address.manufacturer,
        medium=meter_medium(address.device_type),
    )


#: Device types (EN 13757-7) to the media the meter table knows.
_MEDIA: Mapping[int, str] = {0x02: "electricity", 0x03: "gas", 0x04: "heat", 0x06: "water", 0x07: "water",
          0x0C: "heat", 0x0D: "heat", 0x15: "water", 0x16: "water", 0x08: "heat"}  # fmt: skip
