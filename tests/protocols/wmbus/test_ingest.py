"""Receiver line formats and the bounded stream parser."""

from __future__ import annotations

import pytest

from openami.protocols.wmbus import DecodeError, LineParser, decode_telegram, parse_line
from openami.protocols.wmbus.ingest import MAX_LINE
from tests.protocols.wmbus.builders import RECORDS, frame

TELEGRAM = frame(bytes([0x7A, 0x05, 0x00, 0x00, 0x00]) + RECORDS)
HEX = TELEGRAM.hex().upper()


def test_plain_hex_variants() -> None:
    for line in (
        HEX,
        "0x" + HEX.lower(),
        " ".join(HEX[i : i + 2] for i in range(0, len(HEX), 2)),
        HEX[:20] + "|" + HEX[20:],
    ):
        parsed = parse_line(line)
        assert parsed is not None and parsed.frame == TELEGRAM


def test_rtl_wmbus() -> None:
    parsed = parse_line(f"T1;1;1;2019-04-03 19:00:42.000;97;148;12345678;0x{HEX.lower()}")
    assert parsed is not None and parsed.frame == TELEGRAM
    assert parsed.mode == "T1" and parsed.timestamp == "2019-04-03 19:00:42.000" and parsed.rssi == 97


def test_wmbusmeters_simulation_line() -> None:
    parsed = parse_line(f"telegram=|{HEX[:20]}|{HEX[20:]}|+5")
    assert parsed is not None and parsed.frame == TELEGRAM


def test_leading_rssi_and_trailing_rssi_byte() -> None:
    parsed = parse_line(f"-72 {HEX}")
    assert parsed is not None and parsed.rssi == -72 and parsed.frame == TELEGRAM
    parsed = parse_line(HEX + "C8")
    assert parsed is not None and parsed.rssi_byte == 0xC8 and parsed.frame == TELEGRAM
    assert decode_telegram(parsed.frame).access_number == 5


def test_blank_comment_and_bad_lines() -> None:
    assert parse_line("") is None and parse_line("# comment") is None
    for bad in ("xyz", "ABC", "T1;1;1;no hex"):
        with pytest.raises(DecodeError):
            parse_line(bad)
    with pytest.raises(DecodeError):
        parse_line("A" * (MAX_LINE + 1))


def test_stream_parser_bounded() -> None:
    parser = LineParser()
    data = (HEX + "\n" + "zz\n" + "B" * (MAX_LINE * 3) + "\n" + HEX).encode()
    out = []
    for i in range(0, len(data), 37):
        out += parser.feed(data[i : i + 37])
    out += parser.close()
    assert [t.frame for t in out] == [TELEGRAM, TELEGRAM]
    assert parser.error_count == 2
    assert parser.buffered == 0
