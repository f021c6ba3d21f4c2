"""Master side requests (EN 13757-2 §5, EN 13757-3 §11): what a head-end sends to read wired meters.

Sans-IO: every function returns bytes to write; :class:`FcbTracker` keeps the frame count bit per
address and :func:`narrow` splits a secondary-address pattern for the collision search, so a driver
only moves bytes and waits.

Addresses: 0 is an unconfigured slave, 1..250 primary addresses, 253 (0xFD) means "the slave selected
by secondary address", 254 broadcast with answer (only safe with one slave), 255 broadcast without.

Baud rates (EN 13757-2): a bus starts at 2400 baud, 8 data bits, even parity, one stop bit (8E1);
:func:`switch_baudrate` asks one slave to change to 300..38400 (CI 0xB8..0xBF). The slave acknowledges
with E5 at the old rate and only then changes, so the master must not switch its own line before it
has the E5, and the switched slave hears nothing sent at the old rate afterwards.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Final

from openami.protocols.mbus.errors import EncodeError
from openami.protocols.mbus.frames import (
    C_REQ_UD2,
    C_SND_NKE,
    C_SND_UD,
    FCB,
    FrameKind,
    MbusFrame,
    encode_frame,
)
from openami.protocols.mbus.header import encode_manufacturer

__all__ = [
    "ADDRESS_BROADCAST_NO_REPLY",
    "ADDRESS_BROADCAST_REPLY",
    "ADDRESS_NETWORK",
    "BAUDRATE_CI",
    "CI_APPLICATION_RESET",
    "CI_DATA_SEND",
    "CI_SELECT",
    "DEFAULT_BAUDRATE",
    "SERIAL_FRAMING",
    "FcbTracker",
    "SecondaryAddress",
    "application_reset",
    "baudrate_of_ci",
    "narrow",
    "req_ud2",
    "select_secondary",
    "set_primary_address",
    "snd_nke",
    "switch_baudrate",
]

ADDRESS_NETWORK = 0xFD
ADDRESS_BROADCAST_REPLY = 0xFE
ADDRESS_BROADCAST_NO_REPLY = 0xFF
CI_DATA_SEND = 0x51
CI_SELECT = 0x52
CI_APPLICATION_RESET = 0x50

DEFAULT_BAUDRATE: Final = 2400
SERIAL_FRAMING: Final = "8E1"
BAUDRATE_CI: Final[Mapping[int, int]] = MappingProxyType(
    {300: 0xB8, 600: 0xB9, 1200: 0xBA, 2400: 0xBB, 4800: 0xBC, 9600: 0xBD, 19200: 0xBE, 38400: 0xBF}
)
"""Baud rate -> the CI of the SND_UD asking a slave to switch to it (EN 13757-2)."""
_CI_BAUDRATE: Final = MappingProxyType({ci: rate for rate, ci in BAUDRATE_CI.items()})


def _address(address: int) -> int:
    if not 0 <= address <= 0xFF:
        raise EncodeError(f"address {address} out of range 0..255")
    return address


def snd_nke(address: int) -> bytes:
    """SND_NKE: link reset. The slave answers E5 and expects FCB = 1 on the next REQ_UD2; sent to 0xFD
    it also deselects a slave selected by secondary address."""
    return encode_frame(MbusFrame(FrameKind.SHORT, C_SND_NKE, _address(address)))


def req_ud2(address: int, fcb: bool) -> bytes:
    """REQ_UD2 (class 2 data request) with FCV set and the given frame count bit."""
    return encode_frame(MbusFrame(FrameKind.SHORT, C_REQ_UD2 | (FCB if fcb else 0), _address(address)))


def set_primary_address(address: int, new_address: int) -> bytes:
    """SND_UD with the bus-address record (DIF 01 VIF 7A): give a slave a new primary address."""
    if not 1 <= new_address <= 250:
        raise EncodeError(f"primary address {new_address} out of range 1..250")
    data = bytes([0x01, 0x7A, new_address])
    return encode_frame(MbusFrame(FrameKind.LONG, C_SND_UD, _address(address), CI_DATA_SEND, data))


def switch_baudrate(address: int, baudrate: int) -> bytes:
    """SND_UD with CI 0xB8..0xBF and no data (a control frame): switch the slave to ``baudrate``.

    :class:`EncodeError` for a rate outside 300..38400 (the standard's eight)."""
    ci = BAUDRATE_CI.get(baudrate)
    if ci is None:
        rates = ", ".join(map(str, BAUDRATE_CI))
        raise EncodeError(f"baud rate {baudrate} is not an M-Bus rate ({rates})")
    return encode_frame(MbusFrame(FrameKind.CONTROL, C_SND_UD, _address(address), ci))


def baudrate_of_ci(ci: int | None) -> int | None:
    """The rate a baud-rate switch CI asks for; None for any other CI (the slave-side rule)."""
    return None if ci is None else _CI_BAUDRATE.get(ci)


def application_reset(address: int, subcode: int | None = None) -> bytes:
    """SND_UD with CI 0x50 (EN 13757-3): the slave restarts its application, in particular the
    sequence of a multi-telegram readout, without the link reset of SND_NKE. ``subcode`` (one byte)
    names what to reset or which telegram type to send next, as the meter's manual defines; without
    it the frame is a control frame."""
    if subcode is None:
        frame = MbusFrame(FrameKind.CONTROL, C_SND_UD, _address(address), CI_APPLICATION_RESET)
    elif not 0 <= subcode <= 0xFF:
        raise EncodeError(f"application reset subcode {subcode} out of range 0..255")
    else:
        frame = MbusFrame(FrameKind.LONG, C_SND_UD, _address(address), CI_APPLICATION_RESET, bytes([subcode]))
    return encode_frame(frame)


@dataclass(frozen=True, slots=True)
class SecondaryAddress:
    """A secondary address or search pattern: ``id`` is eight hex digits where ``F`` is a wildcard
    nibble; ``None`` for manufacturer, version or medium matches anything (sent as 0xFF bytes)."""

    id: str = "FFFFFFFF"
    manufacturer: str | None = None
    version: int | None = None
    medium: int | None = None

    def __post_init__(self) -> None:
        if len(self.id) != 8 or any(c not in "0123456789Ff" for c in self.id):
            raise EncodeError(f"secondary id {self.id!r} is not eight digits (F = wildcard)")
        for name, value in (("version", self.version), ("medium", self.medium)):
            if value is not None and not 0 <= value <= 0xFF:
                raise EncodeError(f"{name} {value} out of range 0..255")

    def encode(self) -> bytes:
        """The eight bytes after CI 0x52: id (LSB first), manufacturer, version, medium."""
        ident = bytes.fromhex(self.id.upper())[::-1]
        man = 0xFFFF if self.manufacturer is None else encode_manufacturer(self.manufacturer)
        version = 0xFF if self.version is None else self.version
        medium = 0xFF if self.medium is None else self.medium
        return ident + man.to_bytes(2, "little") + bytes([version, medium])

    @property
    def complete(self) -> bool:
        return "F" not in self.id.upper()

    def matches(self, ident: str, manufacturer: str, version: int, medium: int) -> bool:
        """Does a slave with these header fields answer this pattern (the slave-side rule)?"""
        ok = all(p in "Ff" or p == c for p, c in zip(self.id, ident.upper(), strict=True))
        return (
            ok
            and self.manufacturer in (None, manufacturer)
            and self.version in (None, version)
            and self.medium in (None, medium)
        )


def select_secondary(address: SecondaryAddress) -> bytes:
    """SND_UD to 0xFD with CI 0x52: matching slaves become selected and answer E5."""
    return encode_frame(MbusFrame(FrameKind.LONG, C_SND_UD, ADDRESS_NETWORK, CI_SELECT, address.encode()))


def narrow(pattern: SecondaryAddress) -> list[SecondaryAddress]:
    """The ten patterns that replace the first wildcard digit with 0..9 (empty when none is left).

    Used after a collision: each half of the search space is asked again, so the search visits at most
    ten patterns per digit per meter, and ends because every step fixes one more digit.
    """
    pos = pattern.id.upper().find("F")
    if pos < 0:
        return []
    return [
        SecondaryAddress(
            pattern.id[:pos] + str(d) + pattern.id[pos + 1 :],
            pattern.manufacturer,
            pattern.version,
            pattern.medium,
        )
        for d in range(10)
    ]


class FcbTracker:
    """The frame count bit per primary address.

    After SND_NKE the slave expects FCB = 1; the master toggles it after every answered request and
    repeats it unchanged after a time-out, so the slave can tell a repeat (send the same data again)
    from the next request (send the next telegram of a multi-telegram readout).
    """

    def __init__(self) -> None:
        self._next: dict[int, bool] = {}

    def reset(self, address: int) -> None:
        self._next[address] = True

    def current(self, address: int) -> bool:
        return self._next.get(address, True)

    def answered(self, address: int) -> None:
        self._next[address] = not self.current(address)
