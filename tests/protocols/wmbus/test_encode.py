"""The telegram encoder: byte-identical to the hand-built vectors, and read back by the decoder."""

from __future__ import annotations

from datetime import date, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from openami.protocols.wmbus import (
    AuthenticationError,
    DecryptionError,
    KeyRequiredError,
    decode_telegram,
)
from openami.protocols.wmbus.encode import (
    C_SND_IR,
    DF_BCD8,
    DF_INT8,
    DF_INT16,
    DF_INT32,
    DF_REAL32,
    STATUS_ALARM,
    VIF_RANGES,
    date_record,
    date_time_record,
    encode_data,
    encode_link,
    encode_telegram,
    error_flags_record,
    make_address,
    number_record,
    pad_plaintext,
    type_f,
    type_g,
    vif,
)
from openami.protocols.wmbus.errors import EncodeError
from openami.protocols.wmbus.link import Address, strip_crc_format_a
from tests.protocols.wmbus.builders import (
    KEY,
    RECORDS,
    address_bytes,
    frame,
    mode5_telegram,
    mode7_telegram,
)

KAM = Address.from_bytes(address_bytes())
VOLUME = number_record("volume", 12345, exponent=-3)  # 04 13 39300000: the builders' record


def test_records_and_link_match_the_hand_built_vectors() -> None:
    assert RECORDS[2:8] == VOLUME
    assert pad_plaintext(VOLUME) == RECORDS
    body = bytes([0x7A, 0x05, 0x00, 0x00, 0x00]) + RECORDS
    assert encode_link(0x44, KAM, body) == frame(body)
    assert encode_telegram(KAM, RECORDS, access_number=5) == frame(body)


def test_mode5_and_mode7_match_the_hand_built_vectors() -> None:
    assert encode_telegram(KAM, VOLUME, access_number=0x42, security_mode=5, key=KEY) == mode5_telegram()
    mode7 = encode_telegram(KAM, VOLUME, access_number=0x10, security_mode=7, key=KEY, message_counter=7)
    assert mode7 == mode7_telegram()


def _records() -> bytes:
    return b"".join(
        [
            number_record("energy", 123_456, exponent=3, data_field=DF_BCD8),  # kWh, BCD
            number_record("volume", 98_765, exponent=-3),
            number_record("volume_flow", 321, exponent=-3, data_field=DF_INT16),
            number_record("flow_temperature", 705, exponent=-1, data_field=DF_INT16),
            number_record("return_temperature", 412, exponent=-1, data_field=DF_INT16),
            number_record("power", 1.5, exponent=3, data_field=DF_REAL32),
            date_time_record(datetime(2026, 11, 22, 6, 15)),
            error_flags_record(0x21),
            number_record("energy", 120_000, exponent=3, data_field=DF_BCD8, storage=1),
            date_record(date(2026, 10, 31), storage=1),
            number_record("energy", 5, exponent=3, tariff=2, function=1),
        ]
    )


EXPECTED = [
    ("energy", 123_456_000, 0, 0, "instantaneous"),
    ("volume", pytest.approx(98.765), 0, 0, "instantaneous"),
    ("volume_flow", pytest.approx(0.321), 0, 0, "instantaneous"),
    ("flow_temperature", pytest.approx(70.5), 0, 0, "instantaneous"),
    ("return_temperature", pytest.approx(41.2), 0, 0, "instantaneous"),
    ("power", pytest.approx(1500.0), 0, 0, "instantaneous"),
    ("date_time", "2026-11-22T06:15:00", 0, 0, "instantaneous"),
    ("error_flags", 0x21, 0, 0, "instantaneous"),
    ("energy", 120_000_000, 1, 0, "instantaneous"),
    ("date", "2026-10-31", 1, 0, "instantaneous"),
    ("energy", 5000, 0, 2, "maximum"),
]


@pytest.mark.parametrize("mode", [0, 5, 7])
@pytest.mark.parametrize("frame_format", ["stripped", "A", "B"])
def test_round_trip_every_mode_and_frame_format(mode: int, frame_format: str) -> None:
    meter = make_address("OAM", "87654321", 0x02, 0x04)
    data = encode_telegram(
        meter,
        _records(),
        c_field=C_SND_IR,
        access_number=0xA5,
        status=STATUS_ALARM,
        security_mode=mode,  # type: ignore[arg-type]
        key=KEY,
        message_counter=0x01020304,
        frame_format=frame_format,  # type: ignore[arg-type]
    )
    telegram = decode_telegram(data, key=KEY, crc="B" if frame_format == "B" else "auto")
    assert telegram.link.frame_format == ("stripped" if frame_format == "stripped" else frame_format)
    assert telegram.is_installation and telegram.address.id == "87654321"
    assert (telegram.access_number, telegram.status, telegram.security_mode) == (0xA5, STATUS_ALARM, mode)
    assert telegram.decrypted == bool(mode)
    got = [(r.quantity, r.value, r.storage, r.tariff, r.function) for r in telegram.records]
    assert got == EXPECTED
    if mode == 7:
        assert telegram.afl is not None and telegram.afl.message_counter == 0x01020304


def test_long_header_names_the_meter_and_keys_its_iv() -> None:
    module = make_address("OAM", "00000001", 0x01, 0x37)  # radio converter (meter side)
    meter = make_address("OAM", "12345678", 0x03, 0x07)
    data = encode_telegram(module, VOLUME, meter_address=meter, access_number=3, security_mode=5, key=KEY)
    telegram = decode_telegram(data, key=KEY)
    assert telegram.tpl is not None and telegram.tpl.ci == 0x72
    assert telegram.address == meter and telegram.link.address == module
    assert telegram.records[0].value == pytest.approx(12.345)


