"""SML messages: the envelope with its CRC, and the response bodies a meter pushes.

``SML_Message ::= [transactionId, groupNo, abortOnError, messageBody, crc16, endOfSmlMsg]`` where the
body is ``[tag, content]``. eHZ meters push OpenResponse (0101), GetListResponse (0701) with the register
values, and CloseResponse (0201); AttentionResponse (FF01) reports errors. Other bodies (requests, profile
answers) are kept as :class:`UnknownBody` with their decoded tree rather than refused.

Each message carries CRC-16/X-25 over its bytes from its list TL up to the CRC field, encoded as an
unsigned integer whose big-endian bytes are the CRC least significant byte first (the transport's order).
Body shapes are checked as far as the fields used: a wrong type is an :class:`SmlDecodeError`; extra
trailing fields (newer versions) are ignored.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final

from openami.protocols.sml.errors import SmlCrcError, SmlDecodeError
from openami.protocols.sml.tl import SmlNode, SmlReader
from openami.protocols.sml.transport import Frame, crc16_x25, unframe

__all__ = [
    "AttentionResponse",
    "Body",
    "CloseResponse",
    "GetListResponse",
    "ListEntry",
    "OpenResponse",
    "SmlFile",
    "SmlMessage",
    "SmlTime",
    "UnknownBody",
    "parse_file",
    "parse_payload",
]

OPEN_RESPONSE: Final = 0x0101
CLOSE_RESPONSE: Final = 0x0201
GET_LIST_RESPONSE: Final = 0x0701
ATTENTION_RESPONSE: Final = 0xFF01
#: Messages a file may hold; a push has three, a profile answer a few dozen.
MAX_MESSAGES: Final = 1024


@dataclass(frozen=True, slots=True)
class SmlTime:
    """SML_Time: seconds since an arbitrary start (secIndex) or a UTC unix timestamp (with local offsets)."""

    sec_index: int | None = None
    timestamp: datetime | None = None
    local_offset_min: int | None = None
    season_offset_min: int | None = None


@dataclass(frozen=True, slots=True)
class ListEntry:
    """One value of a GetListResponse: ``obj_name`` is the OBIS code's 6 bytes (other lengths are kept)."""

    obj_name: bytes
    status: int | None
    val_time: SmlTime | None
    unit: int | None
    scaler: int | None
    value: SmlNode
    signature: bytes | None


@dataclass(frozen=True, slots=True)
class OpenResponse:
    codepage: bytes | None
    client_id: bytes | None
    req_file_id: bytes | None
    server_id: bytes | None
    ref_time: SmlTime | None
    sml_version: int | None


@dataclass(frozen=True, slots=True)
class CloseResponse:
    global_signature: bytes | None


@dataclass(frozen=True, slots=True)
class GetListResponse:
    client_id: bytes | None
    server_id: bytes | None
    list_name: bytes | None
    act_sensor_time: SmlTime | None
    entries: tuple[ListEntry, ...]
    list_signature: bytes | None
    act_gateway_time: SmlTime | None


@dataclass(frozen=True, slots=True)
class AttentionResponse:
    server_id: bytes | None
    attention_no: bytes | None
    message: str | None
    details: SmlNode


@dataclass(frozen=True, slots=True)
class UnknownBody:
    tag: int
    content: SmlNode


Body = OpenResponse | CloseResponse | GetListResponse | AttentionResponse | UnknownBody


@dataclass(frozen=True, slots=True)
class SmlMessage:
    transaction_id: bytes | None
    group_no: int | None
    abort_on_error: int | None
    body: Body
    crc: int
    crc_ok: bool


@dataclass(frozen=True, slots=True)
class SmlFile:
    """A decoded file: its messages, and the transport's padding and CRC."""

    messages: tuple[SmlMessage, ...]
    crc: int
    crc_ok: bool
    padding: int


# ------------------------------------------------------------------------------------- field checks


def _octets(node: SmlNode, what: str) -> bytes | None:
    if node is None or isinstance(node, bytes):
        return node
    raise SmlDecodeError(f"{what}: expected an octet string, got {type(node).__name__}")


def _int(node: SmlNode, what: str) -> int | None:
    if node is None or (isinstance(node, int) and not isinstance(node, bool)):
        return node
    raise SmlDecodeError(f"{what}: expected an integer, got {type(node).__name__}")


def _list(node: SmlNode, size: int, what: str) -> tuple[SmlNode, ...]:
    if not isinstance(node, tuple) or len(node) < size:
        got = f"a list of {len(node)}" if isinstance(node, tuple) else type(node).__name__
        raise SmlDecodeError(f"{what}: expected a list of {size}, got {got}")
    return node


def _unix(seconds: int | None) -> datetime | None:
    if seconds is None or not 0 <= seconds < 2**32:
        return None
    return datetime.fromtimestamp(seconds, UTC)


def _time(node: SmlNode, what: str) -> SmlTime | None:
    """SML_Time is a choice ``[1, secIndex] | [2, timestamp] | [3, [timestamp, local, season]]``.

    Some meters send the bare integer; it is read as secIndex, the meaning most of them use it for.
    """
    if node is None:
        return None
    if isinstance(node, int) and not isinstance(node, bool):
        return SmlTime(sec_index=node)
    raw_tag, value = _list(node, 2, what)[:2]
    tag = _int(raw_tag, what)
    if tag == 1:
        return SmlTime(sec_index=_int(value, what))
    if tag == 2:
        return SmlTime(timestamp=_unix(_int(value, what)))
    if tag == 3:
        stamp, local, season = _list(value, 3, what)[:3]
        return SmlTime(
            timestamp=_unix(_int(stamp, what)),
            local_offset_min=_int(local, what),
            season_offset_min=_int(season, what),
        )
    raise SmlDecodeError(f"{what}: unknown SML_Time choice {tag}")


