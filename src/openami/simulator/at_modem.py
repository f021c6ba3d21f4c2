"""A simulated cellular modem's AT command port on a loopback TCP port (a modem behind a serial server).

It answers what :mod:`openami.edge.modem` asks, the way 3GPP TS 27.007 modems do: commands end with
CR, answers are ``CR LF <line> CR LF`` followed by ``CR LF OK CR LF`` (or ``ERROR``), and the command
is echoed first while echo is on (``ATE1``, the factory setting; ``ATE0`` turns it off).

- ``AT`` -> OK; ``ATE0`` / ``ATE1`` -> OK;
- ``AT+CSQ`` -> ``+CSQ: <rssi>,<ber>`` (99,99 when ``rssi`` is None: no network);
- ``AT+CESQ`` -> ``+CESQ: 99,99,255,255,<rsrq>,<rsrp>`` when the modem is on LTE (``rsrp`` given),
  ERROR otherwise, as a 2G/3G-only module answers;
- anything else -> ERROR.

Test controls: ``mode`` ``silent`` (reads, never answers, as a wedged port), ``garbage`` (answers
noise without a final result code); ``unsolicited`` lines are sent before every answer, as a modem
reports network registration changes (``+CREG: 1``) in between; :attr:`AtModemSimulator.commands`
lists what was asked and :attr:`AtModemSimulator.connections` how often the port was opened.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Final, Literal

from openami.simulator.tcp_server import LoopbackServer

__all__ = ["AtModemSimulator", "ModemState"]

_MAX_LINE: Final = 512


@dataclass
class ModemState:
    """What the simulated modem reports (module docstring)."""

    rssi: int | None = 20
    ber: int = 99
    rsrp: int | None = None
    rsrq: int | None = None
    mode: Literal["ok", "silent", "garbage"] = "ok"
    unsolicited: list[str] = field(default_factory=list)


class AtModemSimulator(LoopbackServer):
    """Serves one modem's AT port on ``host:port`` (0: a free port, in :attr:`port`)."""

    def __init__(self, state: ModemState | None = None, host: str = "127.0.0.1", port: int = 0) -> None:
        super().__init__(host, port)
        self.state = state or ModemState()
        self.commands: list[str] = []
        self.connections = 0

    @property
    def url(self) -> str:
        return f"tcp://{self.host}:{self.port}"

    def answer(self, command: str) -> list[str]:
        """The information lines and final result code for one command (sans-IO); ``[]`` for none."""
        state = self.state
        if state.mode == "silent":
            return []
        if state.mode == "garbage":
            return ["\x00\xffQ#%$", "+CSQ:", "+CSQ: x,y"]
        upper = command.strip().upper()
        if upper in ("AT", "ATE0", "ATE1"):
            return ["OK"]
        if upper == "AT+CSQ":
            rssi = 99 if state.rssi is None else state.rssi
            return [f"+CSQ: {rssi},{state.ber if state.rssi is not None else 99}", "OK"]
        if upper == "AT+CESQ" and state.rsrp is not None:
            rsrq = 255 if state.rsrq is None else state.rsrq
            return [f"+CESQ: 99,99,255,255,{rsrq},{state.rsrp}", "OK"]
        return ["ERROR"]

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        echo = True
        buffer = b""
        while data := await reader.read(256):
            buffer += data
            while b"\r" in buffer:
                raw, buffer = buffer.split(b"\r", 1)
                command = raw.decode("ascii", "replace").strip()
                if not command:
                    continue
                self.commands.append(command)
                if self.state.mode == "silent":
                    continue  # wedged: not even the echo
                out = f"{raw.decode('ascii', 'replace')}\r" if echo else ""
                lines = self.answer(command)
                if lines:
                    out += "".join(f"\r\n{line}\r\n" for line in [*self.state.unsolicited, *lines])
                if command.upper() in ("ATE0", "ATE1") and lines == ["OK"]:
                    echo = command.upper() == "ATE1"
                writer.write(out.encode("latin-1", "replace"))
                await writer.drain()
            if len(buffer) > _MAX_LINE:
                buffer = b""  # a line that never ends: dropped, as a modem's buffer overflows
