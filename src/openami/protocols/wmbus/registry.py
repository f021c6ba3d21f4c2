"""Decoders for manufacturer-specific payloads, looked up by (manufacturer, version, device type).

Standard OMS content needs no driver: the EN 13757-3 records say what they are. Some meters however send
their readings (or part of them) in a manufacturer-specific CI (0xA0-0xB7) or after the DIF 0x0F/0x1F
marker. A decoder registered here turns those bytes into named values; anything without a decoder is kept
as raw bytes on the telegram, so nothing is lost and nothing is guessed. A decoder may raise
:class:`~openami.protocols.wmbus.errors.DecodeError`; the telegram then still decodes, without extras.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Final

__all__ = [
    "ManufacturerDecoder",
    "lookup",
    "register",
    "registered",
]

#: Manufacturer-specific bytes -> named values (JSON-compatible scalars).
ManufacturerDecoder = Callable[[bytes], Mapping[str, int | float | str]]
_ANY: Final = -1
_DECODERS: dict[tuple[str, int, int], ManufacturerDecoder] = {}


def register(
    manufacturer: str,
    decoder: ManufacturerDecoder,
    *,
    version: int | None = None,
    device_type: int | None = None,
) -> None:
    """Register ``decoder`` for a manufacturer (three letters), optionally one version and device type.

    ``None`` matches any value; a more specific registration wins over a wildcard one.
    """
    key = (
        manufacturer.upper(),
        _ANY if version is None else version,
        _ANY if device_type is None else device_type,
    )
    _DECODERS[key] = decoder


def lookup(manufacturer: str, version: int, device_type: int) -> ManufacturerDecoder | None:
    """The most specific decoder for this meter, or ``None``."""
    name = manufacturer.upper()
    for key in (
        (name, version, device_type),
        (name, version, _ANY),
        (name, _ANY, device_type),
        (name, _ANY, _ANY),
    ):
        decoder = _DECODERS.get(key)
        if decoder is not None:
            return decoder
    return None


def registered() -> list[tuple[str, int | None, int | None]]:
    """What is registered (for diagnostics): (manufacturer, version or None, device type or None)."""
    return [(m, None if v == _ANY else v, None if t == _ANY else t) for m, v, t in sorted(_DECODERS)]


def _example_counter(data: bytes) -> Mapping[str, int | float | str]:
    """Example decoder: a 4-byte little-endian pulse counter as the first manufacturer bytes.

    Registered for the reserved test manufacturer code ``ZZZ`` only, to show the shape of a decoder and
    to exercise the lookup path in tests; no real meter uses it.
    """
    from openami.protocols.wmbus.errors import DecodeError

    if len(data) < 4:
        raise DecodeError("example counter needs 4 bytes")
    return {"counter": int.from_bytes(data[:4], "little")}


register("ZZZ", _example_counter)
