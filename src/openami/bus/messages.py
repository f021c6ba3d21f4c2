"""Message schemas carried on the bus, and the subjects they travel on.

Drivers and push listeners publish :class:`ReadingBatch` on ``readings.<tenant>``; the MDM ingest service
consumes them and writes the store. Meters are named by their serial number (``meter``) and channels by
a reading-type code (an OBIS code such as ``1-0:1.8.0`` or an M-Bus/VIF derived name), because drivers do
not know database ids; the ingest service resolves them.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

READINGS_SUBJECT = "readings"
EVENTS_SUBJECT = "events"

ReadingKind = Literal["interval", "register"]

#: Tenant slugs become bus subject tokens (``readings.<tenant>``) and MQTT topic levels, so no dots,
#: slashes or wildcards: lower-case letters, digits, ``_`` and ``-``.
TENANT_SLUG_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,63}$"


def readings_subject(tenant: str) -> str:
    return f"{READINGS_SUBJECT}.{tenant}"


def events_subject(tenant: str) -> str:
    return f"{EVENTS_SUBJECT}.{tenant}"


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Reading(_Frozen):
    """One value of one channel of one meter at one instant (interval end for interval data)."""

    meter: str = Field(min_length=1, max_length=64)
    channel: str = Field(min_length=1, max_length=64)
    ts: AwareDatetime
    value: float = Field(allow_inf_nan=False)
    unit: str = Field("", max_length=16)
    kind: ReadingKind = "interval"
    interval_s: int | None = Field(None, ge=1, le=86400 * 31)
    quality: int = Field(0, ge=0, description="Bit flags, see openami.mdm.quality.")


class MeterEvent(_Frozen):
    meter: str = Field(min_length=1, max_length=64)
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
    readings: list[Reading] = Field(default_factory=list)
    events: list[MeterEvent] = Field(default_factory=list)

    def to_bytes(self) -> bytes:
        return self.model_dump_json().encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> ReadingBatch:
        return cls.model_validate_json(data)
