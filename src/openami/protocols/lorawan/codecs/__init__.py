"""Payload codecs per device profile: a LoRaWAN device's FRMPayload to values and events.

A LoRaWAN meter's payload format is its manufacturer's (or, for OMS meters, the OMS group's); the device
profile names which codec reads it. Codecs are looked up by name (:func:`codec`); each is a pure function
``(f_port, data, context) -> DecodedUplink`` over the public payload descriptions of the devices, with
:class:`~openami.protocols.lorawan.errors.CodecError` for a payload it cannot read.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from openami.protocols.lorawan.errors import UnknownProfileError

__all__ = [
    "CODECS",
    "Codec",
    "CodecContext",
    "CodecEvent",
    "CodecValue",
    "DecodedUplink",
    "codec",
    "known",
    "register",
]


@dataclass(frozen=True, slots=True)
class CodecValue:
    """One reading: channel (named as for the same meter on other bearers), value in base units."""

    channel: str
    value: float
    unit: str
    ts: datetime | None = None
    """When the meter measured it, if the payload says; else the uplink's time applies."""


@dataclass(frozen=True, slots=True)
class CodecEvent:
    code: str
    severity: str = "info"
    detail: dict[str, str | int | float | bool | None] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class DecodedUplink:
    values: list[CodecValue] = field(default_factory=list)
    events: list[CodecEvent] = field(default_factory=list)
    meter_id: str | None = None
    """The meter's own id when the payload carries it (checked against the registration)."""
    meter_time: datetime | None = None
    """The meter's clock, when the payload carries it (naive: meter local time, as sent)."""


@dataclass(frozen=True, slots=True)
class CodecContext:
    """What a codec may need beyond the bytes: the device's tags and, for encrypted payloads, its key."""

    tags: dict[str, str] = field(default_factory=dict)
    key: bytes | None = None
    extra: dict[str, Any] = field(default_factory=dict)


Codec = Callable[[int, bytes, CodecContext], DecodedUplink]
CODECS: dict[str, Codec] = {}


def register(name: str, decoder: Codec) -> None:
    CODECS[name] = decoder


def known() -> frozenset[str]:
    """The names of every codec (importing the built-in ones on first use)."""
    from openami.protocols.lorawan.codecs import (  # noqa: F401 - they register
        axioma,
        bmeters,
        elvaco,
        kamstrup,
        mbus_records,
        oms,
    )

    return frozenset(CODECS)


def codec(name: str) -> Codec:
    """The codec registered under ``name``."""
    known()
    found = CODECS.get(name)
    if found is None:
        raise UnknownProfileError(f"no payload codec {name!r} (known: {', '.join(sorted(CODECS))})")
    return found
