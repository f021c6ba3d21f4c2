"""SML transport, TL decoding, messages and values: public meter dumps, and round trips through the
encoder (:mod:`openami.protocols.sml.encode`).

Real dumps (facts about what meters send, not code):

* ``EBZ_DD3``: an eBZ DD3 push, from the test data of bri1234/MyElectricityMonitor ``SmlDecoder.py``
  (MIT). Its message body tags are 4-byte unsigned (``65 00 00 07 01``), its values int64 with scaler -5.
* ``EMH_OPEN``: the first message of the EMH eHZ example in the hallabalooza/pySML README, only its CRC
  (``63 AE 74``) is used: the message CRC is X-25, sent least significant byte first.
* ``FORUM_OPEN``: an EMH OpenResponse annotated on forum.arduino.cc ("SML Protokoll identifiziren und
  zerlegen", post 183), CRC ``63 64 16``.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from openami.protocols.dlms.obis import Obis
from openami.protocols.sml import (
    AttentionResponse,
    CloseResponse,
    GetListResponse,
    OpenResponse,
    SmlCrcError,
    SmlDecodeError,
    SmlFrameError,
    SmlStreamParser,
    UnknownBody,
    crc16_x25,
    parse_file,
    to_json,
    unframe,
    values,
)
from openami.protocols.sml.encode import (
    Int,
    encode,
    file,
    get_list_response,
    list_entry,
    message,
    open_response,
    time_sec_index,
)
from openami.protocols.sml.tl import MAX_DEPTH, SmlReader
from openami.protocols.sml.transport import MAX_FILE_BYTES

EBZ_DD3 = bytes.fromhex(
    "1B1B1B1B01010101 7605 0095A0D5 6200 6200 72 6500000101 76 01 01 07 65425A444433"
    " 0B 09 01 45425A01002D16C3 01 01 63 32DE 00"
    " 7605 0095A0D6 6200 6200 72 6500000701 77 01 0B 0901 45425A01002D16C3 01 72 6201 650018F135 7A"
    " 77 07 8181C78203FF 01 01 01 01 04 45425A 01"
    " 77 07 0100000009FF 01 01 01 01 0B 090145425A01002D16C3 01"
    " 77 07 0100010800FF 64 010180 01 62 1E 52 FB 69 00000008BA139B6E 01"
    " 77 07 0100010801FF 01 01 62 1E 52 FB 69 00000008B4255B8E 01"
    " 77 07 0100010802FF 01 01 62 1E 52 FB 69 0000000005EE3FE0 01"
    " 77 07 0100020800FF 64 010180 01 62 1E 52 FB 69 000000000D185B20 01"
    " 77 07 0100100700FF 01 01 62 1B 52 FE 55 00000185 01"
    " 77 07 0100240700FF 01 01 62 1B 52 FE 55 00000185 01"
    " 77 07 0100380700FF 01 01 62 1B 52 FE 55 00000000 01"
    " 77 07 01004C0700FF 01 01 62 1B 52 FE 55 00000000 01"
    " 01 01 63 88D6 00"
    " 7605 0095A0D7 6200 6200 72 6500000201 71 01 63 7607 00"
    " 000000 1B1B1B1B 1A03 4E67"
)
EMH_OPEN = bytes.fromhex(
    "76 07 001404821729 6200 6200 72 630101 76 01 01 07 001401D4B263 09 454D4858585858580101"
)
FORUM_OPEN = bytes.fromhex(
    "76 05 00a0d9b6 6200 6200 72 630101 76 01 07ffffffffffff 05 00359de8 0b 0a01454d480000b97735"
    " 72 6201 650023c977 6201"
)
OBIS_180 = bytes([1, 0, 1, 8, 0, 255])
SERVER = b"\x0a\x01EMH\x00\x00\xb5\x69\x8f"


def test_crc_x25_orders_seen_in_real_dumps() -> None:
    assert crc16_x25(EMH_OPEN).to_bytes(2, "little") == bytes.fromhex("AE74")
    assert crc16_x25(FORUM_OPEN).to_bytes(2, "little") == bytes.fromhex("6416")


def test_ebz_dump_decodes() -> None:
    sml = parse_file(EBZ_DD3)
    assert sml.crc_ok and sml.padding == 3
    kinds = [type(m.body) for m in sml.messages]
    assert kinds == [OpenResponse, GetListResponse, CloseResponse]
    assert all(m.crc_ok for m in sml.messages)
    got = {r.name: (r.value, r.unit) for r in values(sml)}
    assert got["1-0:1.8.0"] == (374815.85518, "Wh")  # 0x08BA139B6E * 10**-5
    assert got["1-0:2.8.0"] == (2197, "Wh")  # 0x0D185B20 * 10**-5 = 2197.00000
    assert got["1-0:16.7.0"] == (3.89, "W")  # 389 * 10**-2
    assert got["129-129:199.130.3"] == ("EBZ", None)
    assert got["1-0:0.0.9"] == ("090145425A01002D16C3", None)
    body = sml.messages[1].body
    assert isinstance(body, GetListResponse)
    assert body.act_sensor_time is not None and body.act_sensor_time.sec_index == 0x18F135
    assert body.entries[2].status == 0x010180
    assert values(sml)[2].obis == Obis(1, 0, 1, 8, 0)
    doc = to_json(sml)
    json.dumps(doc)
    assert [m["type"] for m in doc["messages"]] == ["OpenResponse", "GetListResponse", "CloseResponse"]
    assert doc["crc"] == "674E" and doc["crc_ok"] is True


def test_ebz_file_crc_mismatch_is_typed_and_can_be_waived() -> None:
    broken = EBZ_DD3[:-1] + bytes([EBZ_DD3[-1] ^ 1])
    with pytest.raises(SmlCrcError):
        parse_file(broken)
    assert parse_file(broken, check_crc=False).crc_ok is False


def test_message_crc_mismatch_is_typed() -> None:
    data = file(message(b"\x01", 0x0101, open_response(SERVER), crc=0x1234))
    with pytest.raises(SmlCrcError, match="message CRC"):
        parse_file(data)
    sml = parse_file(data, check_crc=False)
    assert sml.messages[0].crc_ok is False


def test_round_trip_all_integer_widths_and_types() -> None:
    entries = [
        list_entry(bytes([1, 0, 1, 8, i, 255]), Int(v, size, signed), unit=30, scaler=0)
        for i, (v, size, signed) in enumerate(
            [(-5, 1, True), (300, 2, False), (-70000, 3, True), (2**31, 4, False), (2**63 - 1, 8, True)]
        )
    ]
    entries += [
        list_entry(bytes([1, 0, 96, 5, 0, 255]), True),
        list_entry(bytes([1, 0, 96, 1, 0, 255]), b"ABC"),
        list_entry(bytes([7, 0, 3, 0, 0, 255]), Int(123456, 4), unit=13, scaler=-3),
        list_entry(bytes([1, 0, 32, 7, 0, 255]), Int(2301, 2), unit=35, scaler=-1),
        list_entry(bytes([1, 0, 1, 8, 0]), Int(1, 1)),  # objName of 5 bytes: kept, no OBIS
        list_entry(OBIS_180, Int(12, 1), unit=30, scaler=3),
    ]
    data = file(message(b"\x02", 0x0701, get_list_response(SERVER, entries, time_sec_index(9))))
    got = [(r.name, r.value, r.unit) for r in values(parse_file(data))]
    assert got == [
        ("1-0:1.8.0", -5, "Wh"),
        ("1-0:1.8.1", 300, "Wh"),
        ("1-0:1.8.2", -70000, "Wh"),
        ("1-0:1.8.3", 2**31, "Wh"),
        ("1-0:1.8.4", 2**63 - 1, "Wh"),
        ("1-0:96.5.0", True, None),
        ("1-0:96.1.0", "ABC", None),
        ("7-0:3.0.0", 123.456, "m3"),
        ("1-0:32.7.0", 230.1, "V"),
        ("0100010800", 1, None),
        ("1-0:1.8.0", 12000, "Wh"),
    ]


def test_escape_sequence_inside_a_value_is_undone() -> None:
    value = b"\x1b" * 11
    for prefix in range(4):  # the value's 1B run lands on every alignment
        entry = list_entry(bytes([1, 0, 96, 1, prefix, 255]), value)
        body = get_list_response(b"\x01" * (prefix + 1), [entry])
        data = file(message(b"\x02", 0x0701, body))
        assert values(parse_file(data))[0].value == "1B" * 11


def test_time_choices_and_attention() -> None:
    local = [Int(3, 1), [Int(1_700_000_000, 4), Int(60, 2, True), Int(0, 2, True)]]
    body = get_list_response(SERVER, [list_entry(OBIS_180, Int(1, 1))], [Int(2, 1), Int(1_700_000_000, 4)])
    attention = [SERVER, bytes.fromhex("8181C7C7FE03"), b"no data", None]
    entry_with_time = [OBIS_180, None, local, 30, None, Int(5, 1), None]
    second = get_list_response(SERVER, [entry_with_time])
    sml = parse_file(
        file(
            message(b"\x01", 0x0701, body),
            message(b"\x02", 0x0701, second),
            message(b"\x03", 0xFF01, attention),
            message(b"\x04", 0x0500, [b"tree"]),
        )
    )
    stamp = datetime.fromtimestamp(1_700_000_000, UTC)
    assert [r.timestamp for r in values(sml)] == [stamp, stamp]
    att = sml.messages[2].body
    assert isinstance(att, AttentionResponse) and att.message == "no data"
    assert att.attention_no == bytes.fromhex("8181C7C7FE03")
    assert isinstance(sml.messages[3].body, UnknownBody)
    json.dumps(to_json(sml))


def test_long_tl_fields() -> None:
    long = b"x" * 300
    assert encode(long)[:3] == bytes([0x81, 0x82, 0x0F])  # 300 + 3 TL bytes = 0x12F
    reader = SmlReader(encode(long) + encode([long, 7]))
    assert reader.read() == long
    assert reader.read() == (long, 7)


@pytest.mark.parametrize(
    ("data", "error"),
    [
        (b"", SmlFrameError),
        (b"\x1b\x1b\x1b\x1b\x01\x01\x01\x01\x76\x01", SmlFrameError),  # no end sequence
        (b"\x1b\x1b\x1b\x1b\x01\x01\x01\x01\x1b\x1b\x1b\x1b\x02\x00\x00\x00", SmlFrameError),  # bad escape
        (b"\x1b\x1b\x1b\x1b\x01\x01\x01\x01\x1b\x1b\x1b\x1b\x1a\x00", SmlFrameError),  # cut in the end
    ],
)
def test_broken_transport(data: bytes, error: type[Exception]) -> None:
    with pytest.raises(error):
        parse_file(data)


def test_bad_padding_and_empty_file() -> None:
    with pytest.raises(SmlFrameError, match="padding"):
        unframe(file(b"\x01\x02\x03\x04")[:-4] + b"\x1a\x05\x00\x00", check_crc=False)
    with pytest.raises(SmlDecodeError, match="no message"):
        parse_file(file())


@pytest.mark.parametrize(
    "payload",
    [
        b"\x76\x01",  # list runs past the input
        b"\x7f" + b"\x01" * 4,  # 15 elements in 4 bytes
        b"\x0f\x01",  # octet string longer than the input
        b"\x59" + b"\x00" * 8,  # 9-byte integer
        b"\x43\x01\x02",  # 2-byte boolean
        b"\x71" * (MAX_DEPTH + 2) + b"\x01",  # nesting too deep
        b"\x8f\x8f\x8f\x8f\x0f",  # TL field too long
        b"\x81\x71",  # continuation byte with type bits
        b"\x72\x63\x01\x01\x01",  # message not a list of 6
    ],
)
def test_hostile_content_is_a_decode_error(payload: bytes) -> None:
    with pytest.raises(SmlDecodeError):
        parse_file(file(payload))


def test_wrong_field_types_are_decode_errors() -> None:
    with pytest.raises(SmlDecodeError, match="serverId"):
        parse_file(file(message(b"\x01", 0x0101, [None, None, b"x", Int(5, 1), None, None])))
    with pytest.raises(SmlDecodeError, match="SML_ListEntry"):
        parse_file(file(message(b"\x01", 0x0701, get_list_response(SERVER, [[OBIS_180]]))))


def test_stream_parser_finds_files_between_noise_and_broken_files() -> None:
    good = EBZ_DD3
    broken = good[:100] + bytes([good[100] ^ 0xFF]) + good[101:]
    stream = b"\x00\x1b\x1b" + good[200:] + good + broken + b"noise" + good[:50] + good
    parser = SmlStreamParser()
    files = [f for i in range(0, len(stream), 13) for f in parser.feed(stream[i : i + 13])]
    assert len(files) == 2
    assert all(f.crc_ok for f in files)
    assert any(isinstance(e, SmlCrcError) for e in parser.errors)
    assert parser.buffered < len(good)
    assert parser.feed(b"\x1b\x1b\x1b\x1b\x01\x01\x01\x01" + b"\x00" * (MAX_FILE_BYTES + 64)) == []
    assert parser.buffered <= MAX_FILE_BYTES + 64