def test_plain_tail_after_the_encrypted_blocks() -> None:
    tail = error_flags_record(0)
    data = encode_telegram(KAM, VOLUME, access_number=1, security_mode=5, key=KEY, plain_tail=tail)
    telegram = decode_telegram(data, key=KEY)
    assert telegram.application_data == RECORDS + tail
    assert [r.quantity for r in telegram.records] == ["volume", "error_flags"]


def test_wrong_and_missing_keys_are_typed_errors() -> None:
    mode5 = encode_telegram(KAM, VOLUME, security_mode=5, key=KEY)
    mode7 = encode_telegram(KAM, VOLUME, security_mode=7, key=KEY, message_counter=9)
    for data in (mode5, mode7):
        with pytest.raises(KeyRequiredError):
            decode_telegram(data)
    with pytest.raises(DecryptionError):
        decode_telegram(mode5, key=bytes(16))
    with pytest.raises(AuthenticationError):
        decode_telegram(mode7, key=bytes(16))


def test_format_a_crcs_are_those_the_link_layer_checks() -> None:
    stripped = encode_telegram(KAM, _records())
    assert strip_crc_format_a(encode_telegram(KAM, _records(), frame_format="A")) == stripped


def test_data_codings() -> None:
    assert encode_data(-2, DF_INT16) == b"\xfe\xff"
    assert encode_data(12345678, DF_BCD8) == bytes.fromhex("78563412")
    assert encode_data(-1234567, DF_BCD8) == bytes.fromhex("674523F1")
    assert encode_data(0xFF, DF_INT8, signed=False) == b"\xff"
    assert type_f(datetime(2026, 11, 22, 6, 15)) == bytes([15, 6, 22 | (2 << 5), 11 | (3 << 4)])
    assert type_g(date(2026, 11, 22)) == bytes([22 | (2 << 5), 11 | (3 << 4)])
    assert vif("energy", 3) == b"\x06" and vif("volume", -3) == b"\x13" and vif("volume_flow", -3) == b"\x3b"
    assert vif("flow_temperature", -1) == b"\x5a" and vif("return_temperature", -1) == b"\x5e"


def test_type_f_past_2080_uses_the_hundred_years_bits() -> None:
    data = encode_telegram(KAM, date_time_record(datetime(2091, 1, 2, 3, 4)))
    assert decode_telegram(data).records[0].value == "2091-01-02T03:04:00"


@pytest.mark.parametrize(
    "build",
    [
        lambda: encode_data(256, DF_INT8),
        lambda: encode_data(128, DF_INT8),
        lambda: encode_data(123_456_789, DF_BCD8),
        lambda: encode_data(1.5, DF_INT32),
        lambda: vif("energy", 5),
        lambda: vif("colour", 0),
        lambda: type_g(date(2099, 1, 1)),
        lambda: make_address("kam", "12345678", 1, 7),
        lambda: make_address("KAM", "1234567", 1, 7),
        lambda: encode_telegram(KAM, VOLUME, security_mode=5),
        lambda: encode_telegram(KAM, VOLUME, security_mode=5, key=bytes(15)),
        lambda: encode_telegram(KAM, VOLUME, security_mode=2),  # type: ignore[arg-type]
        lambda: encode_telegram(KAM, bytes(240), security_mode=5, key=KEY),  # 16 blocks
        lambda: encode_telegram(KAM, bytes(250)),  # L overflows
        lambda: encode_telegram(KAM, VOLUME, access_number=256),
    ],
)
def test_impossible_telegrams_are_encode_errors(build: object) -> None:
    with pytest.raises(EncodeError):
        build()  # type: ignore[operator]


_RECORD = st.tuples(
    st.sampled_from(sorted(VIF_RANGES)),
    st.integers(-(2**31), 2**31 - 1),
    st.integers(0, 3),
    st.integers(0, 1),
)


@settings(max_examples=150, deadline=None)
@given(
    st.lists(_RECORD, max_size=12),
    st.sampled_from([0, 5, 7]),
    st.integers(0, 255),
    st.integers(0, 0xFFFF_FFFF),
    st.sampled_from(["stripped", "A", "B"]),
)
def test_fuzz_round_trip(
    records: list[tuple[str, int, int, int]], mode: int, access: int, counter: int, frame_format: str
) -> None:
    """Whatever records, mode and counters: the decoder gives back the values the encoder was given."""
    encoded = b""
    expected = []
    for quantity, value, tariff, storage in records:
        low = VIF_RANGES[quantity][1]
        encoded += number_record(
            quantity, value, exponent=low, data_field=DF_INT32, tariff=tariff, storage=storage
        )
        expected.append((quantity, value, tariff, storage))
    data = encode_telegram(
        KAM,
        encoded,
        access_number=access,
        security_mode=mode,  # type: ignore[arg-type]
        key=KEY,
        message_counter=counter,
        frame_format=frame_format,  # type: ignore[arg-type]
    )
    telegram = decode_telegram(data, key=KEY, crc="B" if frame_format == "B" else "auto")
    assert telegram.access_number == access
    got = [r for r in telegram.records]
    assert len(got) == len(expected)
    for record, (quantity, value, tariff, storage) in zip(got, expected, strict=True):
        low = VIF_RANGES[quantity][1]
        assert (record.quantity, record.tariff, record.storage) == (quantity, tariff, storage)
        assert record.value == pytest.approx(value * 10.0**low, rel=1e-12)
