"""An SML encoder: TL fields, messages with their CRC, files in transport v1 (escapes, padding, CRC).

Written from the encoding rules of BSI TR-03109-1 Anlage IV (SML 1.04 §6.3 TL fields, §8 transport v1).
Why the platform needs one: the simulated eHZ meters must send what a real meter sends, byte for byte,
and the decoder is checked by round trip on values no captured dump happens to contain. It is the exact
inverse of :mod:`openami.protocols.sml.tl`, :mod:`~openami.protocols.sml.messages` and
:mod:`~openami.protocols.sml.transport`, sans-IO like them.

Integers are where meters differ: an eHZ sends its energy register as a 64-bit integer (``59`` or
``69`` TL), its scaler as a signed byte (``52``), its unit as an unsigned byte (``62``). A plain Python
``int`` is written as the smallest unsigned integer that holds it; wrap a value in :class:`Int` to
choose width and signedness as a particular meter does.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final, TypeAlias

from openami.protocols.dlms.obis import Obis
from openami.protocols.sml.errors import SmlEncodeError
from openami.protocols.sml.messages import CLOSE_RESPONSE, GET_LIST_RESPONSE, OPEN_RESPONSE
from openami.protocols.sml.transport import ESCAPE, START, crc16_x25

__all__ = [
    "Int",
    "Node",
    "close_response",
    "encode",
    "file",
    "get_list_response",
    "list_entry",
    "message",
    "message_crc",
    "meter_push",
    "open_response",
    "time_sec_index",
    "time_timestamp",
]

_OCTETS, _BOOL, _INT, _UINT, _LIST = 0, 4, 5, 6, 7
#: A TL field's length nibbles: four TL bytes at most, as the decoder accepts.
_MAX_TL_LENGTH: Final = 0xFFFF
_END: Final = 0x1A


@dataclass(frozen=True, slots=True)
class Int:
    """An integer with an explicit wire width (1..8 bytes) and signedness."""

    value: int
    size: int
    signed: bool = False


Node: TypeAlias = "bytes | int | bool | Int | Sequence[Node] | None"
"""What :func:`encode` takes: octet strings, integers, booleans, lists (any sequence but ``bytes``), and
None for a left-out value."""


def _tl(kind: int, length: int) -> bytes:
    """The TL bytes for ``length`` (which, for scalars, must already count the TL bytes)."""
    if not 0 <= length <= _MAX_TL_LENGTH:
        raise SmlEncodeError(f"length {length} does not fit a TL field")
    nibbles = []
    while True:
        nibbles.append(length & 0x0F)
        length >>= 4
        if not length:
            break
    nibbles.reverse()
    out = bytearray()
    for i, nibble in enumerate(nibbles):
        more = 0x80 if i < len(nibbles) - 1 else 0
        out.append(more | ((kind if i == 0 else 0) << 4) | nibble)
    return bytes(out)


def _scalar(kind: int, body: bytes) -> bytes:
    """A scalar's TL counts its own bytes, so its size is found by trying one, two, ... TL bytes."""
    size = 1
    while True:
        tl = _tl(kind, len(body) + size)
        if len(tl) == size:
            return tl + body
        size = len(tl)


def _integer(value: int, size: int, signed: bool) -> bytes:
    if not 1 <= size <= 8:
        raise SmlEncodeError(f"integer of {size} bytes (1..8 allowed)")
    try:
        body = value.to_bytes(size, "big", signed=signed)
    except OverflowError:
        kind = "signed" if signed else "unsigned"
        raise SmlEncodeError(f"{value} does not fit a {kind} integer of {size} bytes") from None
    return _scalar(_INT if signed else _UINT, body)


