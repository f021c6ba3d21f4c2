"""LoRaWAN meters through ChirpStack v4: uplinks, joins and device status to readings and events; downlinks.

ChirpStack terminates the radio and the LoRaWAN MAC and publishes each device's events on its MQTT
integration (:mod:`openami.protocols.lorawan.chirpstack`). This listener subscribes to them and finds the
device by its EUI among the tenants' communication devices: a LoRaWAN module is a ``comm_device`` with
protocol ``lorawan`` and ``ident`` = its device EUI (16 lower-case hex digits), and the meter it serves
is the active meter linked to it. The payload codec is the device's ``model`` when that names a codec
(``elvaco-cmi41xx``, ``en13757-3``, ``oms``), else the codec the settings map the ChirpStack device
profile to (``lorawan_profiles``). OMS payloads are encrypted with the meter's OMS key, found in the key
vault under the meter's link address (ADR 0009) and refused across tenants, as for wM-Bus.

Per uplink one ReadingBatch (source ``lorawan``) carries the codec's values, stamped with the time the
meter gave or the uplink's, plus the radio link's quality (best RSSI and SNR over the receiving
gateways, channels ``lorawan_rssi`` and ``lorawan_snr``), and the codec's events. Device status events
give ``battery_level`` (%) and ``link_margin`` (dB); a join is a ``lorawan_join`` event. Frame-counter
gaps are counted (uplinks lost on the air or at the network server). Message ids name the device and
ChirpStack's deduplication id, so a redelivered event is stored once. Anything that cannot be used is a
dead letter with its reason and costs only itself.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final
from urllib.parse import urlsplit

from sqlalchemy import Engine, select

from openami.bus.base import Bus, BusError
from openami.bus.messages import MeterEvent, ReadingBatch, Series, readings_subject
from openami.hes.rejected import RejectedHandler, hand_over
from openami.protocols.lorawan import (
    CodecContext,
    DecodedUplink,
    JoinEvent,
    LorawanError,
    StatusEvent,
    UplinkEvent,
    codec,
    downlink_command,
    event_topic_filter,
    parse_event,
)
from openami.protocols.lorawan.codecs import known as known_codecs
from openami.protocols.lorawan.codecs.oms import oms_address
from openami.protocols.wmbus import FormatCache
from openami.security.errors import SecurityError
from openami.security.keyvault import KeyVault
from openami.store.schema import comm_device, meter, tenant
from openami.transports.mqtt_subscriber import MqttSubscriber

__all__ = ["LORAWAN_PROTOCOL", "SOURCE", "ChirpStackListener", "LorawanDevice", "LorawanStats"]

log = logging.getLogger(__name__)

LORAWAN_PROTOCOL: Final = "lorawan"
SOURCE: Final = "lorawan"
_EVENT_QOS: Final = 1


@dataclass(frozen=True, slots=True)
class LorawanDevice:
    """A registered LoRaWAN module and the meter behind it."""

    tenant: str
    dev_eui: str
    meter: str
    model: str
    address: str


@dataclass
class LorawanStats:
    received: int = 0
    uplinks: int = 0
    joins: int = 0
    statuses: int = 0
    rejected: int = 0
    readings: int = 0
    missed_frames: int = 0
    """Frame-counter gaps: uplinks that never reached us."""


class _Refused(Exception):
    """An event that is well formed but cannot be used here (unknown device, no codec, no key)."""


def _msg_id(event: UplinkEvent | JoinEvent | StatusEvent) -> str:
    """ChirpStack's deduplication id names one event across its gateways and our redeliveries."""
    kind = type(event).__name__.removesuffix("Event").lower()
    dedup = getattr(event, "deduplication_id", "") or event.time.isoformat()
    return f"lorawan:{event.device.dev_eui}:{kind}:{dedup}"


def _series(serial: str, channel: str, unit: str, ts: datetime, value: float) -> Series:
    return Series(meter=serial, channel=channel, unit=unit, kind="register", points=[(ts, value, 0)])


