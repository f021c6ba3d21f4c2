"""SML transport protocol version 1: how a file is framed on a serial line, and finding files in a stream.

A file is ``1B1B1B1B 01010101`` (escape + start), the messages padded with ``00`` to a multiple of four
bytes, then ``1B1B1B1B 1A pp cc cc``: escape, end, the number of padding bytes and the CRC-16/X-25 of
everything from the first escape up to and including ``pp``, sent least significant byte first (as in
HDLC). Four ``1B`` inside the messages are sent twice. Since everything is four-byte aligned, escapes
are only looked for at aligned positions, which is what lets a ``1B1B1B1B`` split across a value pass.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from openami.protocols.dlms.hdlc import crc16_x25
from openami.protocols.sml.errors import SmlCrcError, SmlError, SmlFrameError

if TYPE_CHECKING:
    from openami.protocols.sml.messages import SmlFile

__all__ = ["END", "ESCAPE", "MAX_FILE_BYTES", "START", "Frame", "SmlStreamParser", "crc16_x25", "unframe"]

ESCAPE: Final = b"\x1b\x1b\x1b\x1b"
START: Final = ESCAPE + b"\x01\x01\x01\x01"
END: Final = 0x1A
_END_MARK: Final = ESCAPE + bytes([END])
#: eHZ pushes are 200-600 bytes; profile answers a few kB. The bound keeps stream buffers small.
MAX_FILE_BYTES: Final = 64 * 1024


@dataclass(frozen=True, slots=True)
class Frame:
    """A file's payload (escapes undone, padding removed) and what the transport said about it."""

    payload: bytes
    start: int
    end: int
    padding: int
    crc: int
    crc_ok: bool


def _scan(data: bytes | bytearray, start: int) -> Frame | None:
    """The frame whose start sequence is at ``start``; None when ``data`` ends before its end sequence."""
    payload = bytearray()
    pos = start + len(START)
    while True:
        if pos - start > MAX_FILE_BYTES:
            raise SmlFrameError(f"no end sequence within {MAX_FILE_BYTES} bytes", start)
        block = data[pos : pos + 4]
        if len(block) < 4:
            return None
        if block != ESCAPE:
            payload += block
            pos += 4
            continue
        escaped = data[pos + 4 : pos + 8]
        if len(escaped) < 4:
            return None
        if escaped == ESCAPE:
            payload += ESCAPE
            pos += 8
            continue
        if escaped[0] != END:
            raise SmlFrameError(f"unknown escape sequence 1B1B1B1B {escaped.hex().upper()}", pos)
        padding = escaped[1]
        if padding > 3 or padding > len(payload) or any(payload[len(payload) - padding :]):
            raise SmlFrameError(f"bad padding count {padding}", pos + 5)
        received = int.from_bytes(escaped[2:4], "little")
        expected = crc16_x25(data[start : pos + 6])
        body = bytes(payload[: len(payload) - padding])
        return Frame(body, start, pos + 8, padding, received, received == expected)


def unframe(data: bytes, *, check_crc: bool = True) -> Frame:
    """The first file in ``data`` (bytes before its start sequence and after its end are ignored).

    Raises :class:`SmlFrameError` when there is no complete file, and :class:`SmlCrcError` when
    ``check_crc`` and the file CRC does not match.
    """
    data = bytes(data)
    start = data.find(START)
    if start < 0:
        raise SmlFrameError("no start sequence 1B1B1B1B 01010101")
    frame = _scan(data, start)
    if frame is None:
        raise SmlFrameError("input ends before the end sequence 1B1B1B1B 1A", len(data))
    if check_crc and not frame.crc_ok:
        raise SmlCrcError(f"file CRC {frame.crc:04X} does not match", frame.end - 2)
    return frame


class SmlStreamParser:
    """Split a serial byte stream into SML files; broken ones land in :attr:`errors`, not in the output.

    The buffer holds at most one maximal file: bytes before a start sequence are dropped, and a file
    that breaks (bad escape, CRC, content) is skipped by looking for the next start sequence after its own.
    """

    MAX_ERRORS = 1000
    """Errors kept for inspection; older ones are discarded so a noisy line cannot grow memory."""

    def __init__(self, *, check_crc: bool = True) -> None:
        self._buf = bytearray()
        self._check_crc = check_crc
        self.errors: list[SmlError] = []

    @property
    def buffered(self) -> int:
        """Bytes held for an incomplete file."""
        return len(self._buf)

    def feed(self, data: bytes) -> list[SmlFile]:
        """Add bytes; returns the files completed by them, in order."""
        from openami.protocols.sml.messages import parse_payload

        buf = self._buf
        buf += data
        out: list[SmlFile] = []
        pos = 0
        while True:
            start = buf.find(START, pos)
            if start < 0:
                pos = max(pos, len(buf) - (len(START) - 1))  # a start sequence may arrive split in two
                break
            if buf.find(_END_MARK, start + len(START)) < 0:
                # Scan only once an end sequence has arrived, so byte-by-byte feeding stays linear.
                if len(buf) - start <= MAX_FILE_BYTES:
                    pos = start
                    break
                self.errors.append(SmlFrameError(f"no end sequence within {MAX_FILE_BYTES} bytes"))
                pos = start + 1
                continue
            try:
                frame = _scan(buf, start)
            except SmlError as exc:
                self.errors.append(exc)
                pos = start + 1
                continue
            if frame is None:
                restart = buf.find(START, start + 1)
                if restart < 0:
                    pos = start
                    break
                # The file was cut short and a new one began off the old file's 4-byte grid (on it,
                # the scan would have stopped at the start as an unknown escape), so the old scan
                # would run on through the new file and swallow it.
                self.errors.append(SmlFrameError("file cut short by a new start sequence"))
                pos = restart
                continue
            pos = frame.end
            try:
                if self._check_crc and not frame.crc_ok:
                    raise SmlCrcError(f"file CRC {frame.crc:04X} does not match", frame.end - 2)
                out.append(parse_payload(frame, check_crc=self._check_crc))
            except SmlError as exc:
                self.errors.append(exc)
        del buf[:pos]
        del self.errors[: -self.MAX_ERRORS]
        return out