# ------------------------------------------------------------------------------------------ bodies


def _entry(node: SmlNode) -> ListEntry:
    f = _list(node, 7, "SML_ListEntry")
    name = _octets(f[0], "objName")
    scaler = _int(f[4], "scaler")
    if scaler is not None and not -128 <= scaler <= 127:
        raise SmlDecodeError(f"scaler {scaler} out of range -128..127")
    return ListEntry(
        obj_name=name or b"",
        status=_int(f[1], "status"),
        val_time=_time(f[2], "valTime"),
        unit=_int(f[3], "unit"),
        scaler=scaler,
        value=f[5],
        signature=_octets(f[6], "valueSignature"),
    )


def _body(tag: int, content: SmlNode) -> Body:
    if tag == OPEN_RESPONSE:
        f = _list(content, 6, "OpenResponse")
        return OpenResponse(
            codepage=_octets(f[0], "codepage"),
            client_id=_octets(f[1], "clientId"),
            req_file_id=_octets(f[2], "reqFileId"),
            server_id=_octets(f[3], "serverId"),
            ref_time=_time(f[4], "refTime"),
            sml_version=_int(f[5], "smlVersion"),
        )
    if tag == CLOSE_RESPONSE:
        f = _list(content, 1, "CloseResponse")
        return CloseResponse(global_signature=_octets(f[0], "globalSignature"))
    if tag == GET_LIST_RESPONSE:
        f = _list(content, 7, "GetListResponse")
        entries = f[4]
        if entries is not None and not isinstance(entries, tuple):
            raise SmlDecodeError("valList: expected a list")
        return GetListResponse(
            client_id=_octets(f[0], "clientId"),
            server_id=_octets(f[1], "serverId"),
            list_name=_octets(f[2], "listName"),
            act_sensor_time=_time(f[3], "actSensorTime"),
            entries=tuple(_entry(e) for e in entries or ()),
            list_signature=_octets(f[5], "listSignature"),
            act_gateway_time=_time(f[6], "actGatewayTime"),
        )
    if tag == ATTENTION_RESPONSE:
        f = _list(content, 4, "AttentionResponse")
        text = _octets(f[2], "attentionMsg")
        return AttentionResponse(
            server_id=_octets(f[0], "serverId"),
            attention_no=_octets(f[1], "attentionNo"),
            message=text.decode("utf-8", "replace") if text is not None else None,
            details=f[3],
        )
    return UnknownBody(tag, content)


# ----------------------------------------------------------------------------------------- messages


def _message(reader: SmlReader, check_crc: bool) -> SmlMessage:
    start = reader.pos
    if reader.read_list_header() != 6:
        raise SmlDecodeError("SML_Message must be a list of 6", start)
    transaction = _octets(reader.read(1), "transactionId")
    group = _int(reader.read(1), "groupNo")
    abort = _int(reader.read(1), "abortOnError")
    body_at = reader.pos
    tag, content = _list(reader.read(1), 2, "messageBody")[:2]
    body_tag = _int(tag, "messageBody tag")
    if body_tag is None:
        raise SmlDecodeError("messageBody without a tag", body_at)
    crc_at = reader.pos
    crc = _int(reader.read(1), "crc16")
    reader.read_end_of_message()
    expected = int.from_bytes(crc16_x25(reader.data[start:crc_at]).to_bytes(2, "little"), "big")
    if crc is None:
        raise SmlDecodeError("message without crc16", crc_at)
    if check_crc and crc != expected:
        raise SmlCrcError(f"message CRC {crc:04X} does not match {expected:04X}", crc_at)
    return SmlMessage(transaction, group, abort, _body(body_tag, content), crc, crc == expected)


def parse_payload(frame: Frame, *, check_crc: bool = True) -> SmlFile:
    """The messages of an unframed file (see :func:`~openami.protocols.sml.transport.unframe`)."""
    reader = SmlReader(frame.payload)
    messages: list[SmlMessage] = []
    while reader.remaining:
        if reader.peek() == 0x00:  # stray fill between messages, seen from some gateways
            reader.pos += 1
            continue
        if len(messages) >= MAX_MESSAGES:
            raise SmlDecodeError(f"more than {MAX_MESSAGES} messages in one file", reader.pos)
        messages.append(_message(reader, check_crc))
    if not messages:
        raise SmlDecodeError("file holds no message")
    return SmlFile(tuple(messages), frame.crc, frame.crc_ok, frame.padding)


def parse_file(data: bytes, *, check_crc: bool = True) -> SmlFile:
    """Parse the first SML file in ``data``: transport, messages, bodies.

    Raises :class:`~openami.protocols.sml.errors.SmlFrameError` (framing),
    :class:`~openami.protocols.sml.errors.SmlCrcError` (file or message CRC, unless ``check_crc`` is
    False) and :class:`~openami.protocols.sml.errors.SmlDecodeError` (content); all are ``SmlError``.
    """
    return parse_payload(unframe(data, check_crc=check_crc), check_crc=check_crc)