class ChirpStackListener:
    """Reads ChirpStack's integration events from the broker at ``mqtt_url`` and publishes readings."""

    def __init__(
        self,
        mqtt_url: str,
        bus: Bus,
        engine: Engine,
        vault: KeyVault | None,
        *,
        topic_prefix: str = "",
        profiles: Mapping[str, str] | None = None,
        on_rejected: RejectedHandler | None = None,
        client_id: str | None = None,
        reconnect_min_s: float = 0.5,
        reconnect_max_s: float = 30.0,
        connect_timeout_s: float = 10.0,
    ) -> None:
        self._subscriber = MqttSubscriber(
            mqtt_url,
            [(event_topic_filter(topic_prefix), _EVENT_QOS)],
            self._handle,
            name="chirpstack-listener",
            client_id=client_id,
            reconnect_min_s=reconnect_min_s,
            reconnect_max_s=reconnect_max_s,
            connect_timeout_s=connect_timeout_s,
        )
        self._prefix = topic_prefix
        self._bus, self._engine, self._vault = bus, engine, vault
        self._profiles = dict(profiles or {})
        self._on_rejected = on_rejected
        self._applications: dict[str, str] = {}
        self._frame_counters: dict[str, int] = {}
        self._formats: dict[str, FormatCache] = {}
        self.stats = LorawanStats()

    @property
    def connected(self) -> bool:
        return self._subscriber.connected

    async def start(self) -> None:
        await self._subscriber.start()

    async def stop(self) -> None:
        await self._subscriber.stop()

    # ------------------------------------------------------------------------------------- uplinks

    async def _handle(self, topic: str, payload: bytes) -> None:
        self.stats.received += 1
        received_at = datetime.now(UTC)
        device: LorawanDevice | None = None
        try:
            event = parse_event(topic, payload, now=received_at)
            if event is None:
                return  # acks, logs, locations: not ours to store
            self._applications[event.device.dev_eui] = event.device.application_id
            device = await asyncio.to_thread(self._device, event.device.dev_eui)
            batch = await self._batch(device, event)
            await self._bus.publish(readings_subject(device.tenant), batch.to_bytes(), msg_id=_msg_id(event))
        except (LorawanError, _Refused) as exc:
            reason = str(exc)
        except BusError as exc:
            reason = f"bus publish failed: {exc}"
        except ValueError as exc:  # a decoded value the bus schema refuses (pydantic's ValidationError)
            reason = f"unusable values: {str(exc).splitlines()[0]}"
        else:
            self.stats.readings += batch.reading_count
            return
        self.stats.rejected += 1
        log.warning("rejected LoRaWAN event on %r: %s", topic, reason)
        await hand_over(
            self._on_rejected, topic, device.tenant if device else None, reason, payload, received_at
        )

    async def _batch(
        self, device: LorawanDevice, event: UplinkEvent | JoinEvent | StatusEvent
    ) -> ReadingBatch:
        now = datetime.now(UTC)
        series: list[Series] = []
        events: list[MeterEvent] = []
        if isinstance(event, JoinEvent):
            self.stats.joins += 1
            self._frame_counters.pop(device.dev_eui, None)  # a join restarts the frame counter
            events.append(MeterEvent(meter=device.meter, ts=event.time, code="lorawan_join"))
        elif isinstance(event, StatusEvent):
            self.stats.statuses += 1
            if event.battery_level is not None:
                series.append(_series(device.meter, "battery_level", "%", event.time, event.battery_level))
            if event.margin is not None:
                series.append(_series(device.meter, "link_margin", "dB", event.time, float(event.margin)))
        else:
            self.stats.uplinks += 1
            self._count_gap(device.dev_eui, event.f_cnt)
            decoded = await self._decode(device, event)
            series += [
                _series(device.meter, v.channel, v.unit, v.ts or event.time, v.value) for v in decoded.values
            ]
            if event.rssi is not None:
                series.append(_series(device.meter, "lorawan_rssi", "dBm", event.time, event.rssi))
            if event.snr is not None:
                series.append(_series(device.meter, "lorawan_snr", "dB", event.time, event.snr))
            events += [
                MeterEvent(
                    meter=device.meter,
                    ts=event.time,
                    code=e.code,
                    severity=e.severity,
                    detail=e.detail,
                )
                for e in decoded.events
            ]
        return ReadingBatch(
            tenant=device.tenant, source=SOURCE, received_at=now, series=series, events=events
        )

    def _count_gap(self, dev_eui: str, f_cnt: int) -> None:
        last = self._frame_counters.get(dev_eui)
        if last is not None and f_cnt > last + 1:
            self.stats.missed_frames += f_cnt - last - 1
        self._frame_counters[dev_eui] = f_cnt

    def _codec_name(self, device: LorawanDevice, profile: str) -> str:
        if device.model in known_codecs():
            return device.model
        name = self._profiles.get(profile)
        if name is None:
            raise _Refused(
                f"no codec for {device.dev_eui}: its model {device.model!r} names none and device profile"
                f" {profile!r} is not in lorawan_profiles"
            )
        return name

    async def _decode(self, device: LorawanDevice, event: UplinkEvent) -> DecodedUplink:
        name = self._codec_name(device, event.device.device_profile)
        decoder = codec(name)
        key = None
        if name == "oms":
            key = await self._oms_key(device, event)
        context = CodecContext(
            tags=event.device.tags,
            key=key,
            extra={"formats": self._formats.setdefault(device.tenant, FormatCache())},
        )
        return decoder(event.f_port, event.data, context)

    async def _oms_key(self, device: LorawanDevice, event: UplinkEvent) -> bytes | None:
        address = oms_address(event.data, event.device.tags)
        if self._vault is None:
            return None
        try:
            keys = await asyncio.to_thread(self._vault.push_keys, address.to_bytes())
        except SecurityError as exc:
            raise _Refused(f"keys of {address.to_bytes().hex().upper()}: {exc}") from None
        if keys is None:
            return None  # an unencrypted OMS meter; an encrypted one fails in the codec with the reason
        if keys.tenant != device.tenant:
            raise _Refused("the meter's OMS keys belong to another tenant")
        return keys.encryption_key

    def _device(self, dev_eui: str) -> LorawanDevice:
        """The registration of ``dev_eui``. Blocking."""
        query = (
            select(tenant.c.slug, meter.c.serial, comm_device.c.model, comm_device.c.address)
            .join(tenant, tenant.c.id == comm_device.c.tenant_id)
            .join(meter, meter.c.comm_device_id == comm_device.c.id)
            .where(
                comm_device.c.protocol == LORAWAN_PROTOCOL,
                comm_device.c.ident == dev_eui,
                meter.c.status == "active",
            )
        )
        with self._engine.connect() as conn:
            rows = conn.execute(query).all()
        if not rows:
            raise _Refused(f"device {dev_eui} is not registered (comm_device protocol lorawan, ident = EUI)")
        if len({row.slug for row in rows}) > 1 or len(rows) > 1:
            raise _Refused(f"device {dev_eui} is registered more than once; fix the registration")
        row = rows[0]
        return LorawanDevice(row.slug, dev_eui, row.serial, row.model or "", row.address or "")

    # ----------------------------------------------------------------------------------- downlinks

    async def send_downlink(
        self, tenant_slug: str, dev_eui: str, f_port: int, data: bytes, *, confirmed: bool = False
    ) -> str:
        """Enqueue ``data`` for the device through ChirpStack; returns the topic it went to.

        The application id is the one the device's last event came with, else its registration's
        address ``chirpstack://<application id>``.
        """
        device = await asyncio.to_thread(self._device, dev_eui.lower())
        if device.tenant != tenant_slug:
            raise PermissionError(f"device {dev_eui} is not {tenant_slug}'s")
        application = self._applications.get(device.dev_eui) or _application_of(device.address)
        if not application:
            raise LookupError(f"no application known for {dev_eui}: no uplink yet, no chirpstack:// address")
        topic, payload = downlink_command(
            application, device.dev_eui, f_port, data, confirmed=confirmed, prefix=self._prefix
        )
        await self._subscriber.publish(topic, payload)
        return topic


def _application_of(address: str) -> str:
    parts = urlsplit(address)
    return parts.netloc if parts.scheme == "chirpstack" else ""
