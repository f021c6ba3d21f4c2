"""Message schemas carried on the bus, and the subjects they travel on.

Drivers and push listeners publish :class:`ReadingBatch` on ``readings.<tenant>``; the MDM ingest service
consumes them and writes the store. Meters are named by their serial number (``meter``) and channels by
a reading-type code (an OBIS code such as ``1-0:1.8.0`` or an M-Bus/VIF derived name), because drivers do
not know database ids; the ingest service resolves them.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

READINGS_SUBJECT = "readings"
EVENTS_SUBJECT = "events"

ReadingKind = Literal["interval", "register"]

#: Tenant slugs become bus subject tokens (``readings.<tenant>``) and MQTT topic levels, so no dots,
#: slashes or wildcards: lower-case letters, digits, ``_`` and ``-``.
TENANT_SLUG_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,63}$"
#: Gateway and concentrator ids: one MQTT topic level, no wildcards or spaces, safe in file names.
DEVICE_ID_PATTERN = r"^[A-Za-z0-9_.-]{1,64}$"


def readings_subject(tenant: str) -> str:
    return f"{READINGS_SUBJECT}.{tenant}"


def events_subject(tenant: str) -> str:
    return f"{EVENTS_SUBJECT}.{tenant}"


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


Meter = Annotated[str, Field(min_length=1, max_length=64)]
#: (timestamp, value, quality): the instant (interval end for interval data), a finite value, and quality
#: bit flags (0 = as measured; the VEE rules define the others).
Point = tuple[AwareDatetime, Annotated[float, Field(allow_inf_nan=False)], Annotated[int, Field(ge=0)]]


class Series(_Frozen):
    """The readings of one channel of one meter in a batch.

    Points travel as tuples under one header (meter, channel, unit, kind) rather than one object per
    reading: the header is resolved to a channel once per series, and decoding a tuple costs a fraction of
    decoding a model, which is most of the ingest service's CPU.
    """

    meter: Meter
    channel: str = Field(min_length=1, max_length=64)
    unit: str = Field("", max_length=16)
    kind: ReadingKind = "interval"
    interval_s: int | None = Field(None, ge=1, le=86400 * 31)
    points: list[Point] = Field(min_length=1)


@dataclass(frozen=True, slots=True)
class Reading:
    """One reading seen on its own: the flat view of a series point (for consumers and tests)."""

    meter: str
    channel: str
    ts: datetime
    value: float
    unit: str = ""
    kind: ReadingKind = "interval"
    interval_s: int | None = None
    quality: int = 0


class MeterEvent(_Frozen):
    meter: Meter
    ts: AwareDatetime
    code: str = Field(min_length=1, max_length=64)
    severity: Literal["info", "warning", "alarm"] = "info"
    detail: dict[str, str | int | float | bool | None] = Field(default_factory=dict)


class ReadingBatch(_Frozen):
    """What a driver hands over: readings and events from one gateway message or one read job."""

    tenant: str = Field(pattern=TENANT_SLUG_PATTERN)
    source: str = Field(min_length=1, max_length=32, description="Driver name, e.g. 'mqtt-json'.")
    gateway: str | None = Field(None, max_length=64)
    received_at: datetime
    series: list[Series] = Field(default_factory=list)
    events: list[MeterEvent] = Field(default_factory=list)

    @property
    def readings(self) -> list[Reading]:
        """Every point of every series as a flat reading, in series order."""
        return [
            Reading(s.meter, s.channel, ts, value, s.unit, s.kind, s.interval_s, quality)
            for s in self.series
            for ts, value, quality in s.points
        ]

    @property
    def reading_count(self) -> int:
        return sum(len(s.points) for s in self.series)

    @classmethod
    def from_readings(
        cls,
        readings: Iterable[Reading],
        *,
        tenant: str,
        source: str,
        received_at: datetime,
        gateway: str | None = None,
        events: Sequence[MeterEvent] = (),
    ) -> ReadingBatch:
        """Group flat readings into series (by meter, channel, unit, kind, interval), keeping their order."""
        grouped: dict[tuple[str, str, str, ReadingKind, int | None], list[Point]] = {}
        for r in readings:
            grouped.setdefault((r.meter, r.channel, r.unit, r.kind, r.interval_s), []).append(
                (r.ts, r.value, r.quality)
            )
        series = [
            Series(meter=m, channel=c, unit=u, kind=k, interval_s=i, points=points)
            for (m, c, u, k, i), points in grouped.items()
        ]
        return cls(
            tenant=tenant,
            source=source,
            gateway=gateway,
            received_at=received_at,
            series=series,
            events=list(events),
        )

    def to_bytes(self) -> bytes:
        return self.model_dump_json().encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> ReadingBatch:
        return cls.model_validate_json(data)
