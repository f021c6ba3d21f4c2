"""JSON gateway uplink format v1: the wire schema, and its translation to and from a ReadingBatch.

Pure functions, no IO, so the same code serves the HES listener, the simulator and the tests. The wire
schema is declared once as pydantic models (:class:`UplinkV1` and its parts); parsing, limits and error
reasons all come from those declarations, and encoding is the same models serialised back. The format is
documented for gateway vendors in ``docs/drivers/mqtt-json.md``; keep the two in step.

Everything a gateway sends is untrusted: every failure is a :class:`GatewayPayloadError` with a short
reason, sizes are bounded before any work proportional to them is done, and gzip is inflated with a hard
output limit so a small "zip bomb" cannot exhaust memory.
"""

from __future__ import annotations

import gzip
import zlib
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    StringConstraints,
    Tag,
    ValidationError,
    model_validator,
)

from openami.bus.messages import DEVICE_ID_PATTERN, MeterEvent, ReadingBatch, ReadingKind
from openami.bus.messages import Series as BusSeries
from openami.drivers.errors import DriverError
from openami.drivers.mqtt_json.spec import DRIVER_SPEC

MAX_PAYLOAD_BYTES = 16 * 1024 * 1024
"""Largest uplink, after gzip inflation; larger messages are rejected without being parsed."""
MAX_READINGS = 200_000
"""Most values (including ``null`` gaps) one uplink may carry across all its series."""
MAX_EVENTS = 10_000
"""Most events one uplink may carry."""
MAX_INTERVAL_S = 31 * 86400
MAX_QUALITY = 2**31 - 1
MAX_DETAIL_ITEMS = 32
MAX_DETAIL_TEXT = 256
GZIP_MAGIC = b"\x1f\x8b"
_MAX_REASON_CHARS = 300

ID_PATTERN = DEVICE_ID_PATTERN

GatewayId = Annotated[str, StringConstraints(pattern=ID_PATTERN)]
MeterId = Annotated[str, StringConstraints(min_length=1, max_length=64)]
Code = Annotated[str, StringConstraints(min_length=1, max_length=64)]
Unit = Annotated[str, StringConstraints(max_length=16)]
IntervalS = Annotated[int, Field(ge=1, le=MAX_INTERVAL_S)]
Quality = Annotated[int, Field(ge=0, le=MAX_QUALITY)]
DetailValue = Annotated[str, StringConstraints(max_length=MAX_DETAIL_TEXT)] | int | float | bool | None


class GatewayPayloadError(DriverError):
    """An uplink (or its topic) that is not valid format v1; ``reason`` says what is wrong."""


class _Wire(BaseModel):
    # strict: a gateway sending "12.5" or true where a number belongs has a bug we want to see.
    # forbid: a misspelt optional field ("interval" for "interval_s") must not be silently ignored.
    model_config = ConfigDict(frozen=True, extra="forbid", strict=True, allow_inf_nan=False)


class _Series(_Wire):
    channel: Code
    unit: Unit = ""
    kind: ReadingKind


def _timed_shape(value: Any) -> str | None:
    """Pick the timed-value shape by length, so an error names the element that is wrong."""
    return _TIMED_SHAPES.get(len(value)) if isinstance(value, (list, tuple)) else None


_TIMED_SHAPES = {2: "[ts,value]", 3: "[ts,value,quality]"}
TimedValue = Annotated[
    Annotated[tuple[AwareDatetime, float], Tag(_TIMED_SHAPES[2])]
    | Annotated[tuple[AwareDatetime, float, Quality], Tag(_TIMED_SHAPES[3])],
    Discriminator(
        _timed_shape,
        custom_error_type="timed_value",
        custom_error_message="Expected [ts, value] or [ts, value, quality]",
    ),
]


class TimedSeries(_Series):
    """Values with their own timestamps: ``[ts, value]`` or ``[ts, value, quality]``."""

    interval_s: IntervalS | None = None
    values: list[TimedValue] = Field(max_length=MAX_READINGS)

    @model_validator(mode="after")
    def _interval_needs_length(self) -> TimedSeries:
        if self.kind == "interval" and self.interval_s is None:
            raise ValueError("an interval series needs interval_s")
        return self


class CompactSeries(_Series):
    """Equally spaced values: value ``i`` is stamped ``start + (i + 1) * interval_s``; ``null`` is a gap."""

    start: AwareDatetime
    interval_s: IntervalS
    values: list[float | None] = Field(max_length=MAX_READINGS)


def _series_shape(value: Any) -> str | None:
    """Which series model applies: the compact one is the one with a ``start``."""
    if isinstance(value, dict):
        return "compact" if "start" in value else "timed"
    if isinstance(value, _Series):
        return "compact" if isinstance(value, CompactSeries) else "timed"
    return None


Series = Annotated[
    Annotated[TimedSeries, Tag("timed")] | Annotated[CompactSeries, Tag("compact")],
    Discriminator(_series_shape),
]


class EventV1(_Wire):
    ts: AwareDatetime
    code: Code
    severity: Literal["info", "warning", "alarm"] = "info"
    detail: dict[Code, DetailValue] = Field(default_factory=dict, max_length=MAX_DETAIL_ITEMS)


class MeterV1(_Wire):
    id: MeterId
    series: list[Series] = Field(default_factory=list)
    events: list[EventV1] = Field(default_factory=list)


