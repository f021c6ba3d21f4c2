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
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import datetime

from openami.bus.messages import ReadingBatch, Series
from openami.hes.gateway_link_store import DiscoveredDevice
from openami.protocols.mbus.channels import channel_codes
from openami.protocols.wmbus import (
    Address,
    FormatCache,
    KeyRequiredError,
    WmbusError,
    WmbusTelegram,
    decode_telegram,
    parse_line,
    parse_link,
)
from openami.security.errors import SecurityError
from openami.security.keyvault import KeyVault, PushKeys

__all__ = ["SOURCE", "WmbusIngest", "WmbusResult"]

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


class WmbusIngest:
    """Decodes forwarded telegrams with keys from ``vault`` (None: only unencrypted telegrams)."""

    def __init__(self, vault: KeyVault | None) -> None:
        self._vault = vault
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
                serial, telegram = await self._decode_line(tenant, line)
            except _Unknown as exc:
                if exc.installation:  # a new meter asking to be installed: not an error
                    discovered[exc.address.id] = _discovered(exc.address)
                else:
                    rejected.append(f"line {number}: {exc}")
                continue
            except (WmbusError, _Refused) as exc:
                rejected.append(f"line {number}: {exc}")
                continue
            if telegram is None:
                continue  # blank or comment
            series += [
                Series(
                    meter=serial,
                    channel=code,
                    unit=record.unit or "",
                    kind="register",
                    points=[(received_at, float(record.value), 0)],  # type: ignore[arg-type]
                )
                for code, record in channel_codes(telegram.records)
            ]
        batch = None
        if series:
            batch = ReadingBatch(tenant=tenant, source=SOURCE, received_at=received_at, series=series)
        return WmbusResult(batch, rejected, list(discovered.values()))

    async def _decode_line(self, tenant: str, line: str) -> tuple[str, WmbusTelegram | None]:
        received = parse_line(line)
        if received is None:
            return "", None
        formats = self._formats.setdefault(tenant, FormatCache())
        try:
            telegram = decode_telegram(received.frame, formats=formats)
            keys = None
        except KeyRequiredError:
            keys = await self._keys(received.frame)
            if keys.tenant != tenant:
                raise _Refused("the meter's keys belong to another tenant") from None
            telegram = decode_telegram(received.frame, key=keys.encryption_key, formats=formats)
        address = telegram.address
        serial = keys.meter_serial if keys is not None and keys.meter_serial else None
        return serial or f"{address.manufacturer}-{address.id}", telegram

    async def _keys(self, frame: bytes) -> PushKeys:
        if self._vault is None:
            raise _Refused("encrypted telegram and no key vault")
        title = parse_link(frame).address.to_bytes()
        try:
            keys = await asyncio.to_thread(self._vault.push_keys, title)
        except SecurityError as exc:
            raise _Refused(f"keys of {title.hex().upper()}: {exc}") from None
        if keys is None or keys.encryption_key is None:
            link = parse_link(frame)
            raise _Unknown(
                f"no key stored for wM-Bus address {title.hex().upper()}", link.address, link.is_installation
            )
        return keys


class _Refused(Exception):
    """A telegram that decodes but may not be used here (no key, another tenant's meter)."""


class _Unknown(_Refused):
    """An encrypted telegram of a meter the vault has no key for; ``installation``: it was an SND-IR."""

    def __init__(self, reason: str, address: Address, installation: bool) -> None:
        super().__init__(reason)
        self.address, self.installation = address, installation


def _discovered(address: Address) -> DiscoveredDevice:
    return DiscoveredDevice(
        protocol="wmbus",
        ident=address.id,
        address=address.to_bytes().hex().upper(),
        manufacturer=address.manufacturer,
        medium=_MEDIA.get(address.device_type),
    )


#: Device types (EN 13757-7) to the media the meter table knows.
_MEDIA = {0x02: "electricity", 0x03: "gas", 0x04: "heat", 0x06: "water", 0x07: "water", 0x0C: "heat",
          0x0D: "heat", 0x15: "water", 0x16: "water", 0x08: "heat"}  # fmt: skip
