"""Security modes 2, 3 (DES), 5 and 7 and ELL AES-CTR against vectors built here with the raw primitives."""

from __future__ import annotations

import json

import pytest

from openami.protocols.wmbus import (
    AuthenticationError,
    DecryptionError,
    KeyRequiredError,
    UnsupportedSecurityModeError,
    decode_telegram,
)
from openami.protocols.wmbus.link import Address, crc16_en13757
from openami.protocols.wmbus.security import decrypt_ell, derive_mode7_keys, encrypt_ell
from tests.conftest import corpora_dir
from tests.protocols.wmbus.builders import (
    KEY,
    METER_ID,
    RECORDS,
    address_bytes,
    aes_cbc,
    aes_cmac,
    frame,
    mode5_telegram,
    mode7_telegram,
)


def test_mode5_decrypts() -> None:
    telegram = decode_telegram(mode5_telegram(), key=KEY)
    assert telegram.decrypted
    assert telegram.application_data == RECORDS
    assert telegram.access_number == 0x42
    assert telegram.security_mode == 5


def test_mode5_wrong_key() -> None:
    with pytest.raises(DecryptionError):
        decode_telegram(mode5_telegram(), key=bytes(16))


def test_mode5_without_key() -> None:
    with pytest.raises(KeyRequiredError):
        decode_telegram(mode5_telegram())


def test_mode5_already_decrypted_by_receiver() -> None:
    header = bytes([0x7A, 0x42, 0x00]) + ((5 << 8) | (1 << 4)).to_bytes(2, "little")
    telegram = decode_telegram(frame(header + RECORDS))
    assert not telegram.decrypted
    assert telegram.application_data == RECORDS


def test_mode5_plain_tail_after_encrypted_blocks() -> None:
    iv = address_bytes() + bytes([1]) * 8
    header = bytes([0x7A, 0x01, 0x00]) + ((5 << 8) | (1 << 4)).to_bytes(2, "little")
    tail = bytes.fromhex("02FD170000")
    telegram = decode_telegram(frame(header + aes_cbc(KEY, iv, RECORDS) + tail), key=KEY)
    assert telegram.application_data == RECORDS + tail


def test_mode7_kdf_matches_cmac() -> None:
    kenc, kmac = derive_mode7_keys(KEY, 7, METER_ID)
    tail = (7).to_bytes(4, "little") + METER_ID + b"\x07" * 7
    assert kenc == aes_cmac(KEY, b"\x00" + tail)
    assert kmac == aes_cmac(KEY, b"\x01" + tail)
    assert kenc != kmac


def test_mode7_decrypts_and_verifies_mac() -> None:
    telegram = decode_telegram(mode7_telegram(), key=KEY)
    assert telegram.decrypted
    assert telegram.application_data == RECORDS
    assert telegram.afl is not None and telegram.afl.message_counter == 7
    assert telegram.afl.mac and telegram.tpl is not None and telegram.tpl.config_extension == 0x10


def test_mode7_tampered_mac() -> None:
    with pytest.raises(AuthenticationError):
        decode_telegram(mode7_telegram(tamper=True), key=KEY)


def test_mode7_wrong_key() -> None:
    with pytest.raises(DecryptionError):
        decode_telegram(mode7_telegram(), key=bytes(16))


def test_ell_ctr_round_trip_and_wrong_key() -> None:
    address = Address.from_bytes(address_bytes())
    session = (1 << 29) | 0x12345
    ciphertext = encrypt_ell(KEY, address, 0x20, session, RECORDS)
    assert decrypt_ell(KEY, address, 0x20, session, ciphertext) == (crc16_en13757(RECORDS), RECORDS)
    ell = bytes([0x8D, 0x20, 0x33]) + session.to_bytes(4, "little")
    telegram = decode_telegram(
        frame(ell + encrypt_ell(KEY, address, 0x20, session, b"\x78" + RECORDS)), key=KEY
    )
    assert telegram.decrypted and telegram.application_data == RECORDS
    assert telegram.access_number == 0x33
    with pytest.raises(DecryptionError):
        decode_telegram(
            frame(ell + encrypt_ell(KEY, address, 0x20, session, b"\x78" + RECORDS)), key=bytes(16)
        )
    with pytest.raises(KeyRequiredError):
        decode_telegram(frame(ell + encrypt_ell(KEY, address, 0x20, session, b"\x78" + RECORDS)))


def test_ell_counter_block_layout() -> None:
    # Independent construction: AES-CTR keystream = AES-ECB(counter block) for the first 16 bytes.
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

    address = Address.from_bytes(address_bytes())
    block = address_bytes() + b"\x20" + (0x20000001).to_bytes(4, "little") + b"\x00\x00\x00"
    enc = Cipher(algorithms.AES(KEY), modes.ECB()).encryptor()
    keystream = enc.update(block) + enc.finalize()
    data = bytes(14)
    ciphertext = encrypt_ell(KEY, address, 0x20, 0x20000001, data)
    plain = crc16_en13757(data).to_bytes(2, "little") + data
    assert ciphertext == bytes(a ^ b for a, b in zip(plain, keystream, strict=True))


def test_unsupported_mode() -> None:
    header = bytes([0x7A, 0x01, 0x00]) + ((4 << 8) | (1 << 4)).to_bytes(2, "little")  # mode 4: DES-CBC-KDF
    with pytest.raises(UnsupportedSecurityModeError):
        decode_telegram(frame(header + bytes(16)), key=KEY)


def test_a_des_telegram_needs_a_des_key() -> None:
    header = bytes([0x7A, 0x01, 0x00]) + ((2 << 8) | (1 << 4)).to_bytes(2, "little")
    with pytest.raises(DecryptionError, match="DES key"):
        decode_telegram(frame(header + bytes(16)), key=KEY)


def test_corpus_mode5_cross_check() -> None:
    """A corpus telegram decrypted with the raw primitive (IV built here) equals decode_telegram's output."""
    rows = [
        json.loads(line)
        for line in (corpora_dir() / "wmbus-wmbusmeters" / "driver_tests.jsonl").read_text().splitlines()
    ]
    row = next(r for r in rows if r["driver"] == "kaden")
    data, key = bytes.fromhex(row["telegram_hex"]), bytes.fromhex(row["key"])
    assert data[10] == 0x7A
    iv = data[2:10] + bytes([data[11]]) * 8
    blocks = (data[13] >> 4) & 0x0F
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

    dec = Cipher(algorithms.AES(key), modes.CBC(iv)).decryptor()
    expected = dec.update(data[15 : 15 + 16 * blocks]) + dec.finalize()
    assert expected[:2] == b"\x2f\x2f"
    telegram = decode_telegram(data, key=key)
    assert telegram.application_data[: 16 * blocks] == expected


@pytest.mark.parametrize("mode", [2, 3])
def test_des_modes_round_trip_and_refuse_a_wrong_key(mode: int) -> None:
    from openami.protocols.wmbus.link import Address
    from openami.protocols.wmbus.security import decrypt_des, encrypt_des

    address = Address.from_bytes(bytes.fromhex("8B05010000000407"))
    plain = bytes.fromhex("2F2F0413E80300002F2F2F2F2F2F2F2F")
    key = bytes.fromhex("0102030405060708")
    cipher = encrypt_des(key, mode, address, plain)
    assert cipher != plain and decrypt_des(key, mode, address, cipher, 1) == plain
    with pytest.raises(DecryptionError):
        decrypt_des(bytes(8), mode, address, cipher, 1)
    with pytest.raises(DecryptionError, match="8 bytes"):
        decrypt_des(bytes(16), mode, address, cipher, 1)
