"""general-ciphering (0xDD), security suite 0: round trips, the header, refusals, fuzz, push decoding."""

from __future__ import annotations

import contextlib
import json
import time
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from typer.testing import CliRunner

from openami.cli import app
from openami.protocols.dlms.errors import DecodeError, DecryptionError, DlmsError, EncodeError, SecurityError
from openami.protocols.dlms.security import (
    GENERAL_CIPHERING,
    GeneralCipheringError,
    GeneralCipheringHeader,
    KeyId,
    KeyInfoNotSupported,
    SecurityControl,
    decrypt,
    encrypt,
    encrypt_general_ciphering,
    general_ciphering_header,
)
from openami.protocols.dlms.stream import decode_stream
from tests.protocols.dlms.fuzzing import FUZZ_TIME_LIMIT_S

EK = bytes(range(16))
AK = bytes(range(0xD0, 0xE0))
ORIGINATOR = bytes.fromhex("4D4D4D0000BC614E")
RECIPIENT = b"OPENAMI1"
DATE_TIME = bytes.fromhex("07E80101FF000000FF800000")
# DataNotification: invoke id, no date-time, body = structure { visible-string "M1" }
PUSH = bytes.fromhex("0F00000001" + "00" + "0201" + "0A024D31")
AUTH_ENC = SecurityControl(suite=0, authenticated=True, encrypted=True)
HEADER = GeneralCipheringHeader(
    transaction_id=bytes.fromhex("0102030405060708"),
    originator_system_title=ORIGINATOR,
    recipient_system_title=RECIPIENT,
    date_time=DATE_TIME,
    other_information=b"",
    key_id=KeyId.GLOBAL_UNICAST_ENCRYPTION_KEY,
)


def _sealed(plaintext: bytes = PUSH, **changes: Any) -> bytes:
    options: dict[str, Any] = {
        "header": HEADER,
        "security_control": AUTH_ENC,
        "invocation_counter": 0x01234567,
        "encryption_key": EK,
        "authentication_key": AK,
    }
    options.update(changes)
    return encrypt_general_ciphering(plaintext, **options)


def test_wire_layout() -> None:
    raw = _sealed()
    header = (
        "DD"
        "08 0102030405060708"  # transaction-id
        "08 4D4D4D0000BC614E"  # originator-system-title
        "08" + RECIPIENT.hex() + "0C" + DATE_TIME.hex() + "00"  # other-information: empty
        "01 00 00"  # key-info present: identified-key, global-unicast-encryption-key
    )
    prefix = bytes.fromhex(header.replace(" ", ""))
    assert raw.startswith(prefix)
    content = raw[len(prefix) + 1 :]
    assert raw[len(prefix)] == len(content) == 5 + len(PUSH) + 12  # SC, IC, ciphertext, 12-byte tag
    assert content[:5] == bytes.fromhex("3001234567")


def test_suite_0_content_is_the_same_as_general_glo() -> None:
    """Same IV (originator title and counter) and same AAD (SC || AK): the same ciphered content."""
    general_glo = encrypt(
        PUSH,
        security_control=AUTH_ENC,
        system_title=ORIGINATOR,
        invocation_counter=0x01234567,
        encryption_key=EK,
        authentication_key=AK,
        general=True,
    )
    assert _sealed().endswith(general_glo[1 + 1 + 8 :])


@pytest.mark.parametrize(
    "control",
    [
        AUTH_ENC,
        SecurityControl(suite=0, authenticated=True, encrypted=False),
        SecurityControl(suite=0, authenticated=False, encrypted=True),
    ],
)
@pytest.mark.parametrize(
    "header",
    [
        HEADER,
        GeneralCipheringHeader(b"", ORIGINATOR),
        GeneralCipheringHeader(b"\x01", ORIGINATOR, b"", b"", b"note", KeyId.GLOBAL_BROADCAST_ENCRYPTION_KEY),
    ],
)
def test_round_trip(control: SecurityControl, header: GeneralCipheringHeader) -> None:
    raw = _sealed(header=header, security_control=control)
    result = decrypt(raw, encryption_key=EK, authentication_key=AK)
    assert result.plaintext == PUSH
    assert result.security_control == control
    assert result.invocation_counter == 0x01234567
    assert result.system_title == ORIGINATOR
    assert result.general == header
    assert general_ciphering_header(raw) == header


def test_wrong_key_is_a_typed_error() -> None:
    with pytest.raises(DecryptionError):
        decrypt(_sealed(), encryption_key=bytes(16), authentication_key=AK)
    with pytest.raises(DecryptionError):
        decrypt(_sealed(), encryption_key=EK, authentication_key=bytes(16))


