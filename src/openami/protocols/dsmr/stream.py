"""Find telegrams in the byte stream of a P1 port.

A P1 port pushes a telegram every second (DSMR 5) or ten seconds (older) and nothing else, but a reader
may start mid-telegram, a cable may drop bytes and some meters add noise between telegrams. The parser
keeps bytes from a ``/`` at a line start until the line after ``!`` ends, parses that, and on any
trouble drops the bad part and looks for the next ``/``. The buffer never holds more than one maximal
telegram, whatever arrives.
"""

from __future__ import annotations

from datetime import tzinfo
from typing import Final

from openami.protocols.dsmr.errors import DsmrError, TelegramError
from openami.protocols.dsmr.telegram import DEFAULT_TZ, MAX_TELEGRAM_BYTES, DsmrTelegram, parse_telegram

__all__ = ["DsmrStreamParser"]

#: The CRC line is at most ``!`` + 4 hex digits + CR LF; a little slack for meters that pad it.
_TRAILER_MAX: Final = 16


class DsmrStreamParser:
    """Split a P1 byte stream into telegrams; broken ones land in :attr:`errors`, not in the output."""

    MAX_ERRORS = 1000
    """Errors kept for inspection; older ones are discarded so a noisy line cannot grow memory."""

    def __init__(self, *, check_crc: bool = True, tz: tzinfo = DEFAULT_TZ) -> None:
        self._buf = bytearray()
        self._check_crc = check_crc
        self._tz = tz
        self.errors: list[DsmrError] = []

    @property
    def buffered(self) -> int:
        """Bytes held for an incomplete telegram (never more than one maximal telegram)."""
        return len(self._buf)

    def feed(self, data: bytes) -> list[DsmrTelegram]:
        """Add bytes; returns the telegrams completed by them, in order."""
        self._buf += data
        out: list[DsmrTelegram] = []
        while True:
            telegram, more = self._next()
            if telegram is not None:
                out.append(telegram)
            if not more:
                break
        del self.errors[: -self.MAX_ERRORS]
        return out

    def _skip_to_start(self) -> bool:
        """Drop bytes before the next ``/``; False when there is none (the buffer is then emptied)."""
        buf = self._buf
        start = buf.find(b"/")
        if start < 0:
            if buf.strip():
                self.errors.append(TelegramError(f"{len(buf)} bytes outside a telegram"))
            buf.clear()
            return False
        if buf[:start].strip():
            self.errors.append(TelegramError(f"{start} bytes outside a telegram"))
        del buf[:start]
        return True

    def _next(self) -> tuple[DsmrTelegram | None, bool]:
        """One step: (telegram or None, whether to call again)."""
        if not self._skip_to_start():
            return None, False
        buf = self._buf
        bang = buf.find(b"\n!")
        restart = buf.find(b"\n/", 0, bang if bang >= 0 else len(buf))
        if restart >= 0:
            self.errors.append(TelegramError("telegram cut short by a new '/' header"))
            del buf[: restart + 1]
            return None, True
        if bang < 0:
            if len(buf) > MAX_TELEGRAM_BYTES:
                # No header starts a line in the buffer either (checked above): none of it is usable.
                self.errors.append(TelegramError(f"no '!' within {MAX_TELEGRAM_BYTES} bytes"))
                buf.clear()
                return None, False
            return None, False
        end = buf.find(b"\n", bang + 2)
        if end < 0:
            if len(buf) - bang > _TRAILER_MAX:
                end = bang + _TRAILER_MAX  # a CRC line that never ends: parse what is there
            else:
                return None, False
        chunk = bytes(buf[: end + 1])
        del buf[: end + 1]
        try:
            return parse_telegram(chunk, check_crc=self._check_crc, tz=self._tz), True
        except DsmrError as exc:
            self.errors.append(exc)
            return None, True