def encode(node: Node) -> bytes:
    """One value as TL + content. Python ints go out as the smallest unsigned width; see :class:`Int`."""
    if node is None:
        return b"\x01"
    if isinstance(node, bool):
        return bytes([0x42, int(node)])
    if isinstance(node, Int):
        return _integer(node.value, node.size, node.signed)
    if isinstance(node, int):
        if node < 0:
            raise SmlEncodeError(f"{node}: a negative plain int needs Int(value, size, signed=True)")
        return _integer(node, max(1, (node.bit_length() + 7) // 8), False)
    if isinstance(node, bytes):
        return _scalar(_OCTETS, node)
    return _tl(_LIST, len(node)) + b"".join(encode(n) for n in node)


def message_crc(data: bytes) -> int:
    """A message's crc16 field: CRC-16/X-25 of its bytes, as the integer whose big-endian bytes are the
    CRC least significant byte first (the transport's order; see :mod:`~openami.protocols.sml.messages`)."""
    return int.from_bytes(crc16_x25(data).to_bytes(2, "little"), "big")


def message(
    transaction: bytes,
    tag: int,
    content: Node,
    *,
    group: int = 0,
    abort_on_error: int = 0,
    crc: int | None = None,
) -> bytes:
    """An SML_Message with a correct CRC (unless ``crc`` overrides it) and the end-of-message byte.

    The body tag goes out as a 2-byte unsigned integer, as EMH, ISKRA and Itron meters send it.
    """
    head = (
        _tl(_LIST, 6)
        + encode(transaction)
        + encode(Int(group, 1))
        + encode(Int(abort_on_error, 1))
        + encode([Int(tag, 2), content])
    )
    value = crc if crc is not None else message_crc(head)
    return head + encode(Int(value, 2)) + b"\x00"


def file(*messages: bytes, crc: int | None = None) -> bytes:
    """Transport v1: start sequence, escaped and padded messages, end sequence with padding count and CRC.

    Escaping works on the 4-byte grid, as the decoder reads it: an aligned ``1B1B1B1B`` is sent twice.
    """
    payload = b"".join(messages)
    padding = (-len(payload)) % 4
    payload += b"\x00" * padding
    escaped = b"".join(
        ESCAPE * 2 if payload[i : i + 4] == ESCAPE else payload[i : i + 4] for i in range(0, len(payload), 4)
    )
    head = START + escaped + ESCAPE + bytes([_END, padding])
    value = crc if crc is not None else crc16_x25(head)
    return head + value.to_bytes(2, "little")


# ---------------------------------------------------------------------------------- message bodies


def time_sec_index(seconds: int) -> Node:
    """SML_Time as seconds since an arbitrary start (what eHZ meters without a clock send)."""
    return [Int(1, 1), Int(seconds, 4)]


def time_timestamp(unix_seconds: int) -> Node:
    """SML_Time as a UTC unix timestamp (meters and gateways with a clock)."""
    return [Int(2, 1), Int(unix_seconds, 4)]


def _obj_name(obis: bytes | Obis) -> bytes:
    return obis.to_bytes() if isinstance(obis, Obis) else obis


def open_response(
    server_id: bytes,
    req_file_id: bytes = b"\x00\x01",
    *,
    codepage: bytes | None = None,
    client_id: bytes | None = None,
    ref_time: Node = None,
    sml_version: int | None = None,
) -> Node:
    return [codepage, client_id, req_file_id, server_id, ref_time, sml_version]


def close_response(global_signature: bytes | None = None) -> Node:
    return [global_signature]


def list_entry(
    obis: bytes | Obis,
    value: Node,
    *,
    unit: int | None = None,
    scaler: int | None = None,
    status: Node = None,
    val_time: Node = None,
    signature: bytes | None = None,
) -> Node:
    """One SML_ListEntry: ``unit`` a DLMS unit code (30 Wh, 27 W, 35 V, 33 A), ``scaler`` a power of 10."""
    return [
        _obj_name(obis),
        status,
        val_time,
        unit,
        Int(scaler, 1, True) if scaler is not None else None,
        value,
        signature,
    ]


def get_list_response(
    server_id: bytes,
    entries: Sequence[Node],
    sensor_time: Node = None,
    *,
    client_id: bytes | None = None,
    list_name: bytes | None = None,
) -> Node:
    return [client_id, server_id, list_name, sensor_time, list(entries), None, None]


def meter_push(server_id: bytes, entries: Sequence[Node], *, file_id: int, sensor_time: Node = None) -> bytes:
    """The file an eHZ pushes on its info interface: OpenResponse, one GetListResponse, CloseResponse.

    Transaction ids are the 4-byte ``file_id`` and a message number, as meters count them, so two
    pushes never share a transaction id; ``reqFileId`` is ``file_id`` too.
    """
    base = (file_id & 0xFFFFFFFF).to_bytes(4, "big")
    return file(
        message(base + b"\x01", OPEN_RESPONSE, open_response(server_id, base)),
        message(base + b"\x02", GET_LIST_RESPONSE, get_list_response(server_id, entries, sensor_time)),
        message(base + b"\x03", CLOSE_RESPONSE, close_response()),
    )