def test_tampered_tag_or_ciphertext_is_a_typed_error() -> None:
    raw = bytearray(_sealed())
    for index in (len(raw) - 1, len(raw) - 12, len(raw) - 13):
        tampered = bytearray(raw)
        tampered[index] ^= 0x01
        with pytest.raises(DecryptionError):
            decrypt(bytes(tampered), encryption_key=EK, authentication_key=AK)


def test_key_transport_and_agreement_are_refused_clearly() -> None:
    raw = _sealed()
    key_info = raw.index(bytes.fromhex("010000"), 40)
    for choice, kind in ((1, "wrapped-key"), (2, "agreed-key")):
        other = raw[:key_info] + bytes((1, choice)) + raw[key_info + 2 :]
        with pytest.raises(KeyInfoNotSupported, match=kind):
            decrypt(other, encryption_key=EK, authentication_key=AK)
        with pytest.raises(KeyInfoNotSupported):
            general_ciphering_header(other)
    for bad in (bytes((1, 3, 0)), bytes((1, 0, 2)), bytes((2,))):
        other = raw[:key_info] + bad + raw[key_info + 3 :]
        with pytest.raises(GeneralCipheringError):
            decrypt(other, encryption_key=EK, authentication_key=AK)


def test_originator_must_be_a_system_title() -> None:
    raw = bytes((GENERAL_CIPHERING, 0, 4)) + b"ABCD" + bytes(4) + bytes.fromhex("06300000000100")
    with pytest.raises(GeneralCipheringError, match="originator"):
        decrypt(raw, encryption_key=EK, authentication_key=AK)
    with pytest.raises(GeneralCipheringError):
        general_ciphering_header(b"\xdb\x00")


def test_every_truncation_is_a_decode_error() -> None:
    raw = _sealed()
    header_length = len(raw) - 1 - (5 + len(PUSH) + 12)
    for n in range(1, len(raw)):
        with pytest.raises(DecodeError) as caught:
            decrypt(raw[:n], encryption_key=EK, authentication_key=AK)
        if n < header_length:  # inside the header: also a SecurityError, as 0xDD always was
            assert isinstance(caught.value, GeneralCipheringError)
            assert isinstance(caught.value, SecurityError)


def test_encode_checks() -> None:
    with pytest.raises(SecurityError):
        _sealed(header=GeneralCipheringHeader(b"", ORIGINATOR[:4]))
    with pytest.raises(EncodeError):
        _sealed(invocation_counter=2**32)
    with pytest.raises(EncodeError):
        _sealed(header=GeneralCipheringHeader(b"", ORIGINATOR, key_id=7))  # type: ignore[arg-type]
    with pytest.raises(SecurityError):
        _sealed(authentication_key=None)


@given(st.data())
def test_fuzz_mutations_fail_typed_and_fast(data: st.DataObject) -> None:
    raw = bytearray(_sealed())
    for _ in range(data.draw(st.integers(1, 4))):
        raw[data.draw(st.integers(0, len(raw) - 1))] = data.draw(st.integers(0, 255))
    started = time.perf_counter()
    with contextlib.suppress(DlmsError):
        decrypt(bytes(raw), encryption_key=EK, authentication_key=AK)
    assert time.perf_counter() - started < FUZZ_TIME_LIMIT_S


@given(st.binary(max_size=200))
def test_fuzz_random_bodies(body: bytes) -> None:
    started = time.perf_counter()
    with contextlib.suppress(DlmsError):
        decrypt(bytes((GENERAL_CIPHERING,)) + body, encryption_key=EK, authentication_key=AK)
    assert time.perf_counter() - started < FUZZ_TIME_LIMIT_S


# -------------------------------------------------------------------------------------- push decoding


def test_stream_decodes_general_ciphering_pushes() -> None:
    result = decode_stream(_sealed(), encryption_key=EK, authentication_key=AK)
    assert not result.errors
    assert len(result.notifications) == 1
    without_key = decode_stream(_sealed())
    assert without_key.notifications == []
    assert any("no encryption key" in error for error in without_key.errors)


def test_decode_cli_accepts_general_ciphering() -> None:
    result = CliRunner().invoke(
        app, ["decode", "dlms", "--hex", _sealed().hex(), "--key", EK.hex(), "--auth-key", AK.hex(), "--json"]
    )
    assert result.exit_code == 0, result.stderr
    assert len(json.loads(result.stdout)) == 1
