"""Programming mode of IEC 62056-21 mode C: the command messages (P password, W write, B break).

Why: a legacy meter's clock can only be set in programming mode, entered with the option select
``ACK 0 Z 1 CR LF``. The meter then sends the operand ``SOH P 0 STX (seed) ETX BCC`` (its password
request); the HHU answers ``SOH P 1 STX (password) ETX BCC``, which the meter ACKs (0x06) or NAKs
(0x15); a write is ``SOH W 1 STX address(value) ETX BCC`` (``W5`` is the same with a manufacturer's
formatted value), answered ACK, NAK or the error message ``STX (text) ETX BCC``; ``SOH B 0 ETX BCC``
ends the session. The BCC is the XOR of everything after SOH (or STX) up to and including ETX, as for
the data message.

Sans-IO: :func:`encode_command`/:func:`parse_command` for the SOH-framed messages,
:func:`parse_reply` for the meter's one-byte or STX-framed answers, and :func:`clock_writes` for the
time (``0.9.1``, ``hhmmss``) and date (``0.9.2``, ``YYMMDD``) writes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Final, Literal

from openami.protocols.iec62056_21.errors import BccError, DecodeError, EncodeError
from openami.protocols.iec62056_21.messages import ACK, ETX, NAK, SOH, STX, bcc, split_data_message

__all__ = [
    "BREAK",
    "DATE_ADDRESS",
    "TIME_ADDRESS",
    "Command",
    "Reply",
    "clock_writes",
    "encode_command",
    "encode_password",
    "encode_write",
    "parse_command",
    "parse_reply",
    "split_frame",
]

TIME_ADDRESS: Final = "0.9.1"
DATE_ADDRESS: Final = "0.9.2"
_COMMANDS: Final = frozenset("PWRBE")
"""P password, W write, R read, B break, E execute (IEC 62056-21 §6.3.14)."""
_DATA: Final = re.compile(r"[\x20-\x7e]*")
_VALUE: Final = re.compile(r"[^()/!\x00-\x1f\x7f]*")


@dataclass(frozen=True, slots=True)
class Command:
    """``SOH command type [STX data] ETX BCC``: ``command`` one of ``PWRBE``, ``type`` a digit."""

    command: str
    type: str
    data: str | None = None


def encode_command(command: Command) -> bytes:
    """The framed command; :class:`EncodeError` for an unknown command, a non-digit type or data that
    is not printable ASCII."""
    if command.command not in _COMMANDS or len(command.type) != 1 or not command.type.isdigit():
        raise EncodeError(f"not a programming command: {command.command!r}{command.type!r}")
    body = (command.command + command.type).encode("ascii")
    if command.data is not None:
        if _DATA.fullmatch(command.data) is None:
            raise EncodeError(f"command data must be printable ASCII: {command.data!r:.40}")
        body += bytes([STX]) + command.data.encode("ascii")
    framed = body + bytes([ETX])
    return bytes([SOH]) + framed + bytes([bcc(framed)])


def split_frame(data: bytes | bytearray, start: int = 0) -> int | None:
    """The offset just after the SOH- or STX-framed message at ``data[start]`` (its BCC), or None while
    it is incomplete."""
    end = data.find(bytes([ETX]), start + 1)
    return None if end < 0 or end + 1 >= len(data) else end + 2


def parse_command(frame: bytes) -> Command:
    """One whole ``SOH ... ETX BCC`` frame; :class:`BccError` on a wrong BCC, :class:`DecodeError` else."""
    end = split_frame(frame)
    if not frame or frame[0] != SOH or end != len(frame):
        raise DecodeError(f"not a programming command message: {frame!r:.40}")
    computed, received = bcc(frame[1:-1]), frame[-1]
    if computed != received:
        raise BccError(computed, received, len(frame) - 1)
    body = frame[1:-2].decode("latin-1")
    head, stx, data = body.partition(chr(STX))
    if len(head) != 2 or head[0] not in _COMMANDS or not head[1].isdigit():
        raise DecodeError(f"not a programming command: {head!r:.10}")
    return Command(head[0], head[1], data if stx else None)


def encode_password(password: str) -> bytes:
    """``SOH P 1 STX (password) ETX BCC``: the password in clear (type 1)."""
    if _VALUE.fullmatch(password) is None:
        raise EncodeError("a password cannot hold ( ) / ! or control characters")
    return encode_command(Command("P", "1", f"({password})"))


def encode_write(address: str, value: str, kind: str = "1") -> bytes:
    """``SOH W kind STX address(value) ETX BCC``: ``kind`` ``1`` (ASCII value) or ``5`` (formatted)."""
    if _VALUE.fullmatch(address) is None or _VALUE.fullmatch(value) is None:
        raise EncodeError(f"not a writable data set: {address!r:.20}({value!r:.20})")
    return encode_command(Command("W", kind, f"{address}({value})"))


BREAK: Final = encode_command(Command("B", "0"))
"""``SOH B 0 ETX BCC``: leave programming mode (the meter answers nothing)."""


def clock_writes(when: datetime, kind: str = "1") -> tuple[bytes, bytes]:
    """The time and the date writes for the meter's local time ``when`` (its zone already applied)."""
    return (
        encode_write(TIME_ADDRESS, when.strftime("%H%M%S"), kind),
        encode_write(DATE_ADDRESS, when.strftime("%y%m%d"), kind),
    )


@dataclass(frozen=True, slots=True)
class Reply:
    """A meter's answer in programming mode: ``ack``, ``nak``, ``error`` (``text``: what it said), or
    ``operand`` (``command``: the P0 password request, for instance)."""

    kind: Literal["ack", "nak", "error", "operand"]
    text: str = ""
    command: Command | None = None


def parse_reply(data: bytes | bytearray) -> tuple[Reply, int] | None:
    """The first answer in ``data`` and the offset after it; None while it is incomplete."""
    if not data:
        return None
    first = data[0]
    if first == ACK:
        return Reply("ack"), 1
    if first == NAK:
        return Reply("nak"), 1
    end = split_frame(data)
    if first not in (SOH, STX):
        raise DecodeError(f"not an answer in programming mode: {bytes(data[:20])!r}")
    if end is None:
        return None
    if first == SOH:
        command = parse_command(bytes(data[:end]))
        return Reply("operand", (command.data or ""), command), end
    block, _ = split_data_message(bytes(data[:end]))
    text = block.decode("latin-1")
    return Reply("error", text.removeprefix("(").removesuffix(")")), end
