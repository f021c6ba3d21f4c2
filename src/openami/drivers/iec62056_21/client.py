"""Async data readout of an IEC 62056-21 meter: sign-on, identification, option select, data message.

The steps and their order are :class:`~openami.protocols.iec62056_21.session.ModeCSession`'s; this
module only moves bytes and bounds every wait:

- ``connect_s``: opening the TCP connection (a serial open does not wait);
- ``answer_s``: the longest silence accepted from the meter, for the identification (the standard
  allows it 1.5 s) and between chunks of the data message;
- ``readout_s``: the whole readout. At 300 baud (mode A, or ``switch_baudrate=False``) a 2 kB readout
  takes about 70 s, so raise it for long readouts at low rates.

Failures come out as :mod:`openami.drivers.iec62056_21.errors`: time-outs as
:class:`Iec62056Timeout`, a line that fails or closes as :class:`Iec62056Unreachable`, a malformed
answer or wrong BCC as :class:`Iec62056ProtocolError`. The line is closed in every case.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

from openami.drivers.iec62056_21.errors import Iec62056ProtocolError, Iec62056Timeout, Iec62056Unreachable
from openami.drivers.iec62056_21.line import Line, SerialLine, TcpLine
from openami.protocols.iec62056_21.errors import Iec62056Error
from openami.protocols.iec62056_21.messages import INITIAL_BAUDRATE
from openami.protocols.iec62056_21.readout import Readout
from openami.protocols.iec62056_21.session import Identified, ModeCSession, ReadoutReceived

__all__ = ["open_tcp", "read_readout", "read_serial", "read_tcp", "translated"]

T = TypeVar("T")


async def read_readout(
    line: Line, session: ModeCSession, *, answer_s: float = 3.0, readout_s: float = 120.0
) -> Readout:
    """Run ``session`` over the open ``line`` to its data readout. Raises the stack's own errors
    (``TimeoutError``, ``OSError``, :class:`Iec62056Error`); :func:`read_tcp`/:func:`read_serial`
    translate them."""
    async with asyncio.timeout(readout_s):
        await line.send(session.start())
        while True:
            async with asyncio.timeout(answer_s):
                data = await line.read()
            if not data:
                raise ConnectionResetError(f"{line.peer} closed the line before the readout ended")
            for event in session.receive(data):
                if isinstance(event, Identified):
                    if event.ack is not None:
                        await line.send(event.ack)
                    await line.set_baudrate(event.baudrate, answer_s)
                elif isinstance(event, ReadoutReceived):
                    return event.readout


async def translated(line: Line, work: Awaitable[T], waiting: Callable[[], str]) -> T:
    """``work`` over ``line`` with the stack's errors translated into the driver's (``waiting``: what
    a time-out was waiting for); the line is closed in every case. Shared with programming mode."""
    try:
        return await work
    except TimeoutError as exc:
        raise Iec62056Timeout(f"{line.peer}: no answer in time ({waiting()})") from exc
    except Iec62056Error as exc:
        raise Iec62056ProtocolError(f"{line.peer}: {exc}") from exc
    except OSError as exc:
        raise Iec62056Unreachable(f"{line.peer}: {exc}") from exc
    finally:
        line.close()


async def _translated(line: Line, session: ModeCSession, answer_s: float, readout_s: float) -> Readout:
    work = read_readout(line, session, answer_s=answer_s, readout_s=readout_s)
    return await translated(line, work, lambda: session.state.value)


async def open_tcp(host: str, port: int, connect_s: float) -> TcpLine:
    """The TCP line to a converter, its failures translated (a time-out, or unreachable)."""
    try:
        async with asyncio.timeout(connect_s):
            return await TcpLine.open(host, port)
    except TimeoutError as exc:
        raise Iec62056Timeout(f"{host}:{port}: no connection within {connect_s} s") from exc
    except OSError as exc:
        raise Iec62056Unreachable(f"{host}:{port}: {exc}") from exc


async def read_tcp(
    host: str,
    port: int,
    *,
    address: str = "",
    switch_baudrate: bool = False,
    max_baudrate: int = 19200,
    baudrate: int = INITIAL_BAUDRATE,
    connect_s: float = 5.0,
    answer_s: float = 3.0,
    readout_s: float = 120.0,
) -> Readout:
    """Read a meter behind a transparent RS-485/optical-to-TCP converter at ``host:port``.

    ``switch_baudrate`` False (the default) keeps mode C meters at the starting rate, because such a
    converter does not follow a baud switch; set it only for a converter that does (see
    :mod:`openami.drivers.iec62056_21.line`). ``baudrate``: the rate the converter's serial side is
    fixed at, 300 as every sign-on starts; another rate only for meters configured to run at it from
    the sign-on on (the option select then asks them to stay there). A rate that is not a mode C rate
    raises :class:`~openami.protocols.iec62056_21.errors.SessionError` before anything is sent.
    """
    session = ModeCSession(
        address, max_baudrate=max_baudrate, switch_baudrate=switch_baudrate, line_baudrate=baudrate
    )
    line = await open_tcp(host, port, connect_s)
    return await _translated(line, session, answer_s, readout_s)


async def read_serial(
    path: str,
    *,
    address: str = "",
    max_baudrate: int = 9600,
    answer_s: float = 3.0,
    readout_s: float = 120.0,
) -> Readout:
    """Read a meter on the tty at ``path`` (optical probe or RS-485): 300 baud 7E1, then the rate agreed
    (at most ``max_baudrate``; 9600 is what most optical heads manage reliably)."""
    try:
        line = await SerialLine.open(path)
    except (OSError, ValueError) as exc:
        raise Iec62056Unreachable(f"{path}: {exc}") from exc
    session = ModeCSession(address, max_baudrate=max_baudrate)
    return await _translated(line, session, answer_s, readout_s)
