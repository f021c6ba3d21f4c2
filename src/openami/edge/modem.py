"""The gateway's cellular modem, asked for its signal quality (3GPP TS 27.007 AT commands).

A gateway on a cellular uplink that loses readings most often loses them to a weak signal, so HEALTH
carries what the modem reports: ``AT+CSQ`` (every 2G/3G/4G modem) answers ``+CSQ: <rssi>,<ber>``,
rssi 0..31 meaning -113 + 2 * rssi dBm (0: -113 or less, 31: -51 or more) and bit error rate class
0..7, 99 for either meaning "not known"; ``AT+CESQ`` (LTE modems) answers ``+CESQ: <rxlev>,<ber>,<rscp>,
<ecno>,<rsrq>,<rsrp>``, of which the gateway takes RSRQ (0..34: -20 + n / 2 dB) and RSRP (0..97:
-141 + n dBm), 255 meaning "not known". A modem without CESQ answers ERROR, which is normal.

The AT port (``/dev/ttyUSB2`` on most USB LTE modules, or ``tcp://host:port`` for one behind a serial
server) is opened only for the query and closed right after: the modem's other ports (PPP, QMI) stay
with the network manager, and a wedged port costs one query, not the gateway. Echo (``ATE1``, the
factory setting) and unsolicited result codes (``+CREG: ...``, ``RING``) in between are skipped.
Silence, garbage or a port that cannot be opened give nulls and one warning per kind of failure
(not one per query), never an exception out of :meth:`ModemProbe.query`.
"""

from __future__ import annotations

import asyncio
import logging
import re
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import urlsplit

from openami.drivers.lines import Line, SerialLine, TcpLine

__all__ = [
    "ModemError",
    "ModemProbe",
    "Signal",
    "check_port",
    "csq_dbm",
    "open_modem_line",
    "parse_cesq",
    "parse_csq",
]

log = logging.getLogger(__name__)

_CSQ: Final = re.compile(r"\+CSQ:\s*(\d+)\s*,\s*(\d+)")
_CESQ: Final = re.compile(r"\+CESQ:\s*" + r"\s*,\s*".join([r"(\d+)"] * 6))
_FINAL_OK: Final = "OK"
_FINAL_ERRORS: Final = ("ERROR", "+CME ERROR", "+CMS ERROR", "NO CARRIER")
_MAX_ANSWER: Final = 4096
"""Bytes one command's answer may take: a port that babbles is cut off."""


class ModemError(Exception):
    """The modem did not give a usable answer (silence, an error, garbage, a port that cannot open)."""


@dataclass(frozen=True, slots=True)
class Signal:
    """What the modem said; None for what it did not (or could not) say."""

    dbm: int | None = None
    ber: int | None = None
    rsrp_dbm: int | None = None
    rsrq_db: float | None = None

    def health(self) -> dict[str, Any]:
        """HEALTH fields: ``signal_dbm`` always (null when unknown), the others when known."""
        fields: dict[str, Any] = {"signal_dbm": self.dbm}
        for key, value in (("signal_ber", self.ber), ("rsrp_dbm", self.rsrp_dbm), ("rsrq_db", self.rsrq_db)):
            if value is not None:
                fields[key] = value
        return fields


def csq_dbm(rssi: int) -> int | None:
    """The dBm of a CSQ rssi (0..31), None for 99 (unknown) or anything outside the table."""
    return -113 + 2 * rssi if 0 <= rssi <= 31 else None


def parse_csq(line: str) -> tuple[int | None, int | None]:
    """(dBm, bit error rate class) from a ``+CSQ:`` line; :class:`ModemError` when it is not one."""
    match = _CSQ.search(line)
    if match is None:
        raise ModemError(f"not a +CSQ answer: {line[:80]!r}")
    rssi, ber = int(match[1]), int(match[2])
    return csq_dbm(rssi), ber if 0 <= ber <= 7 else None


