"""OMS / EN 13757 payload protection: security modes 5 and 7 of the TPL and AES-CTR of the ELL.

* Mode 5 (AES-128-CBC, persistent key): IV = M field, A field (id, version, device type) and eight times
  the access number. The M/A are those of the TPL long header when there is one (the meter), else the
  link layer's. Only 16 * ``encrypted_blocks`` bytes are ciphertext; the rest of the payload is plain.
* Mode 7 (AES-128-CBC, zero IV, ephemeral key): the key for each message is derived from the meter's
  master key with AES-CMAC (OMS Vol. 2 §9.2 KDF-A) over ``D || counter || meter id || seven 07 bytes``,
  D = 0x00 for the encryption key and 0x01 for the MAC key of a meter-sent message. The counter comes
  from the AFL, whose CMAC (truncated as its MCL says) is checked over the AFL fields it covers and every
  byte from the TPL CI to the end of the telegram.
* ELL (AES-128-CTR, persistent key): counter block = link M and A, the ELL CC and SN, frame number 0 and
  a block counter starting at 0; the plaintext begins with the payload CRC, which must match the rest.

* Modes 2 and 3 (DES-CBC, 8-byte key; EN 13757-4:2005, still sent by old meters): mode 2 with a zero IV,
  mode 3 with the M and A fields as IV; the encrypted part is counted in 16-byte blocks as for AES. DES
  is broken and kept only to read such meters; it runs through the ``cryptography`` package's TripleDES
  with the key repeated (which is single DES).

A wrong key is detected rather than trusted: after CBC decryption the plaintext must start with the
``2F 2F`` idle fillers OMS requires, the ELL payload CRC must match, and an AFL MAC must verify. Any
failure is a :class:`~openami.protocols.wmbus.errors.DecryptionError`, so no garbage ever reaches the
record decoder. Encryption helpers exist for simulators and tests.
"""

from __future__ import annotations

import hmac
from typing import Final

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.cmac import CMAC

from openami.protocols.wmbus.errors import AuthenticationError, DecryptionError
from openami.protocols.wmbus.link import Address, crc16_en13757

__all__ = [
    "DES_KEY_LENGTH",
    "FILLER",
    "cmac",
    "decrypt_des",
    "decrypt_ell",
    "decrypt_mode5",
    "decrypt_mode7",
    "derive_mode7_keys",
    "des_iv",
    "ell_counter_block",
    "encrypt_des",
    "encrypt_ell",
    "encrypt_mode5",
    "encrypt_mode7",
    "mode5_iv",
]

FILLER: Final = b"\x2f\x2f"
KEY_LENGTH: Final = 16
_BLOCK: Final = 16
_KDF_PADDING: Final = b"\x07" * 7
KDF_ENC_FROM_METER: Final = 0x00
KDF_MAC_FROM_METER: Final = 0x01


def _check_key(key: bytes) -> None:
    if len(key) != KEY_LENGTH:
        raise DecryptionError(f"AES-128 key must be {KEY_LENGTH} bytes, got {len(key)}")


def _cbc(key: bytes, iv: bytes, data: bytes, *, encrypt: bool) -> bytes:
    cipher = Cipher(algorithms.AES(key), modes.CBC(iv))
    ctx = cipher.encryptor() if encrypt else cipher.decryptor()
    return ctx.update(data) + ctx.finalize()


def _ctr(key: bytes, counter_block: bytes, data: bytes) -> bytes:
    ctx = Cipher(algorithms.AES(key), modes.CTR(counter_block)).encryptor()
    return ctx.update(data) + ctx.finalize()


def cmac(key: bytes, data: bytes) -> bytes:
    """Full 16-byte AES-CMAC (NIST SP 800-38B)."""
    _check_key(key)
    mac = CMAC(algorithms.AES(key))
    mac.update(data)
    return mac.finalize()


def mode5_iv(address: Address, access_number: int) -> bytes:
    return address.to_bytes() + bytes([access_number & 0xFF]) * 8


def _split_blocks(payload: bytes, blocks: int) -> tuple[bytes, bytes]:
    """Ciphertext and the plain tail; ``blocks == 0`` (some meters) means every whole block is encrypted."""
    size = blocks * _BLOCK if blocks else len(payload) // _BLOCK * _BLOCK
    if size == 0 or size > len(payload):
        raise DecryptionError(f"encrypted part of {size} bytes does not fit a payload of {len(payload)}")
    return payload[:size], payload[size:]


def _check_filler(plain: bytes, what: str) -> None:
    if plain[:2] != FILLER:
        raise DecryptionError(f"{what}: decrypted data does not start with 2F 2F (wrong key?)")


def decrypt_mode5(key: bytes, address: Address, access_number: int, payload: bytes, blocks: int) -> bytes:
    """Decrypt a mode-5 payload (ciphertext blocks then any plain tail) and verify the 2F 2F check."""
    _check_key(key)
    cipher_part, tail = _split_blocks(payload, blocks)
    plain = _cbc(key, mode5_iv(address, access_number), cipher_part, encrypt=False)
    _check_filler(plain, "mode 5")
    return plain + tail


def encrypt_mode5(key: bytes, address: Address, access_number: int, plain: bytes) -> bytes:
    """Encrypt whole blocks of ``plain`` (pad it with 2F yourself); the inverse of :func:`decrypt_mode5`."""
    _check_key(key)
    return _cbc(key, mode5_iv(address, access_number), plain, encrypt=True)


DES_KEY_LENGTH: Final = 8


