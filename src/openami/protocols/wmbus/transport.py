"""Layers between the link header and the application data, selected by CI field (EN 13757-4/-7, OMS Vol. 2).

A telegram body is a chain: optional ELL (extended link layer, CI 0x8C-0x8F), optional AFL
(authentication and fragmentation layer, CI 0x90), then the transport layer (TPL) whose CI says what header
precedes the application data: 0x7A short header (access number, status, configuration word), 0x72 long
header (the same preceded by the meter's own address, for meters behind a radio module), 0x78/0x79 no
header (the access number then comes from the ELL, if any). CI 0xA0-0xB7 carry manufacturer-specific data
right after the link or extended link layer.

Only header parsing lives here; nothing is decrypted. Every parser takes ``(data, offset)``, checks each
length against what is there before slicing and returns the parsed header with the offset after it, so a
truncated or lying telegram ends in :class:`~openami.protocols.wmbus.errors.DecodeError`, never in an
``IndexError`` or a silently short field.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from openami.protocols.wmbus.errors import DecodeError, UnsupportedCIError
from openami.protocols.wmbus.link import Address

__all__ = [
    "AFL_CI",
    "ELL_CIS",
    "MANUFACTURER_CIS",
    "TPL_CIS",
    "Afl",
    "Ell",
    "Tpl",
    "parse_afl",
    "parse_ell",
    "parse_tpl",
]

#: ELL CI -> (has second address M2/A2, has session number + payload CRC) (EN 13757-4 ELL I to IV).
ELL_CIS: Final[dict[int, tuple[bool, bool]]] = {
    0x8C: (False, False),
    0x8D: (False, True),
    0x8E: (True, False),
    0x8F: (True, True),
}
AFL_CI: Final = 0x90
#: TPL CIs decoded here -> header kind: full frames 0x78/0x7A/0x72 and their compact forms 0x79/0x7B/0x73
#: (no, short, long header; see :mod:`openami.protocols.wmbus.compact`).
TPL_CIS: Final[dict[int, str]] = {
    0x72: "long", 0x73: "long", 0x7A: "short", 0x7B: "short", 0x78: "none", 0x79: "none"
}  # fmt: skip
#: Manufacturer-specific CI range: the payload is handed to the registry or kept as raw bytes.
MANUFACTURER_CIS: Final = range(0xA0, 0xB8)
#: CIs recognised but not decoded, for a precise error message.
_KNOWN_UNSUPPORTED: Final[dict[int, str]] = {
    0x51: "to-meter data",
    0x5A: "to-meter short header",
    0x5B: "to-meter long header",
    0x70: "application error",
    0x71: "alarm",
    0x7C: "DLMS short header",
    0x7D: "DLMS long header",
    0x7E: "SML short header",
    0x7F: "SML long header",
    0x80: "TPL long header, no data",
    0x86: "ELL V",
    0x8A: "TPL short header, no data",
    0x8B: "TPL long header, no data",
}
_SHORT_LEN: Final = 4
_LONG_LEN: Final = 12


def _need(data: bytes, offset: int, count: int, what: str) -> None:
    if offset + count > len(data):
        raise DecodeError(f"{what} truncated: needs {count} bytes, {len(data) - offset} left", offset)


@dataclass(frozen=True, slots=True)
class Ell:
    """Extended link layer: communication control, access number, maybe a second address and a session.

    ``session_number`` bits 29-31 name the encryption (0 none, 1 AES-128-CTR); ``payload_crc`` protects
    the (decrypted) bytes after it, which is how a wrong ELL key is detected.
    """

    ci: int
    communication_control: int
    access_number: int
    address2: Address | None = None
    session_number: int | None = None
    payload_crc: int | None = None

    @property
    def encryption(self) -> int:
        return 0 if self.session_number is None else (self.session_number >> 29) & 0x07


def parse_ell(data: bytes, offset: int) -> tuple[Ell, int]:
    """ELL starting at the CI byte ``data[offset]``; returns it and the offset of the payload CRC/next CI.

    For encrypted ELL (II, IV) the returned offset points at the payload CRC, because the CRC is part of
    the ciphertext; :attr:`Ell.payload_crc` is then only filled in after decryption by the caller.
    """
    ci = data[offset]
    if ci not in ELL_CIS:
        raise UnsupportedCIError(ci, offset, "not an ELL")
    has_address, has_session = ELL_CIS[ci]
    pos = offset + 1
    _need(data, pos, 2 + (8 if has_address else 0) + (6 if has_session else 0), "ELL")
    cc, acc = data[pos], data[pos + 1]
    pos += 2
    address2 = None
    if has_address:
        address2 = Address.from_bytes(data[pos : pos + 8])
        pos += 8
    session = None
    if has_session:
        session = int.from_bytes(data[pos : pos + 4], "little")
        pos += 4
    return Ell(ci, cc, acc, address2, session), pos


@dataclass(frozen=True, slots=True)
class Afl:
    """Authentication and fragmentation layer (CI 0x90), as OMS mode 7 uses it to carry counter and MAC.

    ``mac_input_prefix`` is the part of the AFL itself that the MAC covers (MCL, then KI, MCR and ML when
    the MCL says they are included), kept so the security layer does not re-derive field positions.
    """

    fragmentation_control: int
    message_control: int | None
    key_information: int | None
    message_counter: int | None
    mac: bytes
    message_length: int | None
    mac_input_prefix: bytes

    @property
    def fragment_id(self) -> int:
        return self.fragmentation_control & 0xFF

    @property
    def more_fragments(self) -> bool:
        return bool(self.fragmentation_control & 0x4000)

    @property
    def authentication_type(self) -> int:
        return 0 if self.message_control is None else self.message_control & 0x0F


_MAC_LENGTHS: Final = {0: 0, 3: 2, 4: 4, 5: 8, 6: 12, 7: 16}


def parse_afl(data: bytes, offset: int) -> tuple[Afl, int]:
    """AFL starting at its CI (0x90); returns it and the offset after it (the TPL CI)."""
    if data[offset] != AFL_CI:
        raise UnsupportedCIError(data[offset], offset, "not an AFL")
    _need(data, offset + 1, 3, "AFL")
    afl_len = data[offset + 1]
    start = offset + 2
    end = start + afl_len
    _need(data, start, afl_len, "AFL")
    if afl_len < 2:
        raise DecodeError("AFL shorter than its fragmentation control field", offset)
    fcl = int.from_bytes(data[start : start + 2], "little")
    pos = start + 2
    mcl = ki = mcr = ml = None
    prefix = bytearray()
    mac = b""
    fields = []  # (present, size) in wire order: MCL, KI, MCR, MAC, ML
    if fcl & 0x2000:
        if pos + 1 > end:
            raise DecodeError("AFL MCL missing", pos)
        mcl = data[pos]
        prefix.append(mcl)
        pos += 1
    if fcl & 0x0200:
        fields.append("ki")
    if fcl & 0x0800:
        fields.append("mcr")
    if fcl & 0x0400:
        fields.append("mac")
    if fcl & 0x1000:
        fields.append("ml")
    for name in fields:
        if name == "mac":
            at = 0 if mcl is None else mcl & 0x0F
            if at not in _MAC_LENGTHS or _MAC_LENGTHS[at] == 0:
                raise DecodeError(f"AFL MAC present with unsupported authentication type {at}", pos)
            size = _MAC_LENGTHS[at]
        else:
            size = {"ki": 2, "mcr": 4, "ml": 2}[name]
        if pos + size > end:
            raise DecodeError(f"AFL field {name} overruns the AFL length", pos)
        raw = data[pos : pos + size]
        pos += size
        if name == "mac":
            mac = bytes(raw)
            continue
        value = int.from_bytes(raw, "little")
        included = mcl is not None and bool(mcl & {"ki": 0x10, "mcr": 0x20, "ml": 0x40}[name])
        if name == "ki":
            ki = value
        elif name == "mcr":
            mcr = value
        else:
            ml = value
        if included:
            prefix += raw
    return Afl(fcl, mcl, ki, mcr, mac, ml, bytes(prefix)), end


@dataclass(frozen=True, slots=True)
class Tpl:
    """Transport layer header: what precedes the application data, and how it is protected.

    ``security_mode`` comes from bits 8-12 of the configuration word; ``encrypted_blocks`` (bits 4-7) is
    how many 16-byte blocks after the header are ciphertext; anything after them is plaintext. Mode 7
    adds a configuration field extension byte (``config_extension``: key id, KDF selection).
    """

    ci: int
    access_number: int | None
    status: int | None
    config: int
    address: Address | None = None
    config_extension: int | None = None

    @property
    def security_mode(self) -> int:
        return (self.config >> 8) & 0x1F

    @property
    def encrypted_blocks(self) -> int:
        return (self.config >> 4) & 0x0F


def parse_tpl(data: bytes, offset: int) -> tuple[Tpl, int]:
    """TPL header starting at its CI; returns it and the offset of the application data."""
    ci = data[offset]
    kind = TPL_CIS.get(ci)
    if kind is None:
        raise UnsupportedCIError(ci, offset, _KNOWN_UNSUPPORTED.get(ci, "unsupported"))
    pos = offset + 1
    if kind == "none":
        return Tpl(ci, None, None, 0), pos
    address = None
    if kind == "long":
        _need(data, pos, _LONG_LEN, "TPL long header")
        raw = data[pos : pos + 8]
        address = Address(int.from_bytes(raw[4:6], "little"), bytes(raw[0:4]), raw[6], raw[7])
        pos += 8
    _need(data, pos, _SHORT_LEN, "TPL header")
    acc, status = data[pos], data[pos + 1]
    config = int.from_bytes(data[pos + 2 : pos + 4], "little")
    pos += _SHORT_LEN
    extension = None
    if (config >> 8) & 0x1F == 7:
        _need(data, pos, 1, "TPL configuration field extension")
        extension = data[pos]
        pos += 1
    return Tpl(ci, acc, status, config, address, extension), pos