def parse_cesq(line: str) -> tuple[int | None, float | None]:
    """(RSRP dBm, RSRQ dB) from a ``+CESQ:`` line; :class:`ModemError` when it is not one."""
    match = _CESQ.search(line)
    if match is None:
        raise ModemError(f"not a +CESQ answer: {line[:80]!r}")
    rsrq, rsrp = int(match[5]), int(match[6])
    return (-141 + rsrp if 0 <= rsrp <= 97 else None), (-20 + rsrq / 2 if 0 <= rsrq <= 34 else None)


def _tcp_address(port: str) -> tuple[str, int] | None:
    if not port.startswith("tcp://"):
        return None
    parts = urlsplit(port)
    try:
        number = parts.port
    except ValueError:
        number = None
    if not parts.hostname or number is None or parts.path not in ("", "/"):
        raise ValueError(f"{port!r}: expected tcp://host:port")
    return parts.hostname, number


def check_port(port: str) -> str:
    """``port`` if it names a tty (an absolute path) or ``tcp://host:port``; ValueError otherwise."""
    if _tcp_address(port) is None and not port.startswith("/"):
        raise ValueError(f"{port!r}: expected a tty path (/dev/ttyUSB2) or tcp://host:port")
    return port


async def open_modem_line(port: str, baudrate: int = 115200) -> Line:
    """The modem's AT port as a :class:`~openami.drivers.lines.Line` (8N1 on a tty)."""
    address = _tcp_address(port)
    if address is not None:
        return await TcpLine.open(*address)
    return await SerialLine.open(port, baudrate, "8N1")


class ModemProbe:
    """Asks one modem for its signal (module docstring)."""

    def __init__(self, port: str, *, baudrate: int = 115200, timeout_s: float = 5.0) -> None:
        self.port = check_port(port)
        self.baudrate = baudrate
        self.timeout_s = timeout_s
        self.last = Signal()
        self.queries = 0
        self.failures = 0
        self._warned: str | None = None

    async def query(self) -> Signal:
        """Open the port, ask CSQ (and CESQ), close it; nulls and one warning on failure."""
        self.queries += 1
        try:
            signal = await self._query()
        except (ModemError, OSError, TimeoutError, ValueError) as exc:
            self.failures += 1
            kind = type(exc).__name__
            if self._warned != kind:
                self._warned = kind
                log.warning("modem %s: no signal reading: %s", self.port, exc)
            else:
                log.debug("modem %s: no signal reading: %s", self.port, exc)
            self.last = Signal()
            return self.last
        if self._warned is not None:
            log.info("modem %s answers again", self.port)
            self._warned = None
        self.last = signal
        return signal

    async def _query(self) -> Signal:
        async with asyncio.timeout(self.timeout_s):
            line = await open_modem_line(self.port, self.baudrate)
        try:
            dbm, ber = parse_csq(await self._command(line, "AT+CSQ", "+CSQ:"))
            try:
                rsrp, rsrq = parse_cesq(await self._command(line, "AT+CESQ", "+CESQ:"))
            except ModemError:
                rsrp, rsrq = None, None  # not an LTE modem, or not registered on LTE
            return Signal(dbm, ber, rsrp, rsrq)
        finally:
            await line.aclose()

    async def _command(self, line: Line, command: str, prefix: str) -> str:
        """Send ``command``; the answer line starting with ``prefix`` once the final OK arrived."""
        await line.send(command.encode() + b"\r")
        buffer, answer = b"", None
        async with asyncio.timeout(self.timeout_s):
            while True:
                data = await line.read()
                if not data:
                    raise ModemError(f"{line.peer}: the port closed during {command}")
                buffer += data
                if len(buffer) > _MAX_ANSWER:
                    raise ModemError(f"{line.peer}: {len(buffer)} bytes and no final result to {command}")
                *lines, rest = re.split(rb"\r\n|\r|\n", buffer)
                buffer = rest
                for raw in lines:
                    text = raw.decode("ascii", "replace").strip()
                    if text.startswith(prefix):
                        answer = text
                    elif text == _FINAL_OK:
                        if answer is None:
                            raise ModemError(f"{line.peer}: OK to {command} without {prefix} line")
                        return answer
                    elif text.startswith(_FINAL_ERRORS):
                        raise ModemError(f"{line.peer}: {command} answered {text}")
