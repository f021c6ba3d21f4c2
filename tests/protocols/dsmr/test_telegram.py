"""DSMR framing, CRC, value shapes, time zones and the stream parser, on telegrams built here."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from openami.protocols.dsmr import (
    CrcError,
    DsmrError,
    DsmrStreamParser,
    TelegramError,
    crc16_arc,
    parse_telegram,
    readings,
    to_json,
)
from openami.protocols.dsmr.telegram import MAX_TELEGRAM_BYTES
from openami.protocols.dsmr.values import parse_quantity, parse_timestamp
from tests.protocols.dlms.fuzzing import FUZZ_TIME_LIMIT_S

AMS = ZoneInfo("Europe/Amsterdam")


def make(body: str, *, header: str = "/XMX5LGBBFG1012345678", crc: bool = True) -> bytes:
    """A telegram with CRLF line ends and, for v4+, a correct CRC."""
    text = header + "\r\n\r\n" + "".join(line + "\r\n" for line in body.strip().splitlines()) + "!"
    raw = text.encode("latin-1")
    return raw + (f"{crc16_arc(raw):04X}".encode() if crc else b"") + b"\r\n"


V5 = """
1-3:0.2.8(50)
0-0:1.0.0(231029025959S)
0-0:96.1.1(4530303334303036393938343735363139)
1-0:1.8.1(000123.456*kWh)
1-0:2.7.0(01.234*kW)
1-0:99.97.0(2)(0-0:96.7.19)(231028120000S)(0000000240*s)(231029023000W)(0000000060*s)
0-0:96.13.0(48656C6C6F)
0-1:24.1.0(003)
0-1:96.1.0(4730303339303031393336393930363139)
0-1:24.2.1(231029030000W)(00246.138*m3)
"""


def test_crc16_arc_check_value() -> None:
    assert crc16_arc(b"123456789") == 0xBB3D  # the CRC-16/ARC catalogue check value


def test_v5_telegram_values_and_json() -> None:
    t = parse_telegram(make(V5))
    assert t.crc_ok is True
    assert t.version == "5.0"
    assert t.value("1-0:1.8.1").value == 123456  # type: ignore[union-attr]
    assert t.value("1-0:2.7.0").value == 1234  # type: ignore[union-attr]
    assert t.value("0-0:96.13.0").value == "Hello"  # type: ignore[union-attr]
    assert t.equipment_id == "E0034006998475619"
    doc = to_json(t)
    assert doc["version"] == "5.0" and doc["crc_ok"] is True
    assert {"obis": "1-0:1.8.1", "value": 123456, "unit": "Wh", "timestamp": None, "channel": None} in doc[
        "values"
    ]
    assert doc["power_failures"] == [
        {"end": "2023-10-28T12:00:00+02:00", "duration_s": 240},
        {"end": "2023-10-29T02:30:00+01:00", "duration_s": 60},
    ]


def test_dst_flag_picks_the_repeated_autumn_hour() -> None:
    summer = parse_timestamp("231029025959S", AMS)
    winter = parse_timestamp("231029025959W", AMS)
    assert summer is not None and winter is not None
    assert summer.utcoffset() == timedelta(hours=2)
    assert winter.utcoffset() == timedelta(hours=1)
    assert winter.astimezone(UTC) - summer.astimezone(UTC) == timedelta(hours=1)
    t = parse_telegram(make(V5))
    assert t.timestamp == datetime(2023, 10, 29, 0, 59, 59, tzinfo=UTC)


def test_brussels_zone_and_contradicting_flag() -> None:
    stamp = parse_timestamp("240115120000W", ZoneInfo("Europe/Brussels"))
    assert stamp is not None and stamp.utcoffset() == timedelta(hours=1)
    wrong = parse_timestamp("240115120000S", AMS)  # meter says summer in January: believed, fixed +2
    assert wrong is not None and wrong.utcoffset() == timedelta(hours=2)
    assert parse_timestamp("241315120000W", AMS) is None  # month 13
    assert parse_timestamp("2401151200", AMS) is None


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("001.19*kW", (1190, "W")),
        ("00001.001*kWh", (1001, "Wh")),
        ("240.860*GJ", (240_860_000_000, "J")),
        ("00981.443*m3", (981.443, "m3")),
        ("000.27*A", (0.27, "A")),
        ("0001", (1, None)),
        ("12.5*furlong", (12.5, "furlong")),
        ("-1.5*kW", (-1500, "W")),
        ("abc*kW", None),
        ("", None),
    ],
)
def test_quantities_in_base_units(text: str, expected: object) -> None:
    assert parse_quantity(text) == expected


def test_crc_mismatch_is_typed_and_can_be_waived() -> None:
    good = make(V5)
    bad = good.replace(b"123.456", b"123.457")
    with pytest.raises(CrcError) as info:
        parse_telegram(bad)
    assert info.value.received is not None and info.value.expected is not None
    t = parse_telegram(bad, check_crc=False)
    assert t.crc_ok is False
    assert t.value("1-0:1.8.1").value == 123457  # type: ignore[union-attr]


def test_v4_telegram_without_crc_is_refused_unless_waived() -> None:
    data = make(V5, crc=False)
    with pytest.raises(CrcError):
        parse_telegram(data)
    assert parse_telegram(data, check_crc=False).crc_ok is None


def test_v2_gas_continuation_line_and_no_crc() -> None:
    body = "0-1:24.3.0(090212160000)(00)(60)(1)(0-1:24.2.1)(m3)\n(00012.345)\n0-1:24.4.0(1)"
    t = parse_telegram(make(body, header="/KMP5 KA6U001585575011", crc=False))
    gas = t.value("0-1:24.3.0")
    assert gas is not None and (gas.value, gas.unit, gas.channel) == (12.345, "m3", 1)
    assert gas.timestamp == datetime(2009, 2, 12, 16, tzinfo=AMS)
    got = readings(t, received_at=datetime(2024, 1, 1, tzinfo=UTC))
    assert [(r.meter, r.channel, r.value) for r in got] == [("KMP5 KA6U001585575011:1", "0-1:24.3.0", 12.345)]


def test_unknown_lines_are_kept() -> None:
    t = parse_telegram(make("1-0:1.8.1(000001.000*kWh)\n1-0:0.9.9(weird stuff)\nnot an object line"))
    assert t.value("1-0:0.9.9").value == "weird stuff"  # type: ignore[union-attr]
    assert t.unparsed == ("not an object line",)


@pytest.mark.parametrize(
    "line",
    [
        "1-0:99.97.0(3000000000)(0-0:96.7.19)",  # a count no fields back: must not drive the work
        "1-0:99.97.0(2)(0-0:96.7.19)(231028120000S)(0000000240*s)",  # fewer entries than counted
        "0-0:98.1.0(9)(1-0:1.6.0)(1-0:1.6.0)(200501000000S)",
        "1-0:99.97.0()",
    ],
)
def test_profile_buffers_with_wrong_counts_are_bounded(line: str) -> None:
    began = time.perf_counter()
    t = parse_telegram(make(line))
    assert time.perf_counter() - began < FUZZ_TIME_LIMIT_S
    assert len(t.objects) == 1
    assert len(t.objects[0].values) <= len(t.objects[0].fields)


@pytest.mark.parametrize(
    "data",
    [b"", b"   ", b"hello", b"/ABC5 header only\r\n", b"/ABC5\r\n\r\n1-0:1.8.1(1*kWh)\r\n", b"!1234\r\n"],
)
def test_broken_framing_is_a_telegram_error(data: bytes) -> None:
    with pytest.raises(TelegramError):
        parse_telegram(data)


def test_oversized_telegram_is_refused() -> None:
    body = "\n".join(f"1-0:1.8.1({i:06d}*kWh)" for i in range(MAX_TELEGRAM_BYTES // 20))
    with pytest.raises(TelegramError, match="longer than"):
        parse_telegram(make(body))


def test_stream_parser_resynchronises_and_stays_bounded() -> None:
    one = make(V5)
    bad = one.replace(b"123.456", b"999.999")
    stream = b"noise\r\n" + one[len(one) // 2 :] + one + bad + b"\x00\xff" + one[:40] + one + one
    parser = DsmrStreamParser()
    got = [t for i in range(0, len(stream), 7) for t in parser.feed(stream[i : i + 7])]
    got += parser.feed(b"\r\n")
    assert len(got) == 3
    assert all(t.crc_ok for t in got)
    assert any(isinstance(e, CrcError) for e in parser.errors)
    assert parser.feed(b"/" + b"x" * (MAX_TELEGRAM_BYTES + 10)) == []
    assert parser.buffered <= MAX_TELEGRAM_BYTES + 16


SHAPES = ["(0-0:96.7.19)", "(231028120000S)", "(0000000240*s)", "(1.5*kW)", "()", "(x)", "(632525252525W)"]


def _mutations() -> st.SearchStrategy[bytes]:
    base = make(V5)
    return st.one_of(
        st.integers(0, len(base)).map(lambda n: base[:n]),
        st.tuples(st.integers(0, len(base) - 1), st.integers(0, 255)).map(
            lambda p: base[: p[0]] + bytes([p[1]]) + base[p[0] + 1 :]
        ),
        st.binary(max_size=400).map(lambda junk: b"/" + junk + b"\r\n!" + junk[:4]),
        st.text(alphabet="0123456789-:.*()!/\r\nSWkWh", max_size=600).map(str.encode),
        st.tuples(st.integers(0, 10**12), st.lists(st.sampled_from(SHAPES), max_size=12)).map(
            lambda p: make(f"1-0:99.97.0({p[0]})" + "".join(p[1]))
        ),
    )


@settings(max_examples=400, deadline=None)
@given(_mutations(), st.booleans())
def test_fuzz_parse_ends_in_value_or_typed_error(data: bytes, check: bool) -> None:
    began = time.perf_counter()
    try:
        t = parse_telegram(data, check_crc=check)
        to_json(t)
        readings(t, received_at=datetime(2024, 1, 1, tzinfo=UTC))
    except DsmrError:
        pass
    assert time.perf_counter() - began < FUZZ_TIME_LIMIT_S


@settings(max_examples=200, deadline=None)
@given(st.lists(st.binary(max_size=300), max_size=8), _mutations())
def test_fuzz_stream_never_raises(chunks: list[bytes], telegram: bytes) -> None:
    parser = DsmrStreamParser()
    began = time.perf_counter()
    for chunk in [*chunks, telegram, *chunks]:
        parser.feed(chunk)
    assert parser.buffered <= MAX_TELEGRAM_BYTES + 400
    assert time.perf_counter() - began < FUZZ_TIME_LIMIT_S * 4
