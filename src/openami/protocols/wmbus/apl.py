"""The EN 13757-3 application layer, shared with wired M-Bus (:mod:`openami.protocols.mbus`).

Wireless and wired M-Bus carry the same data records, so this package has no DIF/VIF decoder of its own:
it hands the decrypted application bytes to the M-Bus package and re-types its errors as ours.
"""

from __future__ import annotations

from openami.protocols.mbus import DataRecord, MbusError, record_to_json
from openami.protocols.mbus import decode_records as _decode_records
from openami.protocols.wmbus.errors import DecodeError

__all__ = ["decode_records", "record_to_json"]


def decode_records(data: bytes) -> tuple[DataRecord, ...]:
    """The M-Bus records of ``data``; a bad record region is our :class:`DecodeError`."""
    try:
        return tuple(_decode_records(data))
    except MbusError as exc:
        raise DecodeError(f"application layer: {exc}") from exc
