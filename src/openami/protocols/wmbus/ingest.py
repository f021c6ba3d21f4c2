"""Telegram ingestion from the text receivers print: one telegram per line, in a few documented formats.

Supported line formats (blank lines and lines starting with ``#`` are skipped):

* plain hex, optionally ``0x``-prefixed, with spaces or the separators ``|``, ``#``, ``_`` that
  annotated dumps (and the wmbusmeters corpora) use to mark field boundaries: ``2E44 3330 ...``;
* ``telegram=|<hex>|<hex>|+<seconds>``: the simulation format of wmbusmeters (separators ignored,
  the ``+N`` replay offset dropped);
* rtl-wmbus: ``MODE;crc_ok;crc_ok;timestamp;rssi;...;0x<hex>``, e.g. ``T1;1;1;2019-04-03 19:00:42.000;
  97;148;88888888;0x2e44...``; the mode (T1, C1, S1) and timestamp are kept, the RSSI field as printed;
* metadata then hex, separated by whitespace or commas: ``-72 2E44...`` or ``rssi=-72 2E44...``; the last
  field is the telegram, a leading signed integer (or ``rssi=``) is taken as RSSI in dBm.

Radio sticks that append an RSSI byte to the telegram (``len == L + 2``) are recognised and the byte
removed (:attr:`IngestedTelegram.rssi_byte`). Everything is bounded: a line longer than
:data:`MAX_LINE` characters is rejected, and the stream parsers (:class:`LineSplitter` for the lines
themselves, :class:`LineParser` for their telegrams) never buffer more than one such line.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Final

from openami.protocols.wmbus.errors import DecodeError

__all__ = [
    "MAX_LINE",
    "IngestedTelegram",
    "LineParser",
    "LineSplitter",
    "LineTooLong",
    "parse_hex",
    "parse_line",
]

#: Longest accepted line: a 290-byte frame in hex with separators and metadata fits comfortably.
MAX_LINE: Final = 2048
_MAX_ERRORS: Final = 100
_SEPARATORS: Final = re.compile(r"[\s|#_:]")
_HEX: Final = re.compile(r"[0-9a-fA-F]*")
_RSSI: Final = re.compile(r"(?:rssi=)?(-?\d{1,3})(?:dbm)?", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class IngestedTelegram:
    """One telegram taken from a line, with whatever the receiver said about it."""

    frame: bytes
    source_format: str
    mode: str | None = None
    timestamp: str | None = None
    rssi: int | None = None
    rssi_byte: int | None = None


def parse_hex(text: str) -> bytes:
    """Hex with optional ``0x`` and separators to bytes; :class:`DecodeError` when it is not hex."""
    cleaned = _SEPARATORS.sub("", text)
    if cleaned[:2].lower() == "0x":
        cleaned = cleaned[2:]
    if not cleaned or len(cleaned) % 2 or not _HEX.fullmatch(cleaned):
        raise DecodeError(f"not a hex telegram: {text[:40]!r}")
    return bytes.fromhex(cleaned)


def _trailing_rssi(frame: bytes) -> tuple[bytes, int | None]:
    if len(frame) >= 2 and len(frame) == frame[0] + 2:
        return frame[:-1], frame[-1]
    return frame, None


def parse_line(line: str) -> IngestedTelegram | None:
    """The telegram on one printed line, ``None`` for blank/comment lines; :class:`DecodeError` otherwise."""
    if len(line) > MAX_LINE:
        raise DecodeError(f"line of {len(line)} characters is longer than {MAX_LINE}")
    text = line.strip()
    if not text or text.startswith("#"):
        return None
    if text.startswith("telegram="):
        body = text[len("telegram=") :]
        body = re.sub(r"\+\d+\s*$", "", body)
        frame, rssi_byte = _trailing_rssi(parse_hex(body))
        return IngestedTelegram(frame, "wmbusmeters", rssi_byte=rssi_byte)
    if ";" in text:
        fields = text.split(";")
        if len(fields) < 2 or not fields[-1].strip().lower().startswith("0x"):
            raise DecodeError("rtl-wmbus line without a 0x telegram field")
        frame, rssi_byte = _trailing_rssi(parse_hex(fields[-1]))
        rssi = int(fields[4]) if len(fields) > 5 and fields[4].strip().lstrip("-").isdigit() else None
        return IngestedTelegram(
            frame,
            "rtl-wmbus",
            mode=fields[0].strip() or None,
            timestamp=fields[3].strip() if len(fields) > 4 else None,
            rssi=rssi,
            rssi_byte=rssi_byte,
        )
    parts = [p for p in re.split(r"[\s,]+", text) if p]
    rssi = None
    if len(parts) > 1:
        match = _RSSI.fullmatch(parts[0])
        if match is not None and (parts[0].startswith(("-", "+")) or "rssi" in parts[0].lower()):
            rssi = int(match.group(1))
            parts = parts[1:]
        elif len(parts) == 2 and len(parts[0]) < 4:
            parts = parts[1:]  # a short leading field (length, channel): metadata
    joined = "".join(parts)
    try:
        frame = parse_hex(joined)
        fmt = "hex"
    except DecodeError:
        frame = parse_hex(parts[-1])  # metadata fields we do not know, then the telegram
        fmt = "fields+hex"
    frame, rssi_byte = _trailing_rssi(frame)
    return IngestedTelegram(frame, fmt, rssi=rssi, rssi_byte=rssi_byte)


@dataclass(frozen=True, slots=True)
class LineTooLong:
    """Marks a line that grew past the limit and was dropped; ``head`` is its first bytes, for messages."""

    head: bytes


@dataclass(slots=True)
class LineSplitter:
    """Cuts a byte stream (serial port, socket) into lines of at most ``max_line`` bytes, sans-IO.

    Why bounded: a receiver that babbles without newlines (wrong baud rate, binary protocol, noise) must
    not grow a buffer without end. A line that passes the limit is reported once as :class:`LineTooLong`
    and its bytes are dropped up to the next newline; memory stays at one line. ``\r`` before the newline
    is removed (many sticks end lines with CR LF).
    """

    max_line: int = MAX_LINE
    _buffer: bytearray = field(default_factory=bytearray)
    _discarding: bool = False

    @property
    def buffered(self) -> int:
        """Bytes of an unfinished line held right now (never more than ``max_line``)."""
        return len(self._buffer)

    def feed(self, chunk: bytes) -> list[bytes | LineTooLong]:
        out: list[bytes | LineTooLong] = []
        self._buffer += chunk
        while True:
            newline = self._buffer.find(b"\n")
            if newline < 0:
                if self._discarding:
                    self._buffer.clear()
                elif len(self._buffer) > self.max_line:
                    out.append(LineTooLong(bytes(self._buffer[:40])))
                    self._buffer.clear()
                    self._discarding = True
                return out
            raw = bytes(self._buffer[:newline])
            del self._buffer[: newline + 1]
            if self._discarding:
                self._discarding = False
                continue
            if raw.endswith(b"\r"):
                raw = raw[:-1]
            out.append(LineTooLong(raw[:40]) if len(raw) > self.max_line else raw)

    def close(self) -> bytes | None:
        """The last line if the stream ended without a newline after it (None if there is none)."""
        last = None if self._discarding or not self._buffer else bytes(self._buffer)
        self._buffer.clear()
        self._discarding = False
        return last


@dataclass(slots=True)
class LineParser:
    """Feed bytes as they come from a serial port or socket; get the telegrams of each completed line.

    Bad lines do not stop the stream: they are counted and the last :data:`_MAX_ERRORS` reasons kept.
    A line that grows past :data:`MAX_LINE` is dropped as a whole (up to its newline).
    """

    errors: list[str] = field(default_factory=list)
    error_count: int = 0
    _splitter: LineSplitter = field(default_factory=LineSplitter)

    @property
    def buffered(self) -> int:
        return self._splitter.buffered

    def feed(self, chunk: bytes) -> list[IngestedTelegram]:
        out: list[IngestedTelegram] = []
        for item in self._splitter.feed(chunk):
            if isinstance(item, LineTooLong):
                self._error("line too long")
            else:
                self._line(item, out)
        return out

    def close(self) -> list[IngestedTelegram]:
        """Flush a last line that had no newline."""
        out: list[IngestedTelegram] = []
        last = self._splitter.close()
        if last is not None:
            self._line(last, out)
        return out

    def _line(self, raw: bytes, out: list[IngestedTelegram]) -> None:
        try:
            telegram = parse_line(raw.decode("ascii", errors="replace"))
        except DecodeError as exc:
            self._error(str(exc))
            return
        if telegram is not None:
            out.append(telegram)

    def _error(self, reason: str) -> None:
        self.error_count += 1
        self.errors.append(reason)
        del self.errors[:-_MAX_ERRORS]
