"""What the platform takes from an SML file: values with the scaler applied, and a JSON view.

A list entry's value is a bare integer with a ``scaler`` (power of ten) and a DLMS unit code; the
physical value is ``value * 10**scaler`` in that unit. It is computed with decimal arithmetic so that
``0x0222E4ABE * 10**-1`` Wh is exactly 3588893.4 Wh, and returned as an int when whole. Units are
already SI base units in the DLMS table (Wh, W, V, A); volume is spelled ``m3`` as elsewhere in the
platform. Octet-string values are text when printable (manufacturer ids) and hex otherwise (server ids).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from openami.protocols.dlms.obis import Obis
from openami.protocols.dlms.units import unit_symbol
from openami.protocols.sml.messages import (
    AttentionResponse,
    CloseResponse,
    GetListResponse,
    ListEntry,
    OpenResponse,
    SmlFile,
    SmlTime,
    UnknownBody,
)
from openami.protocols.sml.tl import SmlNode

__all__ = ["SmlReading", "to_json", "values"]

_UNIT_SPELLING = {"m³": "m3", "m³/h": "m3/h", "m³/d": "m3/d"}


@dataclass(frozen=True, slots=True)
class SmlReading:
    """One list entry, normalised. ``obis`` is None when objName is not 6 bytes (``name`` keeps it)."""

    obis: Obis | None
    name: str
    value: int | float | str | bool | None
    unit: str | None
    timestamp: datetime | None
    server_id: str | None
    status: int | None


def _text(raw: bytes) -> str:
    if raw and all(0x20 <= b < 0x7F for b in raw):
        return raw.decode("ascii")
    return raw.hex().upper()


def _hex(raw: bytes | None) -> str | None:
    return raw.hex().upper() if raw is not None else None


def _value(entry: ListEntry) -> int | float | str | bool | None:
    value = entry.value
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, bytes):
        return _text(value)
    if isinstance(value, int):
        if not entry.scaler:
            return value
        scaled = Decimal(value).scaleb(entry.scaler)
        return int(scaled) if scaled == scaled.to_integral_value() else float(scaled)
    return None  # an SML_ListType value (time, signature lists): nothing to normalise


def _stamp(time: SmlTime | None) -> datetime | None:
    return time.timestamp if time is not None else None


def _name(raw: bytes) -> tuple[Obis | None, str]:
    if len(raw) != 6:
        return None, raw.hex().upper()
    obis = Obis.from_bytes(raw)
    return obis, obis.reduced if obis.f == 255 else str(obis)


def values(file: SmlFile) -> list[SmlReading]:
    """Every GetListResponse entry of the file, scaled and with unit symbols, in file order."""
    out: list[SmlReading] = []
    for message in file.messages:
        body = message.body
        if not isinstance(body, GetListResponse):
            continue
        server = _hex(body.server_id)
        for entry in body.entries:
            obis, name = _name(entry.obj_name)
            unit = unit_symbol(entry.unit) if entry.unit is not None else None
            out.append(
                SmlReading(
                    obis=obis,
                    name=name,
                    value=_value(entry),
                    unit=_UNIT_SPELLING.get(unit, unit) if unit is not None else None,
                    timestamp=_stamp(entry.val_time) or _stamp(body.act_sensor_time),
                    server_id=server,
                    status=entry.status,
                )
            )
    return out


def _time_json(time: SmlTime | None) -> dict[str, Any] | None:
    if time is None:
        return None
    return {
        "sec_index": time.sec_index,
        "timestamp": time.timestamp.isoformat() if time.timestamp is not None else None,
        "local_offset_min": time.local_offset_min,
        "season_offset_min": time.season_offset_min,
    }


def _node_json(node: SmlNode) -> Any:
    if isinstance(node, bytes):
        return node.hex().upper()
    if isinstance(node, tuple):
        return [_node_json(n) for n in node]
    return node


def _body_json(body: object) -> tuple[str, dict[str, Any]]:
    if isinstance(body, OpenResponse):
        return "OpenResponse", {
            "codepage": _hex(body.codepage),
            "client_id": _hex(body.client_id),
            "req_file_id": _hex(body.req_file_id),
            "server_id": _hex(body.server_id),
            "ref_time": _time_json(body.ref_time),
            "sml_version": body.sml_version,
        }
    if isinstance(body, GetListResponse):
        return "GetListResponse", {
            "client_id": _hex(body.client_id),
            "server_id": _hex(body.server_id),
            "list_name": _hex(body.list_name),
            "act_sensor_time": _time_json(body.act_sensor_time),
            "entries": len(body.entries),
        }
    if isinstance(body, CloseResponse):
        return "CloseResponse", {"global_signature": _hex(body.global_signature)}
    if isinstance(body, AttentionResponse):
        return "AttentionResponse", {
            "server_id": _hex(body.server_id),
            "attention_no": _hex(body.attention_no),
            "message": body.message,
        }
    assert isinstance(body, UnknownBody)
    return f"0x{body.tag:04X}", {"content": _node_json(body.content)}


def to_json(file: SmlFile) -> dict[str, Any]:
    """A JSON-serialisable dict: transport CRC, each message (type, CRC, body) and the values."""
    messages = []
    for m in file.messages:
        kind, body = _body_json(m.body)
        messages.append(
            {
                "transaction_id": _hex(m.transaction_id),
                "group_no": m.group_no,
                "abort_on_error": m.abort_on_error,
                "type": kind,
                "crc": f"{m.crc:04X}",
                "crc_ok": m.crc_ok,
                "body": body,
            }
        )
    return {
        "crc": f"{file.crc:04X}",
        "crc_ok": file.crc_ok,
        "padding": file.padding,
        "messages": messages,
        "values": [
            {
                "obis": r.name,
                "value": r.value,
                "unit": r.unit,
                "timestamp": r.timestamp.isoformat() if r.timestamp is not None else None,
                "server_id": r.server_id,
                "status": r.status,
            }
            for r in values(file)
        ],
    }
