"""Security suite 0: published Green Book vectors, round trips, tampering, replay and fuzzing."""

from __future__ import annotations

import contextlib
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from openami.protocols.dlms.errors import (
    DecodeError,
    DecryptionError,
    DlmsError,
    EncodeError,
    ReplayError,
    SecurityError,
)
from openami.protocols.dlms.security import (
    DED_TAGS,
    GENERAL_CIPHERING,
    GLO_TAGS,
    PLAIN_TAGS,
    InvocationCounterGuard,
    SecurityControl,
    decrypt,
    encrypt,
    hls_gmac,
    lls_matches,
    verify_hls_gmac,
)
from tests.conftest import corpora_dir

h = bytes.fromhex

EK = h("000102030405060708090A0B0C0D0E0F")
AK = h("D0D1D2D3D4D5D6D7D8D9DADBDCDDDEDF")
TITLE = h("4D4D4D0000BC614E")
GET_CLOCK = h("C0010000080000010000FF0200")

AUTH_ENC = SecurityControl(suite=0, authenticated=True, encrypted=True)
AUTH_ONLY = SecurityControl(suite=0, authenticated=True, encrypted=False)
ENC_ONLY = SecurityControl(suite=0, authenticated=False, encrypted=True)


def _vectors() -> dict[str, dict[str, Any]]:
    data = json.loads((corpora_dir() / "dlms" / "security_vectors.json").read_text())
    return {v["name"]: v for v in data["vectors"]}


@pytest.fixture(scope="module")
def vectors() -> dict[str, dict[str, Any]]:
    return _vectors()


# --- published vectors -------------------------------------------------------------------------------


def test_greenbook_glo_get_request_encrypts_to_published_bytes(vectors: dict[str, dict[str, Any]]) -> None:
    v = vectors["greenbook_glo_get_request_suite0"]
    apdu = encrypt(
        h(v["plaintext_apdu"]),
        security_control=SecurityControl.from_byte(int(v["security_control"], 16)),
        system_title=h(v["system_title"]),
        invocation_counter=int(v["invocation_counter"], 16),
        encryption_key=h(v["block_cipher_key"]),
        authentication_key=h(v["authentication_key"]),
    )
    assert apdu == h(v["ciphered_apdu_glo_get_request"])
    assert apdu.endswith(h(v["ciphertext_and_tag"]))


def test_greenbook_glo_get_request_decrypts(vectors: dict[str, dict[str, Any]]) -> None:
    v = vectors["greenbook_glo_get_request_suite0"]
    result = decrypt(
        h(v["ciphered_apdu_glo_get_request"]),
        encryption_key=h(v["block_cipher_key"]),
        authentication_key=h(v["authentication_key"]),
        system_title=h(v["system_title"]),
    )
    assert result.plaintext == h(v["plaintext_apdu"])
    assert result.invocation_counter == int(v["invocation_counter"], 16)
    assert result.security_control == AUTH_ENC
    assert result.system_title == h(v["system_title"])


def test_greenbook_hls_gmac_f_stoc(vectors: dict[str, dict[str, Any]]) -> None:
    v = vectors["greenbook_hls_gmac_f_stoc"]
    reply = hls_gmac(
        system_title=h(v["client_system_title"]),
        invocation_counter=int(v["client_invocation_counter"], 16),
        challenge=h(v["server_to_client_challenge"]),
        encryption_key=h(v["block_cipher_key"]),
        authentication_key=h(v["authentication_key"]),
        security_control=int(v["security_control"], 16),
    )
    assert reply == h(v["reply_to_hls_authentication"])
    assert reply[5:] == h(v["expected_gmac_tag"])
    ic = verify_hls_gmac(
        reply,
        system_title=h(v["client_system_title"]),
        challenge=h(v["server_to_client_challenge"]),
        encryption_key=h(v["block_cipher_key"]),
        authentication_key=h(v["authentication_key"]),
    )
    assert ic == int(v["client_invocation_counter"], 16)


