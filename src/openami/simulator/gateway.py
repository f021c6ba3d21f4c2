"""Simulated meters behind a virtual data-concentrator gateway speaking the JSON-over-MQTT format v1.

The simulator is how a fresh install has data to show and how the whole ingest path (broker, listener,
bus, store) is exercised end to end: :class:`VirtualGateway` back-fills a span of history
(:meth:`~VirtualGateway.publish_span`) and then publishes each quarter hour as it completes
(:meth:`~VirtualGateway.run_live`), optionally faster than real time for demos. It uses the driver's own
wire models and encoder, so what it sends is by construction what the listener accepts.

What each medium reports is data (:data:`CHANNELS`, :data:`EVENTS`), not code, and is documented in
``docs/drivers/mqtt-json.md``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal

import aiomqtt

from openami.bus.messages import ReadingKind
from openami.drivers.mqtt_json import (
    UPLINK_QOS,
    CompactSeries,
    EventV1,
    MeterV1,
    TimedSeries,
    UplinkV1,
    encode_uplink,
    uplink_topic,
)
from openami.simulator.consumption import (
    EVENT_STREAM,
    INTERVAL_S,
    MILLI,
    ConsumptionModel,
    Medium,
    day_random,
)

_STEP = timedelta(seconds=INTERVAL_S)
_DAY = timedelta(days=1)
Severity = Literal["info", "warning", "alarm"]


def _midnight(ts: datetime) -> datetime:
    return ts.replace(hour=0, minute=0, second=0, microsecond=0)


def _boundary_after(ts: datetime) -> datetime:
    """The first quarter-hour boundary strictly after ``ts``."""
    return ts + (_STEP - (ts - _midnight(ts)) % _STEP)


def _day_parts(start: datetime, end: datetime) -> Iterator[tuple[datetime, datetime]]:
    """[start, end) cut at UTC midnights."""
    part = start
    while part < end:
        midnight = _midnight(part) + _DAY
        yield part, min(end, midnight)
        part = midnight


@dataclass(frozen=True)
class ChannelSpec:
    """One channel a simulated meter reports: a register or the per-interval consumption."""

    code: str
    """OBIS code; value group A is the medium (1 electricity, 6 heat, 7 gas, 8 cold water)."""
    kind: ReadingKind
    unit: str
    divisor: int
    """Model counts (thousandths of the medium's unit) per unit of this channel."""


CHANNELS: dict[Medium, tuple[ChannelSpec, ...]] = {
    "electricity": (
        ChannelSpec("1-0:1.8.0", "register", "kWh", MILLI),
        ChannelSpec("1-0:1.29.0", "interval", "kWh", MILLI),
    ),
    "gas": (
        ChannelSpec("7-0:3.0.0", "register", "m3", MILLI),
        ChannelSpec("7-0:3.29.0", "interval", "m3", MILLI),
    ),
    "water": (
        ChannelSpec("8-0:1.0.0", "register", "m3", MILLI),
        ChannelSpec("8-0:1.29.0", "interval", "m3", MILLI),
    ),
    "heat": (
        ChannelSpec("6-0:1.0.0", "register", "MWh", MILLI * 1000),
        ChannelSpec("6-0:1.29.0", "interval", "kWh", MILLI),
    ),
}


@dataclass(frozen=True)
class EventSpec:
    """A meter event that happens at random, ``per_day`` being its daily probability per meter."""

    code: str
    severity: Severity
    per_day: float
    media: tuple[Medium, ...]
    cleared_by: str | None = None
    """Code of the info event that ends the condition (seconds to an hour later, same day)."""


_BATTERY_MEDIA: tuple[Medium, ...] = ("gas", "water", "heat")
EVENTS: tuple[EventSpec, ...] = (
    EventSpec("power_down", "warning", 0.01, ("electricity",), cleared_by="power_up"),
    EventSpec("cover_open", "alarm", 0.002, ("electricity", *_BATTERY_MEDIA), cleared_by="cover_closed"),
    EventSpec("battery_low", "warning", 0.001, _BATTERY_MEDIA),
)


@dataclass(frozen=True)
class SimMeter:
    """A simulated meter: its consumption model plus the channels and events of its medium."""

    serial: str
    medium: Medium
    seed: int
    leak_l_per_h: float = 0.0

    @property
    def model(self) -> ConsumptionModel:
        return ConsumptionModel(self.medium, self.seed, self.leak_l_per_h)

    def series(self, start: datetime, end: datetime) -> list[CompactSeries]:
        """Every channel over [start, end) (quarter-hour boundaries), as compact series."""
        register, counts = self.model.counts(start, end)
        cumulative = [register]
        for count in counts:
            cumulative.append(cumulative[-1] + count)
        per_kind = {"register": cumulative[1:], "interval": counts}
        return [
            CompactSeries(
                channel=channel.code,
                unit=channel.unit,
                kind=channel.kind,
                start=start,
                interval_s=INTERVAL_S,
                values=[value / channel.divisor for value in per_kind[channel.kind]],
            )
            for channel in CHANNELS[self.medium]
        ]

    def events(self, start: datetime, end: datetime) -> list[EventV1]:
        """The events that fall in [start, end); each day's draws are fixed, however the span is cut."""
        day = _midnight(start.astimezone(UTC))
        found: list[EventV1] = []
        while day < end:
            found.extend(event for event in self._day_events(day) if start <= event.ts < end)
            day += _DAY
        return found

    def _day_events(self, day: datetime) -> Iterator[EventV1]:
        rng = day_random(self.seed, day.date(), EVENT_STREAM)
        for spec in EVENTS:
            # Draw for every spec (even other media) so adding a spec does not reshuffle the rest.
            happens, second, duration = rng.random(), rng.randrange(86400), rng.randint(30, 3600)
            if self.medium not in spec.media or happens >= spec.per_day:
                continue
            ts = day + timedelta(seconds=second)
            yield EventV1(ts=ts, code=spec.code, severity=spec.severity)
            if spec.cleared_by is not None:
                cleared = min(ts + timedelta(seconds=duration), day + _DAY - timedelta(seconds=1))
                yield EventV1(ts=cleared, code=spec.cleared_by, severity="info")

    def uplink_meter(self, start: datetime, end: datetime) -> MeterV1:
        series: list[TimedSeries | CompactSeries] = [*self.series(start, end)]
        return MeterV1(id=self.serial, series=series, events=self.events(start, end))


class VirtualGateway:
    """A data concentrator that reads its meters and pushes their data as format v1 uplinks.

    Each uplink carries at most ``meters_per_message`` meters and one UTC day. ``seq`` counts up from
    ``seq_start``; the default (milliseconds since 1970) keeps a restarted simulator from reusing
    sequence numbers the HES may still be de-duplicating against.
    """

    def __init__(
        self,
        gateway_id: str,
        tenant: str,
        meters: Sequence[SimMeter],
        *,
        meters_per_message: int = 50,
        seq_start: int | None = None,
    ) -> None:
        if meters_per_message < 1:
            raise ValueError("meters_per_message must be at least 1")
        self.gateway_id = gateway_id
        self.tenant = tenant
        self.meters = tuple(meters)
        self.meters_per_message = meters_per_message
        self._next_seq = time.time_ns() // 1_000_000 if seq_start is None else seq_start

    def topic(self, prefix: str) -> str:
        return uplink_topic(prefix, self.tenant, self.gateway_id)

    def uplinks(self, start: datetime, end: datetime) -> Iterator[UplinkV1]:
        """The uplinks covering [start, end), quarter-hour boundaries; each takes the next ``seq``."""
        for part_start, part_end in _day_parts(start.astimezone(UTC), end.astimezone(UTC)):
            for first in range(0, len(self.meters), self.meters_per_message):
                chunk = self.meters[first : first + self.meters_per_message]
                seq, self._next_seq = self._next_seq, self._next_seq + 1
                yield UplinkV1(
                    v=1,
                    gateway=self.gateway_id,
                    seq=seq,
                    sent_at=datetime.now(UTC),
                    meters=[meter.uplink_meter(part_start, part_end) for meter in chunk],
                )

    async def publish_span(
        self, client: aiomqtt.Client, prefix: str, start: datetime, end: datetime, *, gzip: bool = False
    ) -> int:
        """Publish [start, end) with QoS 1 through a connected client; returns the messages sent."""
        topic = self.topic(prefix)
        sent = 0
        for uplink in self.uplinks(start, end):
            await client.publish(topic, encode_uplink(uplink, compress=gzip), qos=UPLINK_QOS)
            sent += 1
        return sent

    async def run_live(
        self,
        client: aiomqtt.Client,
        prefix: str,
        *,
        time_factor: float = 1.0,
        start: datetime | None = None,
        intervals: int | None = None,
        gzip: bool = False,
    ) -> int:
        """Publish each quarter hour as it completes on a simulated clock; returns the messages sent.

        The clock starts at ``start`` (default now) and runs ``time_factor`` times faster than real time
        (900 makes a quarter hour last a second); the first quarter hour sent is the first to end after
        ``start``. Runs ``intervals`` quarter hours, or until cancelled when None. Deadlines are absolute,
        so a slow publish does not make the clock drift.
        """
        if time_factor <= 0:
            raise ValueError("time_factor must be positive")
        loop = asyncio.get_running_loop()
        anchor_sim, anchor_real = (start or datetime.now(UTC)).astimezone(UTC), loop.time()
        interval_end = _boundary_after(anchor_sim)
        sent = done = 0
        while intervals is None or done < intervals:
            deadline = anchor_real + (interval_end - anchor_sim).total_seconds() / time_factor
            await asyncio.sleep(max(0.0, deadline - loop.time()))
            sent += await self.publish_span(client, prefix, interval_end - _STEP, interval_end, gzip=gzip)
            interval_end += _STEP
            done += 1
        return sent
