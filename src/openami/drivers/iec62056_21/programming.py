"""Setting an IEC 62056-21 mode C meter's clock in programming mode, over a TCP converter.

The steps (frames in :mod:`openami.protocols.iec62056_21.programming`): sign-on, identification,
option select ``ACK 0 Z 1`` (programming, staying at the line rate: a converter does not follow a baud
switch), the meter's ``P0`` password request, ``P1`` with the password, then the ``W1`` writes of time
``0.9.1`` and date ``0.9.2`` and ``B0``. The time is written first and the date right after, so a set
across midnight shows the right day once both are in.

Failures: a refused password (or programming refused outright) is
:class:`~openami.drivers.iec62056_21.errors.Iec62056PasswordRejected`, a refused write
:class:`~openami.drivers.iec62056_21.errors.Iec62056Refused`; time-outs, broken lines and malformed
answers as for :func:`~openami.drivers.iec62056_21.client.read_tcp`. ``B0`` is sent whenever the meter
got into programming mode, so it does not stay there until its own time-out.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from datetime import datetime

from openami.drivers.iec62056_21.client import open_tcp, translated
from openami.drivers.iec62056_21.errors import Iec62056PasswordRejected, Iec62056Refused
from openami.drivers.iec62056_21.line import Line
from openami.protocols.iec62056_21.errors import DecodeError
from openami.protocols.iec62056_21.messages import (
    CRLF,
    INITIAL_BAUDRATE,
    OptionSelect,
    encode_option_select,
    encode_request,
    mode_c_char,
    parse_identification,
)
from openami.protocols.iec62056_21.programming import (
    BREAK,
    Reply,
    clock_writes,
    encode_password,
    parse_reply,
)

__all__ = ["When", "set_clock", "set_clock_on_line"]

When = datetime | Callable[[], datetime]
"""The meter's local time to write, or a function giving it, called right before the writes go out
(after sign-on and password, which take a second or more at 300 baud)."""


class _Answers:
    """The meter's bytes, read with a bound on every silence."""

    def __init__(self, line: Line, answer_s: float) -> None:
        self.line = line
        self.answer_s = answer_s
        self.buffer = bytearray()

    async def _more(self) -> None:
        async with asyncio.timeout(self.answer_s):
            data = await self.line.read()
        if not data:
            raise ConnectionResetError(f"{self.line.peer} closed the line")
        self.buffer += data

    async def line_(self) -> bytes:
        while (end := self.buffer.find(CRLF)) < 0:
            if len(self.buffer) > 128:
                raise DecodeError("identification message longer than 128 bytes")
            await self._more()
        text = bytes(self.buffer[: end + 2])
        del self.buffer[: end + 2]
        return text

    async def reply(self) -> Reply:
        while (parsed := parse_reply(self.buffer)) is None:
            if len(self.buffer) > 1024:
                raise DecodeError("programming answer longer than 1024 bytes without ETX")
            await self._more()
        reply, end = parsed
        del self.buffer[:end]
        return reply


async def set_clock_on_line(
    line: Line,
    when: When,
    *,
    address: str = "",
    password: str,
    baudrate: int = INITIAL_BAUDRATE,
    answer_s: float = 3.0,
) -> None:
    """Run the programming session on the open ``line``; raises the stack's own errors and the refusal
    kinds (:func:`set_clock` translates the rest)."""
    if isinstance(when, datetime):
        clock_writes(when)  # refuse a time that cannot be written before anything is sent
    answers = _Answers(line, answer_s)
    await line.send(encode_request(address))
    identification = parse_identification(await answers.line_())
    if identification.mode != "C":
        raise Iec62056Refused(f"{identification.text}: programming mode needs a mode C meter")
    await line.send(encode_option_select(OptionSelect(mode_c_char(baudrate), mode="1")))
    request = await answers.reply()
    if request.kind != "operand" or request.command is None or request.command.command != "P":
        raise Iec62056PasswordRejected(f"{line.peer}: programming mode refused ({request.kind})")
    try:
        await line.send(encode_password(password))
        if (answer := await answers.reply()).kind != "ack":
            raise Iec62056PasswordRejected(f"{line.peer}: the meter refused the password ({answer.kind})")
        for write in clock_writes(when if isinstance(when, datetime) else when()):
            await line.send(write)
            if (answer := await answers.reply()).kind != "ack":
                data = write[4:-2].decode("ascii")
                raise Iec62056Refused(f"{line.peer}: the meter refused {data} ({answer.kind} {answer.text})")
    finally:
        with contextlib.suppress(OSError):  # a broken line: the original failure is the one to report
            await line.send(BREAK)


async def set_clock(
    host: str,
    port: int,
    when: When,
    *,
    address: str = "",
    password: str,
    baudrate: int = INITIAL_BAUDRATE,
    connect_s: float = 5.0,
    answer_s: float = 3.0,
    session_s: float = 30.0,
) -> None:
    """Write ``when`` (the meter's local time) to the meter behind the converter at ``host:port``.

    ``session_s`` bounds the whole exchange; ``baudrate`` is the converter's fixed serial rate. The
    caller reads the meter again to see the clock took (an ACK proves only that the frame arrived).
    """
    line = await open_tcp(host, port, connect_s)

    async def session() -> None:
        async with asyncio.timeout(session_s):
            await set_clock_on_line(
                line, when, address=address, password=password, baudrate=baudrate, answer_s=answer_s
            )

    await translated(line, session(), lambda: "programming mode")
