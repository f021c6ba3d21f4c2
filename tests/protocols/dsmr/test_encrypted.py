"""Encrypted P1 (E-MeterP1): frame layout, keys, typed failures, the stream parser, a published vector, fuzz.

The published vector is the DLMS general-glo-ciphering example in the shared corpus
(``dlms/security_vectors.json``, from dlms-cosem 21.3.2, MIT): the same 0xDB envelope, short length
form, AES-128-GCM with a 12-byte tag and AAD = SC || AK that Luxembourg and Austrian P1 ports use.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from openami.protocols.dsmr import (
    AuthenticationError,
    CrcError,
    DecryptionError,
    DsmrError,
    EncryptedFrameError,
    EncryptedP1StreamParser,
    P1Keys,
    TruncatedFrameError,
    WrongKeyError,
    decrypt_frame,
    encrypt_telegram,
    parse_encrypted_telegram,
)
from openami.protocols.dsmr.encrypted import MAX_FRAME_BYTES, frame_header
from openami.simulator.p1_meter import SimulatedP1Meter
from tests.conftest import corpora_dir
from tests.protocols.dlms.fuzzing import FUZZ_TIME_LIMIT_S, assert_value_or_error, truncated_and_mutated

T0 = datetime(2025, 3, 14, 12, 0, 5, tzinfo=UTC)
EK = bytes.fromhex("000102030405060708090A0B0C0D0E0F")
AK = bytes.fromhex("D0D1D2D3D4D5D6D7D8D9DADBDCDDDEDF")
KEYS = P1Keys(EK, AK)
TITLE = b"SAGEMCOM"
TELEGRAM = SimulatedP1Meter(11).telegram(T0)


def _frame(counter: int = 1, telegram: bytes = TELEGRAM) -> bytes:
    return encrypt_telegram(telegram, system_title=TITLE, frame_counter=counter, keys=KEYS)


def test_frame_layout_is_e_meter_p1() -> None:
    frame = _frame(0x01020304)
    assert frame[:2] == b"\xdb\x08" and frame[2:10] == TITLE
    assert frame[10] == 0x82 and int.from_bytes(frame[11:13], "big") == len(frame) - 13
    assert frame[13] == 0x30 and frame[14:18] == bytes([1, 2, 3, 4])
    assert len(frame) == 18 + len(TELEGRAM) + 12
    assert TELEGRAM[:20] not in frame  # the telegram is not readable on the line
    header = frame_header(frame)
    assert header is not None and (header.system_title, header.frame_counter, header.length) == (
        TITLE,
        0x01020304,
        len(frame),
    )


def test_round_trip_gives_the_telegram() -> None:
    opened = decrypt_frame(_frame(7), KEYS)
    assert opened.plaintext == TELEGRAM and opened.authenticated
    telegram = parse_encrypted_telegram(_frame(8), KEYS)
    assert telegram.crc_ok and telegram.equipment_id == "E0099000000000011"
    assert telegram.timestamp == T0


def test_wrong_encryption_key_is_told_apart_from_a_wrong_authentication_key() -> None:
    frame = _frame()
    with pytest.raises(WrongKeyError, match="wrong encryption key"):
        decrypt_frame(frame, P1Keys(bytes(16), AK))
    with pytest.raises(AuthenticationError, match="authentication key"):
        decrypt_frame(frame, P1Keys(EK, bytes(16)))
    with pytest.raises(WrongKeyError):  # without AK, a wrong EK still shows: no telegram comes out
        decrypt_frame(frame, P1Keys(bytes(16), None))


def test_altered_frame_or_tag_fails_authentication() -> None:
    frame = bytearray(_frame())
    frame[-1] ^= 0x01  # the tag
    with pytest.raises(AuthenticationError):
        decrypt_frame(bytes(frame), KEYS)
    frame = bytearray(_frame())
    frame[40] ^= 0x01  # a ciphertext byte: decrypts to a telegram with one flipped bit
    with pytest.raises(AuthenticationError):
        decrypt_frame(bytes(frame), KEYS)


def test_without_authentication_key_the_crc_is_the_integrity_check() -> None:
    opened = decrypt_frame(_frame(), P1Keys(EK, None))
    assert opened.plaintext == TELEGRAM and not opened.authenticated
    frame = bytearray(_frame())
    frame[30] ^= 0x02
    with pytest.raises(CrcError):
        parse_encrypted_telegram(bytes(frame), P1Keys(EK, None))


@pytest.mark.parametrize("cut", [0, 1, 5, 12, 17, 40, -1])
def test_truncated_frames_are_typed(cut: int) -> None:
    frame = _frame()
    with pytest.raises(TruncatedFrameError):
        decrypt_frame(frame[:cut], KEYS)


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        (lambda f: b"\xdc" + f[1:], "not 0xDB"),
        (lambda f: f[:1] + b"\x09" + f[2:], "system title"),
        (lambda f: f[:10] + b"\x83" + f[11:], "length form"),
        (lambda f: f[:13] + b"\x20" + f[14:], "security control"),  # encryption only: authentication stripped
        (lambda f: f[:10] + b"\x82\xff\xff" + f[13:], "exceeds"),
        (lambda f: f[:10] + b"\x05" + f[11:], "cannot hold"),
    ],
)
def test_malformed_headers_are_typed(edit: object, match: str) -> None:
    with pytest.raises(EncryptedFrameError, match=match):
        decrypt_frame(edit(_frame()), KEYS)  # type: ignore[operator]


def test_keys_are_checked_and_never_shown() -> None:
    with pytest.raises(ValueError, match="encryption key"):
        P1Keys(b"short", AK)
    with pytest.raises(ValueError, match="authentication key"):
        P1Keys(EK, b"short")
    assert EK.hex() not in repr(KEYS).lower() and "0001020304" not in repr(KEYS)
    with pytest.raises(ValueError, match="authentication key"):
        encrypt_telegram(TELEGRAM, system_title=TITLE, frame_counter=1, keys=P1Keys(EK, None))


def test_published_general_glo_ciphering_vector() -> None:
    vectors = json.loads((corpora_dir() / "dlms" / "security_vectors.json").read_text())["vectors"]
    vector = next(v for v in vectors if v["name"] == "general_glo_ciphering_data_notification")
    frame = bytes.fromhex(vector["apdu"])
    keys = P1Keys(bytes.fromhex(vector["block_cipher_key"]), bytes.fromhex(vector["authentication_key"]))
    opened = decrypt_frame(frame, keys)
    assert opened.plaintext == bytes.fromhex(vector["expected_plaintext_apdu"])
    assert opened.header.system_title == bytes.fromhex(vector["system_title"])
    assert opened.header.frame_counter == int(vector["invocation_counter"], 16)
    # With the right keys the tag verifies before any look at the plaintext (a DLMS notification, not a
    # telegram); with a wrong AK that plaintext cannot vouch for the EK, so it reads as a wrong key.
    with pytest.raises(DecryptionError):
        decrypt_frame(frame, P1Keys(keys.encryption_key, bytes(16)))


def test_stream_parser_finds_frames_in_noise_and_after_damage() -> None:
    good = [_frame(n) for n in range(1, 6)]
    damaged = good[1][: len(good[1]) // 2]  # cut off: swallows the start of the next frame
    stream = b"\x00\xff noise" + good[0] + damaged + good[2] + b"\xdb\x08junk" + good[3] + good[4]
    parser = EncryptedP1StreamParser(KEYS)
    got = [t for i in range(0, len(stream), 97) for t in parser.feed(stream[i : i + 97])]
    assert len(got) == 4 and all(t.crc_ok for t in got)
    assert parser.last_header is not None and parser.last_header.frame_counter == 5
    assert parser.errors and all(isinstance(e, DsmrError) for e in parser.errors)
    assert parser.buffered == 0


def test_stream_parser_with_wrong_key_yields_nothing_and_stays_bounded() -> None:
    parser = EncryptedP1StreamParser(P1Keys(bytes(16), AK))
    assert parser.feed(b"".join(_frame(n) for n in range(3))) == []
    assert any(isinstance(e, WrongKeyError) for e in parser.errors)
    assert parser.feed(b"\xdb\x08" + TITLE + b"\x82\x40\x00\x30" + b"\x00" * (MAX_FRAME_BYTES + 100)) == []
    assert parser.buffered <= MAX_FRAME_BYTES


# ---------------------------------------------------------------------------------------- fuzzing


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_fuzz_decrypt_ends_in_value_or_typed_error(data: st.DataObject) -> None:
    for raw in truncated_and_mutated(_frame(), data):
        assert_value_or_error(lambda b: parse_encrypted_telegram(b, KEYS), DsmrError, raw)
        assert_value_or_error(lambda b: parse_encrypted_telegram(b, P1Keys(EK, None)), DsmrError, raw)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=600))
def test_fuzz_random_bytes_behind_a_valid_header(junk: bytes) -> None:
    head = b"\xdb\x08" + TITLE + b"\x82" + (len(junk) + 5).to_bytes(2, "big") + b"\x30\x00\x00\x00\x01"
    assert_value_or_error(lambda b: decrypt_frame(b, KEYS), DsmrError, head + junk)
    assert_value_or_error(lambda b: decrypt_frame(b, P1Keys(EK, None)), DsmrError, head + junk)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.one_of(st.binary(max_size=200), st.just(_frame())), max_size=8), st.integers(1, 300))
def test_fuzz_stream_never_raises_and_stays_bounded(pieces: list[bytes], step: int) -> None:
    parser = EncryptedP1StreamParser(KEYS)
    stream = b"".join(pieces)
    began = time.perf_counter()
    for i in range(0, len(stream), step):
        parser.feed(stream[i : i + step])
        assert parser.buffered <= MAX_FRAME_BYTES + step
    assert time.perf_counter() - began < FUZZ_TIME_LIMIT_S * 4