def test_hls_gmac_rejects_wrong_challenge_title_and_tag(vectors: dict[str, dict[str, Any]]) -> None:
    v = vectors["greenbook_hls_gmac_f_stoc"]
    reply = h(v["reply_to_hls_authentication"])
    keys = {"encryption_key": h(v["block_cipher_key"]), "authentication_key": h(v["authentication_key"])}
    good = {"system_title": h(v["client_system_title"]), "challenge": h(v["server_to_client_challenge"])}
    with pytest.raises(DecryptionError):
        verify_hls_gmac(reply, **keys, system_title=good["system_title"], challenge=b"other challenge")
    with pytest.raises(DecryptionError):
        verify_hls_gmac(reply, **keys, system_title=TITLE, challenge=good["challenge"])
    with pytest.raises(DecryptionError):
        verify_hls_gmac(reply[:-1] + bytes([reply[-1] ^ 1]), **keys, **good)
    with pytest.raises(DecodeError):
        verify_hls_gmac(reply[:-1], **keys, **good)
    with pytest.raises(DecryptionError):
        verify_hls_gmac(b"\x30" + reply[1:], **keys, **good)  # the SC byte is covered by the GMAC
    with pytest.raises(DecryptionError):
        verify_hls_gmac(b"\x20" + reply[1:], **keys, **good)  # an SC without authentication is refused


def test_general_glo_data_notification_decrypts(vectors: dict[str, dict[str, Any]]) -> None:
    v = vectors["general_glo_ciphering_data_notification"]
    result = decrypt(
        h(v["apdu"]), encryption_key=h(v["block_cipher_key"]), authentication_key=h(v["authentication_key"])
    )
    assert result.plaintext == h(v["expected_plaintext_apdu"])
    assert result.system_title == h(v["system_title"])
    assert result.invocation_counter == int(v["invocation_counter"], 16)
    assert result.security_control.to_byte() == int(v["security_control"], 16)
    assert v["block_cipher_key"] == v["block_cipher_key_ascii"].encode().hex().upper()


def test_general_glo_data_notification_encrypts_to_published_bytes(
    vectors: dict[str, dict[str, Any]],
) -> None:
    v = vectors["general_glo_ciphering_data_notification"]
    apdu = encrypt(
        h(v["expected_plaintext_apdu"]),
        security_control=SecurityControl.from_byte(int(v["security_control"], 16)),
        system_title=h(v["system_title"]),
        invocation_counter=int(v["invocation_counter"], 16),
        encryption_key=h(v["block_cipher_key"]),
        authentication_key=h(v["authentication_key"]),
        general=True,
    )
    assert apdu == h(v["apdu"])


def test_general_glo_without_authentication_key_when_tag_not_verified(
    vectors: dict[str, dict[str, Any]],
) -> None:
    v = vectors["general_glo_ciphering_data_notification"]
    result = decrypt(h(v["apdu"]), encryption_key=h(v["block_cipher_key"]), verify_tag=False)
    assert result.plaintext == h(v["expected_plaintext_apdu"])
    with pytest.raises(DecryptionError):
        decrypt(h(v["apdu"]), encryption_key=h(v["block_cipher_key"]))


def test_plain_data_notification_vector_is_not_ciphered(vectors: dict[str, dict[str, Any]]) -> None:
    with pytest.raises(DecodeError):
        decrypt(h(vectors["data_notification_plain"]["apdu"]), encryption_key=EK)


# --- real capture: L+G E450 push, general-glo-ciphering, authentication key unknown --------------------


def _gbt_apdu_from_hdlc_lines(text: str) -> bytes:
    """Test-only unwrapping: HDLC type-3 information fields, LLC header dropped, GBT block data joined."""
    apdu = b""
    for line in text.split():
        frame = h(line)
        assert frame[0] == 0x7E and frame[-1] == 0x7E
        i = 3
        for _ in range(2):  # destination then source address: bytes until one with the low bit set
            while not frame[i] & 1:
                i += 1
            i += 1
        info = frame[i + 3 : -3]  # control + HCS before, FCS + flag after
        if info.startswith(h("E6E700")):
            info = info[3:]
        assert info[0] == 0xE0
        length, start = info[6], 7
        assert length < 0x80
        apdu += info[start : start + length]
    return apdu


