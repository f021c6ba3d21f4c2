"""The HHU side of a data readout as a sans-IO state machine: what to send, what to expect, when to
switch the baud rate.

Why sans-IO: the same steps run over a serial line (where the baud switch is a ``termios`` call), over
an RS-485/optical-to-TCP converter (where it is a no-op or a converter command) and in tests without
any line at all. The driver moves bytes; this class decides.

One session reads one meter once::

    session = ModeCSession(max_baudrate=9600)
    line.write(session.start())                  # /?!\\r\\n at 300 baud
    for event in session.receive(chunk): ...     # Identified, then ReadoutReceived

On :class:`Identified` the driver writes ``event.ack`` (mode C) at the current rate, waits until it has
left the line, then sets the line to ``event.baudrate``; with ``ack`` None (modes A and B) it switches
at once, because the meter sends its data message right after the identification. The mode is the
meter's: a mode C session started against a mode A or B meter follows it, as the standard requires
of an HHU.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Final

from openami.protocols.iec62056_21.datasets import parse_data_block
from openami.protocols.iec62056_21.errors import DecodeError, Iec62056Error, SessionError
from openami.protocols.iec62056_21.messages import (
    ACK,
    CRLF,
    ETX,
    INITIAL_BAUDRATE,
    MODE_C_BAUDRATES,
    STX,
    Identification,
    OptionSelect,
    encode_option_select,
    encode_request,
    parse_identification,
    split_data_message,
)
from openami.protocols.iec62056_21.readout import Readout

__all__ = ["Identified", "ModeCSession", "ReadoutReceived", "SessionEvent", "SessionState"]

_MAX_LINE: Final = 128
_NOISE: Final = b" \t\r\n\x00\x7f"


class SessionState(enum.Enum):
    IDLE = "idle"
    AWAIT_IDENTIFICATION = "await identification"
    AWAIT_DATA = "await data message"
    DONE = "done"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class Identified:
    """The meter identified itself: send ``ack`` (if any) at the old rate, then run at ``baudrate``."""

    identification: Identification
    ack: bytes | None
    baudrate: int


@dataclass(frozen=True, slots=True)
class ReadoutReceived:
    readout: Readout


SessionEvent = Identified | ReadoutReceived


class ModeCSession:
    """A mode C data readout (following the meter into mode A or B when its identification says so).

    ``max_baudrate``: the highest rate the HHU accepts (the lower of it and the meter's offer is used);
    ``switch_baudrate`` False asks a mode C meter to stay at the line rate (a converter at a fixed rate).
    ``line_baudrate``: the rate the sign-on is sent at, 300 as the standard says; a converter fixed at
    another rate, in front of meters set to that rate (RS-485 installations do this), gives its rate
    here, and the option select then asks the meter to stay at it.
    ``max_readout``: bytes of data message accepted before giving up (a meter babbling without ETX).
    """

    def __init__(
        self,
        address: str = "",
        *,
        max_baudrate: int = 19200,
        switch_baudrate: bool = True,
        check_bcc: bool = True,
        max_readout: int = 1 << 20,
        line_baudrate: int = INITIAL_BAUDRATE,
    ) -> None:
        if line_baudrate not in MODE_C_BAUDRATES.values():
            raise SessionError(f"line rate {line_baudrate} is not a mode C baud rate")
        self.request = encode_request(address)
        self.max_baudrate = max_baudrate
        self.switch_baudrate = switch_baudrate
        self.check_bcc = check_bcc
        self.max_readout = max_readout
        self.line_baudrate = line_baudrate
        self.state = SessionState.IDLE
        self.baudrate = line_baudrate
        self.identification: Identification | None = None
        self.option: OptionSelect | None = None
        self._buffer = bytearray()

    def start(self) -> bytes:
        """The request message to send at the line rate (300 baud); (re)starts the session."""
        self.state = SessionState.AWAIT_IDENTIFICATION
        self.baudrate = self.line_baudrate
        self.identification = self.option = None
        self._buffer.clear()
        return self.request

    def receive(self, data: bytes) -> list[SessionEvent]:
        """Feed bytes from the line; returns what happened. Raises :class:`DecodeError` (malformed or
        wrong BCC) or :class:`SessionError`; the session is then FAILED until :meth:`start`."""
        if self.state in (SessionState.IDLE, SessionState.FAILED):
            raise SessionError(f"receive() while {self.state.value}: call start() first")
        if self.state is SessionState.DONE:
            return []  # a meter may pad after its BCC; nothing more is expected
        self._buffer += data
        events: list[SessionEvent] = []
        try:
            if self.state is SessionState.AWAIT_IDENTIFICATION:
                identified = self._identification()
                if identified is None:
                    return events
                events.append(identified)
            readout = self._data_message()
            if readout is not None:
                events.append(ReadoutReceived(readout))
        except Iec62056Error:
            self.state = SessionState.FAILED
            raise
        return events

    def _strip_leading(self, echo: int) -> None:
        """Drop line noise and, when the buffer starts with our own echoed ``echo`` line, that line."""
        buffer = self._buffer
        while True:
            start = 0
            while start < len(buffer) and buffer[start] in _NOISE:
                start += 1
            del buffer[:start]
            if not buffer or buffer[0] != echo:
                return
            if echo == ord("/") and bytes(buffer[1:2]) not in (b"?", b""):
                return  # a '/' not followed by '?': the meter's identification, not our echo
            end = buffer.find(CRLF)
            if end < 0:
                return
            del buffer[: end + 2]

    def _identification(self) -> Identified | None:
        self._strip_leading(ord("/"))
        buffer = self._buffer
        if bytes(buffer[:1]) not in (b"", b"/"):
            raise DecodeError(f"expected an identification message, got {bytes(buffer[:20])!r}")
        end = buffer.find(CRLF)
        if end < 0:
            if len(buffer) > _MAX_LINE:
                raise DecodeError("identification message longer than 128 bytes")
            return None
        ident = parse_identification(bytes(buffer[: end + 2]))
        del buffer[: end + 2]
        self.identification = ident
        self.state = SessionState.AWAIT_DATA
        offered = ident.baudrate
        if offered is None:
            raise SessionError(f"reserved baud rate character {ident.baud_char!r} in {ident.text!r}")
        if ident.mode != "C":
            self.baudrate = offered  # mode B switches by itself; mode A stays at 300
            return Identified(ident, None, offered)
        limit = min(offered, self.max_baudrate) if self.switch_baudrate else self.line_baudrate
        limit = max(limit, self.line_baudrate)  # never below the rate the line already runs at
        char, rate = max(
            ((c, r) for c, r in MODE_C_BAUDRATES.items() if r <= limit), key=lambda item: item[1]
        )
        self.option = OptionSelect(char)
        self.baudrate = rate
        return Identified(ident, encode_option_select(self.option), rate)

    def _data_message(self) -> Readout | None:
        self._strip_leading(ACK)
        buffer = self._buffer
        if not buffer or (buffer[0] == ACK and len(buffer) <= _MAX_LINE):
            return None  # nothing yet, or our echoed option select still arriving
        if buffer[0] != STX:
            raise DecodeError(f"expected STX of the data message, got {bytes(buffer[:20])!r}")
        end = buffer.find(ETX)
        if end < 0 or end + 1 >= len(buffer):
            if len(buffer) > self.max_readout:
                raise DecodeError(f"data message longer than {self.max_readout} bytes without ETX")
            return None
        block, _ = split_data_message(bytes(buffer[: end + 2]), check_bcc=self.check_bcc)
        sets = parse_data_block(block.decode("latin-1"), base_offset=1)
        self.state = SessionState.DONE
        return Readout(self.identification, tuple(sets), self.option, bcc_checked=self.check_bcc)
