"""The FEP's pure parts: the identification parser (exact cases and fuzzing), the allow list, the options
and the fep:// / fep+hdlc:// address schemes."""

from __future__ import annotations

import re
import time
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import create_engine

from openami.hes.dlms_targets import AddressError, DlmsEndpoint, parse_address
from openami.hes.fep import (
    DEFAULT_IDENT_PATTERN,
    MAX_IDENT_LINE,
    FrontEndProcessor,
    IdentificationError,
    IdentParser,
    compile_ident_pattern,
    parse_allow_list,
)

DEFAULT = compile_ident_pattern(DEFAULT_IDENT_PATTERN)


def _parse(*chunks: bytes, pattern: re.Pattern[str] = DEFAULT) -> tuple[str | None, bytes]:
    parser = IdentParser(pattern)
    found = None
    for chunk in chunks:
        found = parser.feed(chunk)
        if found is not None:
            break
    return found, parser.rest


@pytest.mark.parametrize(
    ("chunks", "ident", "rest"),
    [
        ((b"ID:MODEM-1\r\n",), "MODEM-1", b""),
        ((b"MODEM-1\n",), "MODEM-1", b""),
        ((b"id:356938035643809\r",), "356938035643809", b""),
        ((b"\r\n\r\nID:A.b_c:9@x+y\r\n",), "A.b_c:9@x+y", b""),  # empty lines before it are skipped
        ((b"  ID:GW7 \t\r\n",), "GW7", b""),
        (
            (b"I", b"D:M", b"1", b"\r", b"\n\x00\x01"),
            "M1",
            b"",
        ),  # split anyhow; the LF of CR LF starts the next chunk
        ((b"ID:M1\r\n\x00\x01\x02",), "M1", b"\x00\x01\x02"),  # what follows is not part of the line
        ((b"ID:M1\r\r",), "M1", b"\r"),
    ],
)
def test_identification_lines(chunks: tuple[bytes, ...], ident: str, rest: bytes) -> None:
    found, after = _parse(*chunks)
    assert found == ident
    if len(chunks) == 1:
        assert after == rest


def test_a_cr_at_the_end_of_a_segment_tells_that_a_lf_may_follow() -> None:
    parser = IdentParser(DEFAULT)
    assert parser.feed(b"ID:M1\r") == "M1"
    assert parser.lf_may_follow and parser.rest == b""
    for whole in (b"ID:M1\r\n", b"ID:M1\n", b"ID:M1\rx"):
        parser = IdentParser(DEFAULT)
        assert parser.feed(whole) == "M1"
        assert not parser.lf_may_follow


@pytest.mark.parametrize(
    "line",
    [
        b"ID:\r\n",
        b"ID:two words\r\n",
        b"ID:-leading-dash\r\n",
        b"ID:" + b"A" * 65 + b"\r\n",  # longer than comm_device.ident
        b"\xc3\xa9t\xc3\xa9\r\n",
        b"ID:M1\x07\r\n",
        b"x" * (MAX_IDENT_LINE + 1),
        b"\r\n" * (MAX_IDENT_LINE // 2 + 1),  # empty lines count against the bound too
    ],
)
def test_what_is_no_identification(line: bytes) -> None:
    with pytest.raises(IdentificationError):
        _parse(line)


def test_a_line_of_exactly_the_bound_is_read_and_nothing_after_an_answer_is() -> None:
    line = b"ID:" + b"7" * 60 + b" " * (MAX_IDENT_LINE - 64) + b"\n"
    assert len(line) == MAX_IDENT_LINE
    assert _parse(line)[0] == "7" * 60
    parser = IdentParser(DEFAULT)
    assert parser.feed(b"M\n") == "M"
    with pytest.raises(IdentificationError):
        parser.feed(b"more")


def test_a_custom_pattern_needs_an_ident_group() -> None:
    imei = compile_ident_pattern(r"IMEI=(?P<ident>\d{15})")
    assert _parse(b"IMEI=356938035643809\r\n", pattern=imei)[0] == "356938035643809"
    with pytest.raises(IdentificationError):
        _parse(b"ID:356938035643809\r\n", pattern=imei)
    with pytest.raises(ValueError, match="no group named 'ident'"):
        compile_ident_pattern(r"ID:(\w+)")
    with pytest.raises(ValueError, match="not a regular expression"):
        compile_ident_pattern(r"ID:(?P<ident>")


@settings(max_examples=400, deadline=None)
@given(st.lists(st.binary(max_size=80), max_size=8))
def test_fuzzed_input_ends_in_an_ident_more_please_or_a_typed_error(chunks: list[bytes]) -> None:
    parser = IdentParser(DEFAULT)
    started = time.perf_counter()
    for chunk in chunks:
        try:
            found = parser.feed(chunk)
        except IdentificationError:
            break
        if found is not None:
            assert 1 <= len(found) <= 64 and found.isprintable()
            break
    else:
        fed = sum(len(c) for c in chunks)
        assert fed <= MAX_IDENT_LINE  # more than the bound without a line is always an error
    assert time.perf_counter() - started < 0.5


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=100))
def test_fuzzed_text_lines_with_the_default_pattern(text: str) -> None:
    line = text.encode() + b"\r\n"
    try:
        found = _parse(line)[0]
    except IdentificationError:
        return
    if found is None:
        assert text == ""  # an empty line is skipped: the identification is still to come
        return
    assert text.strip(" \t").endswith(found)


def test_allow_lists() -> None:
    networks = parse_allow_list(["10.0.0.0/8", "192.0.2.7", "2001:db8::/32", " ::1 "])
    assert [str(n) for n in networks] == ["10.0.0.0/8", "192.0.2.7/32", "2001:db8::/32", "::1/128"]
    for wrong in (["10.0.0.1/8"], ["300.0.0.0/8"], ["example.org"], []):
        with pytest.raises(ValueError, match="allow list"):
            parse_allow_list(wrong)


@pytest.mark.parametrize(
    "options",
    [
        {"identify_timeout_s": 0},
        {"max_connections": 0},
        {"max_per_device": 0},
        {"idle_timeout_s": -1},
        {"allow": ("10.0.0.1/8",)},
        {"ident_pattern": "(?P<id>.*)"},
    ],
)
def test_options_are_checked_when_built(options: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match=r"must|allow list|no group"):
        FrontEndProcessor("127.0.0.1", 0, create_engine("sqlite://"), **options)


def test_fep_addresses() -> None:
    assert parse_address("fep://MODEM-SIM00000001") == DlmsEndpoint(
        framing="wrapper", host="MODEM-SIM00000001", port=0, via="fep"
    )
    assert parse_address("fep+hdlc://Conc%2F7?physical=17&client=16&server=1&auth=lls") == DlmsEndpoint(
        framing="hdlc",
        host="Conc/7",
        port=0,
        client_sap=16,
        server_sap=1,
        physical_address=17,
        auth="lls",
        via="fep",
    )
    assert parse_address("tcp://10.0.0.1:4059").via == "tcp"
    for wrong in ("fep://", "fep://MODEM/path", "fep://a%20b", "fep://" + "x" * 65, "fep://M?auth=rsa"):
        with pytest.raises(AddressError):
            parse_address(wrong)
