"""EN 13757-2 link layer: the four wired M-Bus frame formats, their checks, and a stream splitter.

* single character ``E5`` (ACK),
* short frame ``10 C A CS 16`` (SND_NKE, REQ_UD1/2),
* control frame ``68 03 03 68 C A CI CS 16`` (a long frame without data),
* long frame ``68 L L 68 C A CI data CS 16``, L = 3 + len(data), at most 255.

CS is the arithmetic sum of C, A, CI and data modulo 256. The decoder checks every field it can before
trusting the length, and the stream parser keeps at most one maximal frame plus a read's worth of bytes,
so a line full of noise costs linear time and bounded memory.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from enum import Enum

from openami.protocols.mbus.errors import EncodeError, FrameError

__all__ = [
    "ACK",
    "C_REQ_UD1",
    "C_REQ_UD2",
    "C_RSP_UD",
    "C_SND_NKE",
    "C_SND_UD",
    "FCB",
    "MAX_FRAME",
    "FrameKind",
    "FrameStreamParser",
    "MbusFrame",
    "checksum",
    "encode_frame",
    "parse_frame",
]

ACK = 0xE5
START_SHORT = 0x10
START_LONG = 0x68
STOP = 0x16

C_SND_NKE = 0x40
C_SND_UD = 0x53
C_REQ_UD1 = 0x5A
C_REQ_UD2 = 0x5B
C_RSP_UD = 0x08
FCB = 0x20
"""Frame count bit: toggled by the master on every new REQ_UD2/SND_UD so a slave can tell a repeat."""

MAX_DATA = 252
"""L counts C, A and CI too, and is one byte: at most 252 bytes of application data per frame."""
MAX_FRAME = 4 + 255 + 2


class FrameKind(Enum):
    """The four formats; CONTROL is a long frame with no data (L = 3)."""

    ACK = "ack"
    SHORT = "short"
    CONTROL = "control"
    LONG = "long"


@dataclass(frozen=True, slots=True)
class MbusFrame:
    """One link-layer frame. ``ci`` is ``None`` only for ACK and short frames."""

    kind: FrameKind
    control: int = 0
    address: int = 0
    ci: int | None = None
    data: bytes = b""


def checksum(parts: Iterable[int]) -> int:
    """The EN 13757-2 check sum: arithmetic sum modulo 256 (not a CRC)."""
    return sum(parts) & 0xFF


def encode_frame(frame: MbusFrame) -> bytes:
    """The wire bytes of ``frame``; :class:`EncodeError` for fields that do not fit their byte."""
    if frame.kind is FrameKind.ACK:
        return bytes([ACK])
    for name, value in (("control", frame.control), ("address", frame.address)):
        if not 0 <= value <= 0xFF:
            raise EncodeError(f"{name} {value} out of range 0..255")
    if frame.kind is FrameKind.SHORT:
        if frame.data or frame.ci is not None:
            raise EncodeError("a short frame carries no CI or data")
        return bytes(
            [START_SHORT, frame.control, frame.address, checksum((frame.control, frame.address)), STOP]
        )
    if frame.ci is None or not 0 <= frame.ci <= 0xFF:
        raise EncodeError("a control or long frame needs a CI byte 0..255")
    if frame.kind is FrameKind.CONTROL and frame.data:
        raise EncodeError("a control frame carries no data")
    if len(frame.data) > MAX_DATA:
        raise EncodeError(f"{len(frame.data)} data bytes exceed the {MAX_DATA} a frame can carry")
    body = bytes([frame.control, frame.address, frame.ci]) + frame.data
    length = len(body)
    return bytes([START_LONG, length, length, START_LONG]) + body + bytes([checksum(body), STOP])


def parse_frame(data: bytes) -> MbusFrame:
    """Exactly one frame filling ``data``; :class:`FrameError` for anything else (trailing bytes too)."""
    frame, used = _parse_at(data, 0)
    if frame is None:
        raise FrameError(f"incomplete frame: {len(data)} bytes", len(data))
    if used != len(data):
        raise FrameError(f"{len(data) - used} bytes after the frame", used)
    return frame


def _parse_at(buf: bytes | bytearray, pos: int) -> tuple[MbusFrame | None, int]:
    """The frame starting at ``pos`` and its end, ``(None, pos)`` when more bytes are needed."""
    n = len(buf) - pos
    if n <= 0:
        return None, pos
    start = buf[pos]
    if start == ACK:
        return MbusFrame(FrameKind.ACK), pos + 1
    if start == START_SHORT:
        if n < 5:
            return None, pos
        c, a, cs, stop = buf[pos + 1 : pos + 5]
        if cs != checksum((c, a)):
            raise FrameError(f"short frame checksum {cs:#04x}, expected {checksum((c, a)):#04x}", pos + 3)
        if stop != STOP:
            raise FrameError(f"short frame stop byte {stop:#04x}", pos + 4)
        return MbusFrame(FrameKind.SHORT, c, a), pos + 5
    if start != START_LONG:
        raise FrameError(f"no frame starts with {start:#04x}", pos)
    if n < 4:
        if n >= 3 and buf[pos + 1] != buf[pos + 2]:
            raise FrameError("long frame length fields differ", pos + 2)
        return None, pos
    length, length2, start2 = buf[pos + 1], buf[pos + 2], buf[pos + 3]
    if length != length2:
        raise FrameError(f"long frame length fields differ ({length} / {length2})", pos + 2)
    if start2 != START_LONG:
        raise FrameError(f"second start byte {start2:#04x}", pos + 3)
    if length < 3:
        raise FrameError(f"long frame length {length} below 3 (C, A, CI)", pos + 1)
    end = pos + 4 + length + 2
    if len(buf) < end:
        return None, pos
    body = bytes(buf[pos + 4 : pos + 4 + length])
    cs, stop = buf[end - 2], buf[end - 1]
    if cs != checksum(body):
        raise FrameError(f"long frame checksum {cs:#04x}, expected {checksum(body):#04x}", end - 2)
    if stop != STOP:
        raise FrameError(f"long frame stop byte {stop:#04x}", end - 1)
    kind = FrameKind.CONTROL if length == 3 else FrameKind.LONG
    return MbusFrame(kind, body[0], body[1], body[2], body[3:]), end


_START = re.compile(b"[\xe5\x10\x68]")
MAX_ERRORS = 64
"""Errors the stream parser remembers; older ones are dropped so noise cannot grow memory."""


class FrameStreamParser:
    """Splits a byte stream (serial line, TCP converter) into frames, resynchronising after garbage.

    A byte that cannot start a frame, or a candidate frame that fails its checks, costs one byte: the
    parser moves on to the next possible start, so a frame that follows noise is still found. Errors
    are kept in :attr:`errors` (the last :data:`MAX_ERRORS`), never raised: noise is normal on a bus.
    """

    def __init__(self) -> None:
        self._buf = bytearray()
        self.errors: list[FrameError] = []

    @property
    def buffered(self) -> int:
        """Bytes held while waiting for the rest of a frame (at most one maximal frame)."""
        return len(self._buf)

    def feed(self, data: bytes) -> list[MbusFrame]:
        """Frames completed by ``data``, in order."""
        self._buf += data
        out: list[MbusFrame] = []
        pos = 0
        buf = self._buf
        while pos < len(buf):
            try:
                frame, end = _parse_at(buf, pos)
            except FrameError as exc:
                self._error(exc)
                pos = self._next_start(buf, pos + 1)
                continue
            if frame is None:
                break
            out.append(frame)
            pos = end
        del buf[:pos]
        if len(buf) > MAX_FRAME:  # cannot happen with valid length bytes; a guard against future edits
            del buf[: len(buf) - MAX_FRAME]
        return out

    def _next_start(self, buf: bytearray, pos: int) -> int:
        found = _START.search(buf, pos)
        return found.start() if found else len(buf)

    def _error(self, exc: FrameError) -> None:
        self.errors.append(exc)
        if len(self.errors) > MAX_ERRORS:
            del self.errors[0]