def test_lg_e450_capture_decrypts_without_authentication_key() -> None:
    path = corpora_dir() / "dlms" / "scs" / "lg_e450__ENCRYPTED_DATA_NO_PUSHLIST.hex"
    apdu = _gbt_apdu_from_hdlc_lines(path.read_text())
    assert apdu[0] == 0xDB
    result = decrypt(apdu, encryption_key=h("F08660A6C19D2048556BF623AB0257E6"), verify_tag=False)
    assert result.invocation_counter == 430140
    assert result.security_control == AUTH_ENC
    assert result.system_title == apdu[2:10]
    plaintext = result.plaintext
    assert plaintext[0] == 0x0F  # data-notification
    assert int.from_bytes(plaintext[1:5], "big") == 430140  # this meter reuses the IC as invoke id
    assert plaintext[5:7] == h("0C07") and plaintext[7] == 0xE6  # date-time, year 2022
    assert plaintext[18:20] == h("0221")  # structure of 33 elements
    assert h("09060100010800FF") in plaintext  # active energy import 1.0.1.8.0.255
    with pytest.raises(DecryptionError):  # the tag is there and does not verify with a guessed key
        decrypt(apdu, encryption_key=h("F08660A6C19D2048556BF623AB0257E6"), authentication_key=bytes(16))


# --- round trips ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("sc", [AUTH_ENC, AUTH_ONLY, ENC_ONLY])
@pytest.mark.parametrize("general", [False, True])
def test_round_trip_each_security_policy(sc: SecurityControl, general: bool) -> None:
    apdu = encrypt(
        GET_CLOCK,
        security_control=sc,
        system_title=TITLE,
        invocation_counter=7,
        encryption_key=EK,
        authentication_key=AK if sc.authenticated else None,
        general=general,
    )
    assert apdu[0] == (0xDB if general else 0xC8)
    result = decrypt(apdu, encryption_key=EK, authentication_key=AK, system_title=None if general else TITLE)
    assert result.plaintext == GET_CLOCK
    assert result.security_control == sc
    assert result.invocation_counter == 7


def test_authentication_only_leaves_plaintext_visible_and_tag_appended() -> None:
    apdu = encrypt(
        GET_CLOCK,
        security_control=AUTH_ONLY,
        system_title=TITLE,
        invocation_counter=1,
        encryption_key=EK,
        authentication_key=AK,
    )
    assert apdu[7 : 7 + len(GET_CLOCK)] == GET_CLOCK
    assert len(apdu) == 2 + 5 + len(GET_CLOCK) + 12
    assert decrypt(apdu, encryption_key=EK, system_title=TITLE, verify_tag=False).plaintext == GET_CLOCK


def test_encryption_only_has_no_tag_and_is_gcm_keystream() -> None:
    apdu = encrypt(
        GET_CLOCK,
        security_control=ENC_ONLY,
        system_title=TITLE,
        invocation_counter=0x01234567,
        encryption_key=EK,
        authentication_key=None,
    )
    assert len(apdu) == 2 + 5 + len(GET_CLOCK)
    # GCM ciphertext does not depend on the AAD, so the Green Book vector's ciphertext part must match.
    assert apdu[7:] == h("411312FF935A47566827C467BC")


def test_ded_tag_and_explicit_glo_tag() -> None:
    kwargs: dict[str, Any] = {
        "security_control": AUTH_ENC,
        "system_title": TITLE,
        "invocation_counter": 3,
        "encryption_key": EK,
        "authentication_key": AK,
    }
    ded = encrypt(GET_CLOCK, ciphered_tag=DED_TAGS[0xC0], **kwargs)
    assert ded[0] == 0xD0
    assert decrypt(ded, encryption_key=EK, authentication_key=AK, system_title=TITLE).plaintext == GET_CLOCK
    general_ded = encrypt(GET_CLOCK, ciphered_tag=0xDC, general=True, **kwargs)
    assert general_ded[0] == 0xDC and general_ded[2:10] == TITLE
    with pytest.raises(EncodeError):
        encrypt(GET_CLOCK, ciphered_tag=0xC0, **kwargs)
    with pytest.raises(EncodeError):
        encrypt(GET_CLOCK, ciphered_tag=0xC8, general=True, **kwargs)
    with pytest.raises(EncodeError):  # data-notification has no glo tag: it travels in general-glo
        encrypt(h("0F00000001"), **kwargs)
    with pytest.raises(EncodeError):
        encrypt(b"", **kwargs)


