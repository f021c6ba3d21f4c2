"""The IEC 62056-47 wrapper that carries APDUs over TCP and UDP (sans-IO).

Each APDU is preceded by an 8-byte header of big-endian 16-bit words: version (always 0x0001), source
wPort, destination wPort and the APDU length. Unlike HDLC there is no flag and no check sequence, so a
corrupt header leaves no way to find the next frame: the stream parser stops for good until reset, and
the caller closes the connection.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from openami.protocols.dlms.errors import EncodeError, FrameError

__all__ = [
    "HEADER_SIZE",
    "VERSION",
    "WrapperFrame",
    "WrapperStreamParser",
    "decode_wrapper",
    "encode_wrapper",
]

VERSION = 0x0001
HEADER_SIZE = 8
_HEADER = struct.Struct(">HHHH")


@dataclass(frozen=True, slots=True)
class WrapperFrame:
    """One wrapped APDU between two wPorts (application association endpoints)."""

    source: int
    destination: int
    apdu: bytes


def encode_wrapper(frame: WrapperFrame) -> bytes:
    """Header plus APDU; :class:`EncodeError` when a port or the length does not fit 16 bits."""
    try:
        header = _HEADER.pack(VERSION, frame.source, frame.destination, len(frame.apdu))
    except struct.error as exc:
        raise EncodeError(f"wrapper frame does not fit 16-bit fields: {exc}") from exc
    return header + frame.apdu


def _read_header(buf: bytes | bytearray, offset: int, max_length: int) -> tuple[int, int, int]:
    version, source, destination, length = _HEADER.unpack_from(buf, offset)
    if version != VERSION:
        raise FrameError(f"wrapper version 0x{version:04X}, not 0x0001", offset)
    if length > max_length:
        raise FrameError(f"wrapper length {length} above the limit {max_length}", offset + 6)
    return source, destination, length


def decode_wrapper(raw: bytes, max_length: int = 0xFFFF) -> WrapperFrame:
    """Decode exactly one wrapper frame; any mismatch between header and bytes is a :class:`FrameError`."""
    if len(raw) < HEADER_SIZE:
        raise FrameError(f"wrapper frame of {len(raw)} bytes is shorter than its header", len(raw))
    source, destination, length = _read_header(raw, 0, max_length)
    if len(raw) != HEADER_SIZE + length:
        raise FrameError(f"wrapper length field says {length} APDU bytes, got {len(raw) - HEADER_SIZE}", 6)
    return WrapperFrame(source, destination, bytes(raw[HEADER_SIZE:]))


class WrapperStreamParser:
    """Cut a TCP byte stream into wrapper frames.

    Frames may be split over, or joined within, ``feed`` calls. A bad header raises :class:`FrameError`
    and poisons the parser: every later ``feed`` raises too until :meth:`reset`, because the position of
    the next header can no longer be known.
    """

    def __init__(self, max_length: int = 0xFFFF) -> None:
        self.max_length = max_length
        self._buf = bytearray()
        self._error: FrameError | None = None

    def feed(self, data: bytes) -> list[WrapperFrame]:
        """Add bytes; returns the frames they complete, or raises when the stream is (or was) broken."""
        if self._error is not None:
            raise FrameError(f"wrapper stream broken earlier ({self._error.reason}); reset() first")
        buf = self._buf
        buf += data
        frames: list[WrapperFrame] = []
        pos = 0
        try:
            while len(buf) - pos >= HEADER_SIZE:
                source, destination, length = _read_header(buf, pos, self.max_length)
                end = pos + HEADER_SIZE + length
                if len(buf) < end:
                    break
                frames.append(WrapperFrame(source, destination, bytes(buf[pos + HEADER_SIZE : end])))
                pos = end
        except FrameError as exc:
            self._error = exc
            buf.clear()
            raise
        del buf[:pos]
        return frames

    def reset(self) -> None:
        """Forget buffered bytes and any error, as for a new connection."""
        self._buf = bytearray()
        self._error = None