def _des_cbc(key: bytes, iv: bytes, data: bytes, *, encrypt: bool) -> bytes:
    try:  # cryptography >= 43 moved the old ciphers to "decrepit"
        from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
    except ImportError:  # pragma: no cover - older cryptography
        from cryptography.hazmat.primitives.ciphers.algorithms import TripleDES
    if len(data) % 8:
        raise DecryptionError(f"DES ciphertext of {len(data)} bytes is not whole 8-byte blocks")
    cipher = Cipher(TripleDES(key * 3), modes.CBC(iv))  # K1 = K2 = K3: single DES
    work = cipher.encryptor() if encrypt else cipher.decryptor()
    return work.update(data) + work.finalize()


def des_iv(mode: int, address: Address) -> bytes:
    """Mode 2: zero; mode 3: the M and A fields (8 bytes)."""
    return bytes(8) if mode == 2 else address.to_bytes()


def decrypt_des(key: bytes, mode: int, address: Address, payload: bytes, blocks: int) -> bytes:
    """Decrypt a mode-2 or mode-3 payload (ciphertext blocks then any plain tail), 2F 2F checked."""
    if len(key) != DES_KEY_LENGTH:
        raise DecryptionError(f"DES key must be {DES_KEY_LENGTH} bytes, got {len(key)}")
    cipher_part, tail = _split_blocks(payload, blocks)
    plain = _des_cbc(key, des_iv(mode, address), cipher_part, encrypt=False)
    _check_filler(plain, f"mode {mode}")
    return plain + tail


def encrypt_des(key: bytes, mode: int, address: Address, plain: bytes) -> bytes:
    """The inverse of :func:`decrypt_des` (``plain`` padded to 16-byte blocks by the caller)."""
    if len(key) != DES_KEY_LENGTH:
        raise DecryptionError(f"DES key must be {DES_KEY_LENGTH} bytes, got {len(key)}")
    return _des_cbc(key, des_iv(mode, address), plain, encrypt=True)


def derive_mode7_keys(master_key: bytes, message_counter: int, meter_id: bytes) -> tuple[bytes, bytes]:
    """(Kenc, Kmac) of one meter-sent message (OMS Vol. 2 KDF-A); ``meter_id`` as sent (4 bytes LE BCD)."""
    _check_key(master_key)
    if len(meter_id) != 4 or not 0 <= message_counter <= 0xFFFF_FFFF:
        raise DecryptionError("mode 7 KDF needs a 4-byte meter id and a 32-bit message counter")
    tail = message_counter.to_bytes(4, "little") + meter_id + _KDF_PADDING
    return (
        cmac(master_key, bytes([KDF_ENC_FROM_METER]) + tail),
        cmac(master_key, bytes([KDF_MAC_FROM_METER]) + tail),
    )


def decrypt_mode7(
    master_key: bytes,
    message_counter: int,
    meter_id: bytes,
    payload: bytes,
    blocks: int,
    *,
    mac: bytes = b"",
    mac_input: bytes = b"",
) -> bytes:
    """Decrypt a mode-7 payload; when the AFL carried a MAC, verify it first (over ``mac_input``)."""
    kenc, kmac = derive_mode7_keys(master_key, message_counter, meter_id)
    if mac and not hmac.compare_digest(cmac(kmac, mac_input)[: len(mac)], mac):
        raise AuthenticationError("mode 7: AFL MAC does not verify (wrong key or tampered telegram)")
    cipher_part, tail = _split_blocks(payload, blocks)
    plain = _cbc(kenc, bytes(_BLOCK), cipher_part, encrypt=False)
    _check_filler(plain, "mode 7")
    return plain + tail


def encrypt_mode7(master_key: bytes, message_counter: int, meter_id: bytes, plain: bytes) -> bytes:
    """Encrypt whole blocks with the derived Kenc; the MAC is the caller's (see :func:`cmac`)."""
    kenc, _ = derive_mode7_keys(master_key, message_counter, meter_id)
    return _cbc(kenc, bytes(_BLOCK), plain, encrypt=True)


def ell_counter_block(address: Address, communication_control: int, session_number: int) -> bytes:
    """Initial AES-CTR block: M, A, CC, SN (little-endian), frame number 0 (2 bytes), block counter 0."""
    return (
        address.to_bytes()
        + bytes([communication_control & 0xFF])
        + (session_number & 0xFFFF_FFFF).to_bytes(4, "little")
        + b"\x00\x00\x00"
    )


def decrypt_ell(
    key: bytes, address: Address, communication_control: int, session_number: int, ciphertext: bytes
) -> tuple[int, bytes]:
    """Decrypt an ELL payload (payload CRC + data); returns (CRC, data) after checking the CRC."""
    _check_key(key)
    if len(ciphertext) < 2:
        raise DecryptionError("ELL payload shorter than its CRC")
    plain = _ctr(key, ell_counter_block(address, communication_control, session_number), ciphertext)
    crc = int.from_bytes(plain[:2], "little")
    if crc16_en13757(plain[2:]) != crc:
        raise DecryptionError("ELL payload CRC mismatch after decryption (wrong key?)")
    return crc, plain[2:]


def encrypt_ell(
    key: bytes, address: Address, communication_control: int, session_number: int, data: bytes
) -> bytes:
    """Prefix ``data`` with its payload CRC and encrypt both (AES-CTR, no padding)."""
    _check_key(key)
    plain = crc16_en13757(data).to_bytes(2, "little") + data
    return _ctr(key, ell_counter_block(address, communication_control, session_number), plain)