class UplinkV1(_Wire):
    """One gateway message. ``seq`` (unique per gateway) lets the HES drop retransmissions."""

    v: Literal[1]
    gateway: GatewayId
    seq: Annotated[int, Field(ge=0, le=2**63 - 1)] | None = None
    sent_at: AwareDatetime | None = None
    meters: list[MeterV1]

    @model_validator(mode="after")
    def _bounded(self) -> UplinkV1:
        values = sum(len(series.values) for meter in self.meters for series in meter.series)
        if values > MAX_READINGS:
            raise ValueError(f"{values} readings exceed the limit of {MAX_READINGS} per message")
        events = sum(len(meter.events) for meter in self.meters)
        if events > MAX_EVENTS:
            raise ValueError(f"{events} events exceed the limit of {MAX_EVENTS} per message")
        return self


def _inflate(data: bytes) -> bytes:
    """Gunzip at most MAX_PAYLOAD_BYTES; reject (not truncate) anything bigger, corrupt or trailing."""
    inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
    try:
        out = inflater.decompress(data, MAX_PAYLOAD_BYTES + 1)
    except zlib.error as exc:
        raise GatewayPayloadError(f"corrupt gzip payload: {exc}") from None
    if len(out) > MAX_PAYLOAD_BYTES:
        raise GatewayPayloadError(f"gzip payload inflates beyond {MAX_PAYLOAD_BYTES} bytes")
    if not inflater.eof:
        raise GatewayPayloadError("truncated gzip payload")
    if inflater.unused_data:
        raise GatewayPayloadError("data after the gzip stream")
    return out


def _reason(exc: ValidationError) -> str:
    """The first validation problem as ``path: message``, short enough for a log line."""
    errors = exc.errors(include_url=False, include_input=False)
    first = errors[0]
    where = ".".join(str(part) for part in first["loc"])
    message = first["msg"].removeprefix("Value error, ")
    reason = f"{where}: {message}" if where else message
    if len(errors) > 1:
        reason += f" (+{len(errors) - 1} more)"
    # Field names come from the sender: keep their control characters out of our log lines.
    return "".join(ch if ch.isprintable() else "?" for ch in reason[:_MAX_REASON_CHARS])


def parse_uplink(payload: bytes) -> UplinkV1:
    """Validate a raw uplink (JSON, or gzip-compressed JSON) against format v1."""
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise GatewayPayloadError(f"payload of {len(payload)} bytes exceeds {MAX_PAYLOAD_BYTES}")
    if payload.startswith(GZIP_MAGIC):
        payload = _inflate(payload)
    try:
        return UplinkV1.model_validate_json(payload)
    except ValidationError as exc:
        raise GatewayPayloadError(_reason(exc)) from None


def _bus_series(meter: str, series: TimedSeries | CompactSeries) -> BusSeries | None:
    """One wire series as a bus series; compact gaps (``null``) produce no point, an all-gap series none."""
    if isinstance(series, CompactSeries):
        start, step = series.start.astimezone(UTC), timedelta(seconds=series.interval_s)
        points = [
            (start + (i + 1) * step, value, 0) for i, value in enumerate(series.values) if value is not None
        ]
    else:
        points = [
            (item[0].astimezone(UTC), item[1], item[2] if len(item) == 3 else 0) for item in series.values
        ]
    if not points:
        return None
    return BusSeries.model_construct(  # every field was validated as part of the uplink
        meter=meter,
        channel=series.channel,
        unit=series.unit,
        kind=series.kind,
        interval_s=series.interval_s if series.kind == "interval" else None,
        points=points,
    )


def uplink_to_batch(tenant: str, gateway: str, uplink: UplinkV1, received_at: datetime) -> ReadingBatch:
    """Flatten a validated uplink into bus readings; ``gateway`` (from the topic) must match the body."""
    if uplink.gateway != gateway:
        raise GatewayPayloadError(
            f"gateway {uplink.gateway!r} in the body does not match {gateway!r} in the topic"
        )
    series = [
        converted
        for meter in uplink.meters
        for wire in meter.series
        if (converted := _bus_series(meter.id, wire)) is not None
    ]
    events = [
        MeterEvent(
            meter=meter.id,
            ts=event.ts.astimezone(UTC),
            code=event.code,
            severity=event.severity,
            detail=event.detail,
        )
        for meter in uplink.meters
        for event in meter.events
    ]
    return ReadingBatch(
        tenant=tenant,
        source=DRIVER_SPEC.name,
        gateway=gateway,
        received_at=received_at,
        series=series,
        events=events,
    )


def decode_uplink(tenant: str, gateway: str, payload: bytes, received_at: datetime) -> ReadingBatch:
    """Raw uplink bytes to a ReadingBatch; raises :class:`GatewayPayloadError` for anything invalid."""
    return uplink_to_batch(tenant, gateway, parse_uplink(payload), received_at)


def encode_uplink(uplink: UplinkV1, *, compress: bool = False) -> bytes:
    """Serialise an uplink as a gateway would send it (compact JSON, optionally gzip)."""
    data = uplink.model_dump_json(exclude_none=True).encode()
    # mtime=0 keeps compressed output a pure function of the uplink (stable payload hashes).
    return gzip.compress(data, compresslevel=6, mtime=0) if compress else data