def test_long_plaintext_uses_multi_byte_length() -> None:
    plaintext = bytes([0xC4]) + bytes(range(256)) * 3
    apdu = encrypt(
        plaintext,
        security_control=AUTH_ENC,
        system_title=TITLE,
        invocation_counter=9,
        encryption_key=EK,
        authentication_key=AK,
    )
    assert apdu[:2] == b"\xcc\x82"
    assert decrypt(apdu, encryption_key=EK, authentication_key=AK, system_title=TITLE).plaintext == plaintext


# --- tag tables and the security control byte ----------------------------------------------------------


def test_tag_tables() -> None:
    assert GLO_TAGS[0x01] == 0x21 and GLO_TAGS[0x08] == 0x28
    assert [GLO_TAGS[t] for t in (0xC0, 0xC1, 0xC2, 0xC3, 0xC4, 0xC5, 0xC7)] == [
        0xC8, 0xC9, 0xCA, 0xCB, 0xCC, 0xCD, 0xCF,
    ]  # fmt: skip
    assert all(DED_TAGS[t] == GLO_TAGS[t] + 8 for t in DED_TAGS)
    assert all(PLAIN_TAGS[c] == p for p, c in GLO_TAGS.items())
    assert len(PLAIN_TAGS) == len(GLO_TAGS) + len(DED_TAGS)


@given(st.integers(0, 255))
def test_security_control_byte_round_trips(b: int) -> None:
    assert SecurityControl.from_byte(b).to_byte() == b


def test_security_control_fields() -> None:
    sc = SecurityControl.from_byte(0x30)
    assert sc == SecurityControl(suite=0, authenticated=True, encrypted=True)
    assert SecurityControl.from_byte(0xC1) == SecurityControl(
        suite=1, authenticated=False, encrypted=False, broadcast_key=True, compressed=True
    )
    with pytest.raises(DecodeError):
        SecurityControl.from_byte(256)
    with pytest.raises(EncodeError):
        SecurityControl(suite=16, authenticated=True, encrypted=True).to_byte()


@pytest.mark.parametrize("sc_byte", [0x31, 0x32, 0xB0, 0x00, 0x40])
def test_unsupported_security_control_is_refused(sc_byte: int) -> None:
    sc = SecurityControl.from_byte(sc_byte)
    with pytest.raises(SecurityError):
        encrypt(
            GET_CLOCK,
            security_control=sc,
            system_title=TITLE,
            invocation_counter=1,
            encryption_key=EK,
            authentication_key=AK,
        )
    apdu = bytearray(
        encrypt(
            GET_CLOCK,
            security_control=AUTH_ENC,
            system_title=TITLE,
            invocation_counter=1,
            encryption_key=EK,
            authentication_key=AK,
        )
    )
    apdu[2] = sc_byte
    with pytest.raises(SecurityError):
        decrypt(bytes(apdu), encryption_key=EK, authentication_key=AK, system_title=TITLE)


def test_broadcast_key_bit_is_carried() -> None:
    sc = SecurityControl(suite=0, authenticated=True, encrypted=True, broadcast_key=True)
    apdu = encrypt(
        GET_CLOCK,
        security_control=sc,
        system_title=TITLE,
        invocation_counter=1,
        encryption_key=EK,
        authentication_key=AK,
    )
    assert apdu[2] == 0x70
    assert decrypt(apdu, encryption_key=EK, authentication_key=AK, system_title=TITLE).security_control == sc


# --- failures ------------------------------------------------------------------------------------------


def _glo() -> bytes:
    return encrypt(
        GET_CLOCK,
        security_control=AUTH_ENC,
        system_title=TITLE,
        invocation_counter=0x01234567,
        encryption_key=EK,
        authentication_key=AK,
    )


def test_wrong_keys_and_title_raise_decryption_error() -> None:
    apdu = _glo()
    with pytest.raises(DecryptionError):
        decrypt(apdu, encryption_key=bytes(16), authentication_key=AK, system_title=TITLE)
    with pytest.raises(DecryptionError):
        decrypt(apdu, encryption_key=EK, authentication_key=bytes(16), system_title=TITLE)
    with pytest.raises(DecryptionError):
        decrypt(apdu, encryption_key=EK, authentication_key=AK, system_title=bytes(8))
    with pytest.raises(DecryptionError):
        decrypt(apdu, encryption_key=EK, system_title=TITLE)


