"""An SML encoder for the tests: TL fields, messages with their CRC, files with escaping, padding and CRC.

Written from the encoding rules of BSI TR-03109-1 Anlage IV (SML 1.04 §6.3 TL fields, §8 transport v1)
so that the decoder can be checked by round trip on values no captured dump happens to contain.
"""

from __future__ import annotations

from dataclasses import dataclass

from openami.protocols.dlms.hdlc import crc16_x25

ESCAPE = b"\x1b\x1b\x1b\x1b"


@dataclass(frozen=True)
class Int:
    """An integer with an explicit wire width (bytes) and signedness."""

    value: int
    size: int
    signed: bool = False


Node = bytes | int | bool | Int | list["Node"] | tuple["Node", ...] | None


def _tl(kind: int, length: int) -> bytes:
    """The TL bytes for ``length`` (which, for scalars, must already count the TL bytes)."""
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
    size = 1
    while True:
        tl = _tl(kind, len(body) + size)
        if len(tl) == size:
            return tl + body
        size = len(tl)


def encode(node: Node) -> bytes:
    """One value. Python ints go out as the smallest unsigned width; use :class:`Int` to choose."""
    if node is None:
        return b"\x01"
    if isinstance(node, bool):
        return bytes([0x42, int(node)])
    if isinstance(node, Int):
        return _scalar(5 if node.signed else 6, node.value.to_bytes(node.size, "big", signed=node.signed))
    if isinstance(node, int):
        size = max(1, (node.bit_length() + 7) // 8)
        return _scalar(6, node.to_bytes(size, "big"))
    if isinstance(node, bytes):
        return _scalar(0, node)
    return _tl(7, len(node)) + b"".join(encode(n) for n in node)


def message(transaction: bytes, tag: int, content: Node, *, group: int = 0, crc: int | None = None) -> bytes:
    """An SML_Message with a correct CRC (unless ``crc`` overrides it) and the end-of-message byte."""
    head = _tl(7, 6) + encode(transaction) + encode(group) + encode(0) + encode([Int(tag, 2), content])
    value = crc if crc is not None else int.from_bytes(crc16_x25(head).to_bytes(2, "little"), "big")
    return head + encode(Int(value, 2)) + b"\x00"


def file(*messages: bytes, crc: int | None = None) -> bytes:
    """Transport v1: start sequence, escaped and padded messages, end sequence with padding count and CRC."""
    payload = b"".join(messages)
    padding = (-len(payload)) % 4
    payload += b"\x00" * padding
    escaped = b"".join(
        ESCAPE * 2 if payload[i : i + 4] == ESCAPE else payload[i : i + 4] for i in range(0, len(payload), 4)
    )
    head = ESCAPE + b"\x01\x01\x01\x01" + escaped + ESCAPE + bytes([0x1A, padding])
    value = crc if crc is not None else crc16_x25(head)
    return head + value.to_bytes(2, "little")


def time_sec_index(seconds: int) -> Node:
    return [Int(1, 1), Int(seconds, 4)]


def open_response(server_id: bytes, req_file_id: bytes = b"\x00\x01") -> Node:
    return [None, None, req_file_id, server_id, None, None]


def list_entry(obis: bytes, value: Node, *, unit: int | None = None, scaler: int | None = None) -> Node:
    return [obis, None, None, unit, Int(scaler, 1, True) if scaler is not None else None, value, None]


def get_list_response(server_id: bytes, entries: list[Node], sensor_time: Node = None) -> Node:
    return [None, server_id, None, sensor_time, entries, None, None]
