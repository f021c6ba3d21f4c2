"""The SML encoder: byte-exact against public meter dumps, and decoded back to what was encoded."""

from __future__ import annotations

import pytest

from openami.protocols.dlms.obis import Obis
from openami.protocols.sml import GetListResponse, OpenResponse, SmlEncodeError, parse_file, values
from openami.protocols.sml.encode import (
    Int,
    Node,
    encode,
    file,
    list_entry,
    message,
    meter_push,
    open_response,
    time_sec_index,
)
from tests.protocols.sml.test_sml import EMH_OPEN, FORUM_OPEN

SERVER = bytes.fromhex("0A01454D480000B97735")


def test_open_responses_of_real_meters_are_reproduced_byte_for_byte() -> None:
    emh = message(
        bytes.fromhex("001404821729"), 0x0101, open_response(b"EMHXXXXX", bytes.fromhex("001401D4B263"))
    )
    assert emh == EMH_OPEN + bytes.fromhex("63AE74") + b"\x00"  # the dump's own CRC
    forum = message(
        bytes.fromhex("00a0d9b6"),
        0x0101,
        open_response(
            SERVER,
            bytes.fromhex("00359de8"),
            client_id=b"\xff" * 6,
            ref_time=time_sec_index(0x0023C977),
            sml_version=1,
        ),
    )
    assert forum == FORUM_OPEN + bytes.fromhex("636416") + b"\x00"


def _entries(import_tenth_wh: int, export_tenth_wh: int, power_tenth_w: int) -> list[Node]:
    """What an ISKRA MT175 / EMH eHZ sends: manufacturer, server id, registers as int64 with scaler -1."""
    return [
        list_entry(bytes.fromhex("8181C78203FF"), b"ISK"),
        list_entry(Obis(1, 0, 0, 0, 9), SERVER),
        list_entry(
            Obis(1, 0, 1, 8, 0), Int(import_tenth_wh, 8, True), unit=30, scaler=-1, status=Int(0x182, 3)
        ),
        list_entry(Obis(1, 0, 2, 8, 0), Int(export_tenth_wh, 8, True), unit=30, scaler=-1),
        list_entry(Obis(1, 0, 16, 7, 0), Int(power_tenth_w, 4, True), unit=27, scaler=-1),
    ]


@pytest.mark.parametrize("power", [0, 3215, -1520])  # consuming, idle, feeding in
def test_meter_push_round_trips(power: int) -> None:
    data = meter_push(
        SERVER, _entries(123_456_789, 42, power), file_id=0x00A0D9B6, sensor_time=time_sec_index(77)
    )
    sml = parse_file(data)
    assert sml.crc_ok and all(m.crc_ok for m in sml.messages)
    assert len(data) % 4 == 0
    opened = sml.messages[0].body
    assert isinstance(opened, OpenResponse) and opened.server_id == SERVER
    listed = sml.messages[1].body
    assert isinstance(listed, GetListResponse) and listed.act_sensor_time is not None
    assert listed.act_sensor_time.sec_index == 77
    assert [m.transaction_id for m in sml.messages] == [
        bytes.fromhex("00A0D9B6") + bytes([i]) for i in (1, 2, 3)
    ]
    got = {r.name: (r.value, r.unit, r.server_id) for r in values(sml)}
    assert got["1-0:1.8.0"] == (12_345_678.9, "Wh", SERVER.hex().upper())
    assert got["1-0:2.8.0"] == (4.2, "Wh", SERVER.hex().upper())
    assert got["1-0:16.7.0"][:2] == (power / 10, "W")
    assert got["129-129:199.130.3"][0] == "ISK"
    assert got["1-0:0.0.9"][0] == SERVER.hex().upper()


def test_escape_sequences_in_values_survive_the_round_trip() -> None:
    for run in range(1, 13):
        entry = list_entry(Obis(1, 0, 96, 1, 0), b"\x1b" * run)
        data = meter_push(SERVER, [entry], file_id=run)
        assert values(parse_file(data))[0].value == "1B" * run


def test_encoder_refuses_what_does_not_fit() -> None:
    with pytest.raises(SmlEncodeError):
        encode(Int(256, 1))
    with pytest.raises(SmlEncodeError):
        encode(Int(-129, 1, True))
    with pytest.raises(SmlEncodeError):
        encode(Int(1, 9))
    with pytest.raises(SmlEncodeError):
        encode(-1)
    with pytest.raises(ValueError, match="TL field"):  # SmlEncodeError is a ValueError too
        encode(b"x" * 0x10000)


def test_file_with_explicit_crc_is_refused_by_the_decoder() -> None:
    from openami.protocols.sml import SmlCrcError

    with pytest.raises(SmlCrcError):
        parse_file(file(message(b"\x01", 0x0201, [None]), crc=0))
