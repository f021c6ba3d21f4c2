"""The messages of IEC 62056-21 (formerly IEC 61107): request, identification, option select, data message.

Everything here is sans-IO: bytes in, values out, and back. The line framing is 7 data bits, even parity,
1 stop bit (7E1), and every sign-on starts at 300 baud (mode A/B/C; mode D pushes at 2400). The
characters exchanged are 7-bit ASCII, so parsing works on ``latin-1``-decoded text and never meets a
decoding failure: the byte value is kept, and a byte that the protocol forbids is reported as a
:class:`~openami.protocols.iec62056_21.errors.DecodeError`.

Baud rate characters (the ``Z`` of ``/XXXZ``): mode C uses digits ``0``..``6`` (300..19200), mode B the
letters ``A``..``F`` (600..19200); any other character means mode A (the meter stays at 300). ``7``-``9``
and ``G``-``I`` are reserved: they name a mode but no rate.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from types import MappingProxyType
from typing import Final, Literal

from openami.protocols.iec62056_21.errors import BccError, DecodeError, EncodeError

__all__ = [
    "ACK",
    "CRLF",
    "ETX",
    "INITIAL_BAUDRATE",
    "MODE_B_BAUDRATES",
    "MODE_C_BAUDRATES",
    "NAK",
    "SERIAL_FRAMING",
    "SOH",
    "STX",
    "Identification",
    "Mode",
    "OptionSelect",
    "bcc",
    "encode_data_message",
    "encode_identification",
    "encode_option_select",
    "encode_request",
    "mode_c_char",
    "parse_identification",
    "parse_option_select",
    "parse_request",
    "split_data_message",
]

SOH: Final = 0x01
STX: Final = 0x02
ETX: Final = 0x03
EOT: Final = 0x04
ACK: Final = 0x06
NAK: Final = 0x15
CRLF: Final = b"\r\n"

INITIAL_BAUDRATE: Final = 300
SERIAL_FRAMING: Final = "7E1"
"""Start bit, 7 data bits, even parity, 1 stop bit: the framing of every IEC 62056-21 mode."""

Mode = Literal["A", "B", "C"]

MODE_C_BAUDRATES: Final[MappingProxyType[str, int]] = MappingProxyType(
    {"0": 300, "1": 600, "2": 1200, "3": 2400, "4": 4800, "5": 9600, "6": 19200}
)
MODE_B_BAUDRATES: Final[MappingProxyType[str, int]] = MappingProxyType(
    {"A": 600, "B": 1200, "C": 2400, "D": 4800, "E": 9600, "F": 19200}
)
_RESERVED_C: Final = frozenset("789")
_RESERVED_B: Final = frozenset("GHI")

# Device address of a request: up to 32 of digits, letters and space (IEC 62056-21 §6.3.1).
_ADDRESS = re.compile(r"[0-9A-Za-z ]{0,32}")
_REQUEST = re.compile(rb"/\?([0-9A-Za-z ]{0,32})!\r\n")
# /XXXZ[\W]ident: three letters (a lower-case third letter means a 20 ms reaction time), the baud rate
# character, an optional enhanced-capability marker, the identification (printable, no / or !).
_IDENT = re.compile(r"/([A-Za-z]{3})([\x21-\x7e])(?:\\([\x21-\x7e]))?([\x20-\x7e]{0,64})")
_OPTION = re.compile(rb"\x06([0-9])([\x21-\x7e])([\x21-\x7e])\r\n")


def bcc(data: bytes | bytearray | memoryview) -> int:
    """Block check character: XOR of ``data`` (the bytes after STX or SOH, up to and including ETX/EOT).

    7 bits are significant on a 7E1 line; all bytes met in practice are ASCII, so no mask is applied.
    """
    value = 0
    for byte in bytes(data):
        value ^= byte
    return value


def mode_c_char(baudrate: int) -> str:
    """The mode C character of ``baudrate`` (``9600`` -> ``"5"``); :class:`EncodeError` if none."""
    for char, rate in MODE_C_BAUDRATES.items():
        if rate == baudrate:
            return char
    raise EncodeError(f"no mode C baud rate character for {baudrate} baud")


def encode_request(address: str = "") -> bytes:
    """``/?<address>!\\r\\n``: the sign-on. An empty address asks whichever meter hears it."""
    if _ADDRESS.fullmatch(address) is None:
        raise EncodeError(f"device address must be up to 32 letters, digits or spaces: {address!r:.40}")
    return f"/?{address}!\r\n".encode("ascii")


def parse_request(line: bytes) -> str:
    """The device address of a request message (the whole line, CR LF included)."""
    match = _REQUEST.fullmatch(line)
    if match is None:
        raise DecodeError(f"not a request message: {line!r:.60}")
    return match.group(1).decode("ascii")


@dataclass(frozen=True, slots=True)
class Identification:
    """What a meter answers to a request: ``/XXXZ\\Wident``.

    ``mode`` and ``baudrate`` are derived from ``baud_char``: the rate the meter offers (mode B/C) or 300
    (mode A); ``None`` for a reserved character.
    """

    manufacturer: str
    baud_char: str
    ident: str
    enhanced: str | None = None

    @property
    def mode(self) -> Mode:
        if self.baud_char in MODE_C_BAUDRATES or self.baud_char in _RESERVED_C:
            return "C"
        if self.baud_char in MODE_B_BAUDRATES or self.baud_char in _RESERVED_B:
            return "B"
        return "A"

    @property
    def baudrate(self) -> int | None:
        if self.mode == "A":
            return INITIAL_BAUDRATE
        return MODE_C_BAUDRATES.get(self.baud_char) or MODE_B_BAUDRATES.get(self.baud_char)

    @property
    def fast_reaction(self) -> bool:
        """A lower-case third manufacturer letter: the meter answers within 20 ms instead of 200 ms."""
        return self.manufacturer[2].islower()

    @property
    def text(self) -> str:
        """The message without ``/`` and CR LF, as meters print it (``ISK5ME382-1000``)."""
        enhanced = "" if self.enhanced is None else "\\" + self.enhanced
        return f"{self.manufacturer}{self.baud_char}{enhanced}{self.ident}"


def encode_identification(identification: Identification) -> bytes:
    """``/XXXZ[\\W]ident\\r\\n``."""
    line = "/" + identification.text
    if _IDENT.fullmatch(line) is None or parse_identification(line.encode("ascii") + CRLF) != identification:
        raise EncodeError(f"not a valid identification: {line!r:.80}")
    return line.encode("ascii") + CRLF


def parse_identification(line: bytes) -> Identification:
    """Parse an identification message; the trailing CR LF is optional (logs often drop it)."""
    text = line.decode("latin-1").removesuffix("\r\n")
    match = _IDENT.fullmatch(text)
    if match is None or "/" in match.group(4) or "!" in match.group(4):
        raise DecodeError(f"not an identification message (want /XXXZident): {text!r:.60}")
    manufacturer, baud_char, enhanced, ident = match.groups()
    return Identification(manufacturer, baud_char, ident, enhanced)


@dataclass(frozen=True, slots=True)
class OptionSelect:
    """``ACK V Z Y CR LF``: the HHU's choice after a mode C identification.

    ``protocol``: ``0`` normal, ``1`` secondary procedure, ``2`` HDLC (mode E); ``baud_char``: the mode C
    character of the rate both switch to; ``mode``: ``0`` data readout, ``1`` programming, others
    manufacturer-specific.
    """

    baud_char: str
    mode: str = "0"
    protocol: str = "0"

    @property
    def baudrate(self) -> int | None:
        return MODE_C_BAUDRATES.get(self.baud_char)


def encode_option_select(option: OptionSelect) -> bytes:
    raw = bytes([ACK]) + f"{option.protocol}{option.baud_char}{option.mode}".encode("latin-1") + CRLF
    if _OPTION.fullmatch(raw) is None:
        raise EncodeError(f"not a valid option select message: {option}")
    return raw


def parse_option_select(line: bytes) -> OptionSelect:
    match = _OPTION.fullmatch(line)
    if match is None:
        raise DecodeError(f"not an acknowledgement/option select message: {line!r:.40}")
    protocol, baud_char, mode = (group.decode("ascii") for group in match.groups())
    return OptionSelect(baud_char, mode, protocol)


def encode_data_message(block: str) -> bytes:
    """``STX block ETX BCC``; ``block`` is the data block including its final ``!\\r\\n``."""
    try:
        body = block.encode("ascii")
    except UnicodeEncodeError as exc:
        raise EncodeError("a data block is 7-bit ASCII") from exc
    if any(b in (STX, ETX, SOH, EOT) for b in body):
        raise EncodeError("a data block cannot hold STX, ETX, SOH or EOT")
    framed = body + bytes([ETX])
    return bytes([STX]) + framed + bytes([bcc(framed)])


def split_data_message(data: bytes, *, check_bcc: bool = True, start: int = 0) -> tuple[bytes, int]:
    """The block of the data message at ``data[start]`` (an STX) and the offset just after its BCC.

    Raises :class:`DecodeError` when STX, ETX or the BCC is missing (a truncated readout) and
    :class:`BccError` when ``check_bcc`` and the BCC does not match.
    """
    if start >= len(data) or data[start] != STX:
        raise DecodeError("data message does not start with STX", start)
    end = data.find(bytes([ETX]), start + 1)
    if end < 0:
        raise DecodeError("data message has no ETX (truncated?)", len(data))
    if end + 1 >= len(data):
        raise DecodeError("data message has no BCC after ETX (truncated?)", len(data))
    computed, received = bcc(data[start + 1 : end + 1]), data[end + 1]
    if check_bcc and computed != received:
        raise BccError(computed, received, end + 1)
    return data[start + 1 : end], end + 2
