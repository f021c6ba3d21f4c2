"""``en13757-3``: a payload that is EN 13757-3 data records, as many "M-Bus over LoRaWAN" modules send.

The records decode exactly as on wired and wireless M-Bus (:mod:`openami.protocols.mbus`) and the
current values get the same channel names (:mod:`openami.protocols.mbus.channels`). A record marked
"value during error state" (DIF function 3) means the module could not read the meter: its value is
left out and a ``meter_read_error`` event says so. An enhanced-identification record (VIF 0x79: id,
manufacturer, version, medium) names the meter behind the module.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from openami.protocols.lorawan.codecs import (
    CodecContext,
    CodecEvent,
    CodecValue,
    DecodedUplink,
    register,
)
from openami.protocols.lorawan.errors import CodecError
from openami.protocols.mbus import DataRecord, MbusError, decode_records
from openami.protocols.mbus.channels import channel_codes

__all__ = ["decode_mbus_records", "from_records"]


def _meter_id(records: Sequence[DataRecord]) -> str | None:
    for record in records:
        if record.quantity == "enhanced_identification" and len(record.raw) >= 4:
            return record.raw[3::-1].hex().upper()  # BCD id, least significant byte first
        if record.quantity == "fabrication_no" and isinstance(record.value, int):
            return str(record.value)
    return None


def _meter_time(records: Sequence[DataRecord]) -> datetime | None:
    """The meter's clock record, when it holds a real date (meters send impossible ones when unset)."""
    for record in records:
        if record.quantity == "date_time" and not record.storage and isinstance(record.value, str):
            try:
                return datetime.fromisoformat(record.value)
            except ValueError:
                return None
    return None


def from_records(records: Sequence[DataRecord]) -> DecodedUplink:
    """Values, events and identity of decoded records (shared with the vendor codecs built on them)."""
    values = [
        CodecValue(code, float(record.value), record.unit or "")  # type: ignore[arg-type]  # numeric
        for code, record in channel_codes(records)
    ]
    failed = sorted({r.quantity for r in records if r.function == "value_during_error"})
    events = [CodecEvent("meter_read_error", "warning", {"quantities": ",".join(failed)})] if failed else []
    return DecodedUplink(values, events, _meter_id(records), _meter_time(records))


def decode_mbus_records(f_port: int, data: bytes, context: CodecContext) -> DecodedUplink:
    if not data:
        raise CodecError("empty payload")
    try:
        return from_records(decode_records(data))
    except MbusError as exc:
        raise CodecError(f"EN 13757-3 records: {exc}") from exc


register("en13757-3", decode_mbus_records)
