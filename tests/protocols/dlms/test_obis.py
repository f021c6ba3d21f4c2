"""OBIS codes: the text forms met in configuration, the 6-byte wire form, and refusals."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from openami.protocols.dlms.errors import DecodeError, EncodeError
from openami.protocols.dlms.obis import Obis

ACTIVE_ENERGY_IMPORT = Obis(1, 0, 1, 8, 0, 255)


@pytest.mark.parametrize(
    "text", ["1-0:1.8.0*255", "1-0:1.8.0", "1.0.1.8.0.255", "1.0.1.8.0", " 1-0:1.8.0*255\n"]
)
def test_parse_forms(text: str) -> None:
    assert Obis.parse(text) == ACTIVE_ENERGY_IMPORT


def test_parse_explicit_f() -> None:
    assert Obis.parse("0-0:96.1.0*1") == Obis(0, 0, 96, 1, 0, 1)
    assert Obis.parse("0.0.40.0.0.0") == Obis(0, 0, 40, 0, 0, 0)


def test_text_forms() -> None:
    clock = Obis(0, 0, 1, 0, 0, 255)
    assert str(clock) == "0-0:1.0.0*255"
    assert clock.dotted == "0.0.1.0.0.255"
    assert clock.reduced == "0-0:1.0.0"


def test_bytes() -> None:
    assert ACTIVE_ENERGY_IMPORT.to_bytes() == bytes.fromhex("0100010800FF")
    assert Obis.from_bytes(bytes.fromhex("0000010000FF")) == Obis(0, 0, 1, 0, 0, 255)
    assert Obis.from_bytes(memoryview(bytes.fromhex("0100010800FF"))) == ACTIVE_ENERGY_IMPORT


@pytest.mark.parametrize(
    "text",
    [
        "",
        "1-0:1.8",
        "1-0:1.8.0*",
        "1-0:1.8.0*256",
        "256-0:1.8.0",
        "1-0:1.8.1000",
        "1.0.1.8",
        "1.0.1.8.0.255.1",
        "1-0:C.1.0",
        "a.b.c.d.e",
        "1-0:1.8.0&255",
        "-1-0:1.8.0",
        "1-0:1.8.٣",  # non-ASCII digit
    ],
)
def test_parse_refusals(text: str) -> None:
    with pytest.raises(DecodeError):
        Obis.parse(text)


def test_out_of_range_reason() -> None:
    with pytest.raises(DecodeError, match="out of range"):
        Obis.parse("1-0:1.8.0*300")


@pytest.mark.parametrize("raw", [b"", b"\x01\x00\x01\x08\x00", b"\x01\x00\x01\x08\x00\xff\x00"])
def test_from_bytes_needs_six(raw: bytes) -> None:
    with pytest.raises(DecodeError, match="6 bytes"):
        Obis.from_bytes(raw)


def test_to_bytes_range() -> None:
    with pytest.raises(EncodeError):
        Obis(1, 0, 1, 8, 0, 256).to_bytes()


GROUPS = st.integers(0, 255)


@given(st.builds(Obis, GROUPS, GROUPS, GROUPS, GROUPS, GROUPS, GROUPS))
def test_round_trips(obis: Obis) -> None:
    assert Obis.parse(str(obis)) == obis
    assert Obis.parse(obis.dotted) == obis
    assert Obis.from_bytes(obis.to_bytes()) == obis
    if obis.f == 255:
        assert Obis.parse(obis.reduced) == obis