@pytest.mark.parametrize("sc", [AUTH_ENC, AUTH_ONLY])
def test_every_flipped_bit_after_the_length_is_detected(sc: SecurityControl) -> None:
    apdu = encrypt(
        GET_CLOCK,
        security_control=sc,
        system_title=TITLE,
        invocation_counter=5,
        encryption_key=EK,
        authentication_key=AK,
    )
    for i in range(2, len(apdu)):
        for bit in range(8):
            tampered = bytearray(apdu)
            tampered[i] ^= 1 << bit
            try:
                result = decrypt(
                    bytes(tampered), encryption_key=EK, authentication_key=AK, system_title=TITLE
                )
            except SecurityError:  # DecryptionError, or SecurityError for an unsupported SC
                continue
            # Only a flip of the SC byte that drops authentication gets through, and it shows in the
            # returned security control, which the caller checks against the association's policy.
            assert i == 2
            assert not result.security_control.authenticated


def test_truncated_and_padded_apdus_raise_decode_error() -> None:
    apdu = _glo()
    for n in range(len(apdu)):
        with pytest.raises(DecodeError):
            decrypt(apdu[:n], encryption_key=EK, authentication_key=AK, system_title=TITLE)
    with pytest.raises(DecodeError):
        decrypt(apdu + b"\x00", encryption_key=EK, authentication_key=AK, system_title=TITLE)
    # A length that covers less than the security header and the tag.
    with pytest.raises(DecodeError):
        decrypt(h("C80330012345"), encryption_key=EK, authentication_key=AK, system_title=TITLE)
    with pytest.raises(DecodeError):
        decrypt(h("C8053001234567"), encryption_key=EK, authentication_key=AK, system_title=TITLE)
    with pytest.raises(DecodeError):
        decrypt(h("C885000000000000"), encryption_key=EK, system_title=TITLE)


def test_general_glo_truncated_and_bad_title_length() -> None:
    apdu = encrypt(
        GET_CLOCK,
        security_control=AUTH_ENC,
        system_title=TITLE,
        invocation_counter=5,
        encryption_key=EK,
        authentication_key=AK,
        general=True,
    )
    for n in range(len(apdu)):
        with pytest.raises(DecodeError):
            decrypt(apdu[:n], encryption_key=EK, authentication_key=AK)
    with pytest.raises(DecodeError):
        decrypt(b"\xdb\x07" + apdu[2:], encryption_key=EK, authentication_key=AK)


def test_parameter_checks() -> None:
    apdu = _glo()
    with pytest.raises(SecurityError):
        decrypt(apdu, encryption_key=EK[:15], authentication_key=AK, system_title=TITLE)
    with pytest.raises(SecurityError):
        decrypt(apdu, encryption_key=EK, authentication_key=AK + b"\x00", system_title=TITLE)
    with pytest.raises(SecurityError):
        decrypt(apdu, encryption_key=EK, authentication_key=AK)  # glo APDU needs the title from the caller
    with pytest.raises(SecurityError):
        decrypt(apdu, encryption_key=EK, authentication_key=AK, system_title=TITLE[:7])
    with pytest.raises(SecurityError):
        decrypt(bytes([GENERAL_CIPHERING, 0]), encryption_key=EK)
    common: dict[str, Any] = {"security_control": AUTH_ENC, "encryption_key": EK}
    with pytest.raises(SecurityError):
        encrypt(GET_CLOCK, system_title=TITLE, invocation_counter=1, authentication_key=None, **common)
    with pytest.raises(SecurityError):
        encrypt(GET_CLOCK, system_title=TITLE[:4], invocation_counter=1, authentication_key=AK, **common)
    for ic in (-1, 2**32):
        with pytest.raises(EncodeError):
            encrypt(GET_CLOCK, system_title=TITLE, invocation_counter=ic, authentication_key=AK, **common)
    with pytest.raises(SecurityError):
        hls_gmac(
            system_title=TITLE,
            invocation_counter=1,
            challenge=b"x",
            encryption_key=EK,
            authentication_key=AK[:8],
        )


# --- LLS and replay ------------------------------------------------------------------------------------


def test_lls_matches() -> None:
    assert lls_matches(b"12345678", b"12345678")
    assert not lls_matches(b"12345678", b"12345679")
    assert not lls_matches(b"12345678", b"1234567")


