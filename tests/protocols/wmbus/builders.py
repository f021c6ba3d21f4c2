"""Hand-built telegrams for the tests, assembled from the spec's field order (not from any other decoder)."""

from __future__ import annotations

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.cmac import CMAC

from openami.protocols.wmbus.link import manufacturer_code

KEY = bytes(range(16))
METER_ID = bytes.fromhex("78563412")  # id 12345678, little-endian BCD as sent
# A plain OMS payload: fillers, then a volume record (DIF 04, VIF 13 = litres) 12345 l.
RECORDS = bytes.fromhex("2F2F0413393000002F2F2F2F2F2F2F2F")


def address_bytes(manufacturer: str = "KAM", version: int = 0x1B, device_type: int = 0x07) -> bytes:
    return manufacturer_code(manufacturer).to_bytes(2, "little") + METER_ID + bytes((version, device_type))


def frame(body: bytes, *, c_field: int = 0x44, manufacturer: str = "KAM") -> bytes:
    """A CRC-stripped frame: L C M A then ``body`` (from the CI field on)."""
    rest = bytes([c_field]) + address_bytes(manufacturer) + body
    return bytes([len(rest)]) + rest


def aes_cbc(key: bytes, iv: bytes, data: bytes) -> bytes:
    enc = Cipher(algorithms.AES(key), modes.CBC(iv)).encryptor()
    return enc.update(data) + enc.finalize()


def aes_cmac(key: bytes, data: bytes) -> bytes:
    mac = CMAC(algorithms.AES(key))
    mac.update(data)
    return mac.finalize()


def mode5_telegram(key: bytes = KEY, access: int = 0x42, plain: bytes = RECORDS) -> bytes:
    iv = address_bytes() + bytes([access]) * 8
    blocks = len(plain) // 16
    config = (5 << 8) | (blocks << 4)
    header = bytes([0x7A, access, 0x00]) + config.to_bytes(2, "little")
    return frame(header + aes_cbc(key, iv, plain))


def mode7_telegram(
    key: bytes = KEY, counter: int = 7, plain: bytes = RECORDS, *, tamper: bool = False
) -> bytes:
    """AFL (FCL with MCL, MCR, MAC present; MCL = CMAC-8 with counter in MAC) + TPL short header mode 7."""
    tail = counter.to_bytes(4, "little") + METER_ID + b"\x07" * 7
    kenc, kmac = aes_cmac(key, b"\x00" + tail), aes_cmac(key, b"\x01" + tail)
    blocks = len(plain) // 16
    config = (7 << 8) | (blocks << 4)
    tpl = bytes([0x7A, 0x10, 0x00]) + config.to_bytes(2, "little") + b"\x10" + aes_cbc(kenc, bytes(16), plain)
    mcl = 0x25
    mac = aes_cmac(kmac, bytes([mcl]) + counter.to_bytes(4, "little") + tpl)[:8]
    if tamper:
        tpl = tpl[:-1] + bytes([tpl[-1] ^ 1])
    fcl = 0x2000 | 0x0800 | 0x0400
    afl_body = fcl.to_bytes(2, "little") + bytes([mcl]) + counter.to_bytes(4, "little") + mac
    afl = bytes([0x90, len(afl_body)]) + afl_body
    return frame(afl + tpl)