def test_invocation_counter_guard_rejects_replay() -> None:
    guard = InvocationCounterGuard()
    guard.accept(TITLE, 0)
    guard.accept(TITLE, 5)
    with pytest.raises(ReplayError):
        guard.accept(TITLE, 5)
    with pytest.raises(ReplayError):
        guard.accept(TITLE, 4)
    guard.accept(bytes(8), 1)  # counters are per system title
    assert guard.last(TITLE) == 5
    with pytest.raises(ReplayError):
        guard.accept(TITLE, 2**32)
    with pytest.raises(ReplayError):
        guard.accept(bytes(7) + b"\x01", -1)
    guard.accept(TITLE, 2**32 - 1)
    with pytest.raises(ReplayError):
        guard.accept(TITLE, 2**32 - 1)


def test_invocation_counter_guard_is_bounded_lru() -> None:
    guard = InvocationCounterGuard(max_titles=3)
    titles = [i.to_bytes(8, "big") for i in range(4)]
    for t in titles[:3]:
        guard.accept(t, 10)
    guard.accept(titles[0], 11)  # refreshes title 0, so title 1 is now the least recently used
    guard.accept(titles[3], 10)
    assert len(guard) == 3
    assert guard.last(titles[1]) is None
    assert guard.last(titles[0]) == 11
    with pytest.raises(ValueError, match="at least 1"):
        InvocationCounterGuard(max_titles=0)


def test_decrypt_then_guard_flow() -> None:
    guard = InvocationCounterGuard()
    apdu = _glo()
    result = decrypt(apdu, encryption_key=EK, authentication_key=AK, system_title=TITLE)
    assert result.system_title is not None
    guard.accept(result.system_title, result.invocation_counter)
    with pytest.raises(ReplayError):
        guard.accept(result.system_title, result.invocation_counter)


# --- properties ----------------------------------------------------------------------------------------


@settings(max_examples=200)
@given(
    plaintext=st.binary(min_size=1, max_size=600),
    sc_bits=st.sampled_from([0x10, 0x20, 0x30, 0x50, 0x60, 0x70]),
    ic=st.integers(0, 2**32 - 1),
    title=st.binary(min_size=8, max_size=8),
    general=st.booleans(),
)
def test_property_round_trip(plaintext: bytes, sc_bits: int, ic: int, title: bytes, general: bool) -> None:
    sc = SecurityControl.from_byte(sc_bits)
    plaintext = bytes([0xC4]) + plaintext
    apdu = encrypt(
        plaintext,
        security_control=sc,
        system_title=title,
        invocation_counter=ic,
        encryption_key=EK,
        authentication_key=AK,
        general=general,
    )
    result = decrypt(apdu, encryption_key=EK, authentication_key=AK, system_title=None if general else title)
    assert (result.plaintext, result.security_control, result.invocation_counter) == (plaintext, sc, ic)
    assert result.system_title == title
    skipped = decrypt(apdu, encryption_key=EK, system_title=title, verify_tag=False)
    assert skipped.plaintext == plaintext


@settings(max_examples=500)
@given(st.binary(max_size=80), st.booleans())
def test_fuzz_decrypt_raises_only_dlms_errors(data: bytes, verify: bool) -> None:
    with contextlib.suppress(DlmsError):
        decrypt(data, encryption_key=EK, authentication_key=AK, system_title=TITLE, verify_tag=verify)


@settings(max_examples=300)
@given(
    tag=st.sampled_from([0xC8, 0xCC, 0xD0, 0xDB, 0xDC, 0x21, 0x28]),
    sc=st.integers(0, 255),
    body=st.binary(max_size=60),
)
def test_fuzz_structured_decrypt_raises_only_dlms_errors(tag: int, sc: int, body: bytes) -> None:
    """Well-formed envelopes with random contents reach the crypto paths, not only the length checks."""
    content = bytes([sc]) + body
    prefix = bytes([tag]) + (b"\x08" + TITLE if tag in (0xDB, 0xDC) else b"")
    apdu = prefix + bytes([len(content)]) + content
    for verify in (True, False):
        with contextlib.suppress(DlmsError):
            decrypt(apdu, encryption_key=EK, authentication_key=AK, system_title=TITLE, verify_tag=verify)
