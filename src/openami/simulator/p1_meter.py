"""A simulated DSMR smart meter's P1 port: complete telegrams with their CRC, from the household model.

Why: the P1 reader, the head-end's consumer-port collection and the encrypted-P1 decoder need a meter
that sends what a real one sends without hardware. The telegram follows the DSMR P1 companion standard
of its ``version``:

- ``"5"`` (DSMR 5.0.2): version 50, clock 0-0:1.0.0 in Europe/Amsterdam with the S/W flag, equipment id
  in hex, import/export per tariff (1.8.1/1.8.2/2.8.1/2.8.2), tariff indicator, import/export power,
  power failure counters and log, voltage sags and swells, voltages, currents and powers per phase, and a
  gas meter on M-Bus channel 1 whose value 0-1:24.2.1 carries its own capture time (every 5 minutes);
  one telegram a second.
- ``"4"`` (DSMR 4.2): the same without voltages, gas captured hourly, one telegram every 10 s.
- ``"2.2"``: no clock, no CRC, plain equipment ids, power with 10 W resolution, and the gas reading in the
  old two-line 0-1:24.3.0 form; every 10 s (a v2.2 port runs at 9600 baud 7E1, the others 115200 8N1).

Registers come from :class:`~openami.simulator.household.HouseholdModel`. Tariff registers split the
import (and export) in a fixed proportion rather than by the tariff clock, which keeps every register
monotonic and O(1) at any second; the tariff indicator follows the Dutch clock (low 23-07 h and weekends).
:meth:`SimulatedP1Meter.measurements` gives the values a telegram reports, in the platform's base units,
so tests compare what was stored with what was sent.

With ``encryption`` the meter sends E-MeterP1 frames instead (AES-128-GCM, Luxembourg/Austria), with a
frame counter that goes up by one per frame.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Final, Literal, NamedTuple
from zoneinfo import ZoneInfo

from openami.protocols.crc import crc16_arc
from openami.protocols.dsmr.encrypted import P1Keys, encrypt_telegram
from openami.simulator.consumption import EPOCH_START
from openami.simulator.household import HouseholdModel, whole_second

__all__ = [
    "DEFAULT_INTERVAL_S",
    "Measurement",
    "P1Encryption",
    "P1Version",
    "SimulatedP1Meter",
    "build_p1_meters",
    "serial_settings",
]

P1Version = Literal["5", "4", "2.2"]
AMSTERDAM: Final = ZoneInfo("Europe/Amsterdam")
#: How often the port pushes, by version (DSMR 5.0.2 §6.4: every second; DSMR 4 and older: 10 s).
DEFAULT_INTERVAL_S: Final[dict[str, float]] = {"5": 1.0, "4": 10.0, "2.2": 10.0}
_VERSION_FIELD: Final = {"5": "50", "4": "42"}
#: Per-phase share of the import power (L1, L2, L3); PV feeds in on L1.
_PHASE_SHARE: Final = ((1, 2), (3, 10), (1, 5))
_NOMINAL_DV: Final = 2300


def serial_settings(version: P1Version) -> tuple[int, Literal["8N1", "7E1"]]:
    """(baud rate, framing) of a P1 port of ``version``: 115200 ``8N1`` for DSMR 4/5, 9600 ``7E1`` before."""
    return (9600, "7E1") if version == "2.2" else (115200, "8N1")


class Measurement(NamedTuple):
    """One measured value as the platform stores it: base units; ``timestamp`` None when the telegram
    has no clock (v2.2), i.e. the reader's time stamps it."""

    value: int | float
    unit: str
    timestamp: datetime | None


@dataclass
class P1Encryption:
    """How an E-MeterP1 meter protects its port: its system title, keys and the next frame counter."""

    system_title: bytes
    keys: P1Keys
    frame_counter: int = 1


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _stamp(at: datetime, tz: tzinfo, *, flag: bool = True) -> str:
    local = at.astimezone(tz)
    suffix = ("S" if local.dst() else "W") if flag else ""
    return f"{local:%y%m%d%H%M%S}{suffix}"


def _milli(value: int, digits: int) -> str:
    """``value`` thousandths as ``digits`` integer digits and three decimals: 1234567 -> 001234.567."""
    return f"{value // 1000:0{digits}d}.{value % 1000:03d}"


def _hex(text: str) -> str:
    return text.encode("ascii").hex().upper()


class SimulatedP1Meter:
    """One meter; ``seed`` varies its household, ``now`` is its clock (UTC), ``tz`` the zone it shows.

    ``corrupt_next``: that many of the next frames go out with one digit changed after the CRC was
    computed (or, encrypted, one ciphertext byte flipped), as a noisy line would deliver them. A v2.2
    telegram has no CRC, so there the damage goes unnoticed, as it does on a real v2.2 port.
    """

    def __init__(
        self,
        seed: int = 0,
        *,
        version: P1Version = "5",
        equipment_id: str | None = None,
        gas_id: str | None = None,
        interval_s: float | None = None,
        tz: tzinfo = AMSTERDAM,
        encryption: P1Encryption | None = None,
        now: Callable[[], datetime] = _utcnow,
    ) -> None:
        if version not in DEFAULT_INTERVAL_S:
            raise ValueError(
                f"unknown DSMR version {version!r}; expected one of {sorted(DEFAULT_INTERVAL_S)}"
            )
        if interval_s is not None and interval_s <= 0:
            raise ValueError("interval_s must be positive")
        self.seed = seed
        self.version: P1Version = version
        self.equipment_id = equipment_id or f"E0099{seed:012d}"
        self.gas_id = gas_id or f"G0099{seed:012d}"
        self.interval_s = interval_s if interval_s is not None else DEFAULT_INTERVAL_S[version]
        self.tz = tz
        self.encryption = encryption
        self.now = now
        self.household = HouseholdModel(seed)
        self.corrupt_next = 0
        suffix = {"5": "5", "4": "42", "2.2": "22"}[version]
        self.header = f"/OAM5\\2SIM-P1-{suffix}"

    # --------------------------------------------------------------------------------- the values

    def gas_capture(self, at: datetime) -> datetime:
        """When the gas value reported at ``at`` was captured: the last 5 minutes (v5) or hour (older)."""
        at = whole_second(at)
        step = 300 if self.version == "5" else 3600
        return at - timedelta(seconds=int((at - EPOCH_START).total_seconds()) % step)

    def _power_w(self, at: datetime) -> tuple[int, int]:
        """(import, export) power; v2.2 shows 10 W steps, so the values are what it can show."""
        imp, exp = self.household.import_w(at), self.household.export_w(at)
        if self.version == "2.2":
            return imp // 10 * 10, exp // 10 * 10
        return imp, exp

    def _phases(self, at: datetime) -> list[tuple[int, int, int, int]]:
        """Per phase: (voltage dV, current A, import W, export W)."""
        imp, exp = self._power_w(at)
        out = []
        rest = imp
        for phase, (num, den) in enumerate(_PHASE_SHARE, start=1):
            share = rest if phase == 3 else imp * num // den
            rest -= share
            feed = exp if phase == 1 else 0
            volts = self.household.voltage_dv(at, phase) if self.version == "5" else _NOMINAL_DV
            out.append((volts, round((share + feed) * 10 / volts), share, feed))
        return out

    def _registers(self, at: datetime) -> dict[str, int]:
        imp, exp = self.household.import_wh(at), self.household.export_wh(at)
        low_import, low_export = imp * 2 // 5, exp // 4
        return {
            "1.8.1": low_import,
            "1.8.2": imp - low_import,
            "2.8.1": low_export,
            "2.8.2": exp - low_export,
        }

    def _counters(self) -> dict[str, int]:
        return {
            "short": 3 + self.seed % 9,
            "long": 1 + self.seed % 3,
            "sags": self.seed % 4,
            "swells": self.seed % 2,
        }

    def tariff(self, at: datetime) -> int:
        """The tariff indicator: 1 (low) from 23 to 7 h local time and at weekends, else 2 (normal)."""
        local = whole_second(at).astimezone(self.tz)
        return 1 if local.weekday() >= 5 or not 7 <= local.hour < 23 else 2

    def measurements(self, at: datetime | None = None) -> dict[str, Measurement]:
        """What the telegram at ``at`` reports as measurements, by channel (OBIS code, as the platform
        names it), in base units: registers in Wh, power in W, voltage in V, current in A, gas in m3."""
        at = whole_second(at or self.now())
        clock = at if self.version != "2.2" else None
        out = {f"1-0:{code}": Measurement(wh, "Wh", clock) for code, wh in self._registers(at).items()}
        imp, exp = self._power_w(at)
        out["1-0:1.7.0"] = Measurement(imp, "W", clock)
        out["1-0:2.7.0"] = Measurement(exp, "W", clock)
        if self.version != "2.2":
            counters = self._counters()
            for c in (32, 52, 72):
                out[f"1-0:{c}.32.0"] = Measurement(counters["sags"], "", clock)
                out[f"1-0:{c}.36.0"] = Measurement(counters["swells"], "", clock)
            for phase, (volts, amps, p_imp, p_exp) in enumerate(self._phases(at)):
                if self.version == "5":
                    out[f"1-0:{32 + 20 * phase}.7.0"] = Measurement(volts / 10, "V", clock)
                out[f"1-0:{31 + 20 * phase}.7.0"] = Measurement(amps, "A", clock)
                out[f"1-0:{21 + 20 * phase}.7.0"] = Measurement(p_imp, "W", clock)
                out[f"1-0:{22 + 20 * phase}.7.0"] = Measurement(p_exp, "W", clock)
        capture = self.gas_capture(at)
        channel = "0-1:24.2.1" if self.version != "2.2" else "0-1:24.3.0"
        out[channel] = Measurement(self.household.gas_litres(capture) / 1000, "m3", capture)
        return out

    # ------------------------------------------------------------------------------ the telegram

    def lines(self, at: datetime | None = None) -> list[str]:
        """The telegram's object lines at ``at``, in the order the version sends them."""
        at = whole_second(at or self.now())
        if self.version == "2.2":
            return self._lines_v2(at)
        regs, counters = self._registers(at), self._counters()
        imp, exp = self._power_w(at)
        lines = [
            f"1-3:0.2.8({_VERSION_FIELD[self.version]})",
            f"0-0:1.0.0({_stamp(at, self.tz)})",
            f"0-0:96.1.1({_hex(self.equipment_id)})",
            *(f"1-0:{code}({_milli(wh, 6)}*kWh)" for code, wh in regs.items()),
            f"0-0:96.14.0({self.tariff(at):04d})",
            f"1-0:1.7.0({_milli(imp, 2)}*kW)",
            f"1-0:2.7.0({_milli(exp, 2)}*kW)",
            f"0-0:96.7.21({counters['short']:05d})",
            f"0-0:96.7.9({counters['long']:05d})",
            self._failure_log(counters["long"]),
            *(f"1-0:{c}.32.0({counters['sags']:05d})" for c in (32, 52, 72)),
            *(f"1-0:{c}.36.0({counters['swells']:05d})" for c in (32, 52, 72)),
        ]
        if self.version == "4":
            lines.append("0-0:96.13.1()")
        lines.append("0-0:96.13.0()")
        phases = self._phases(at)
        if self.version == "5":
            lines += [f"1-0:{32 + 20 * i}.7.0({v // 10:03d}.{v % 10}*V)" for i, (v, *_) in enumerate(phases)]
        lines += [f"1-0:{31 + 20 * i}.7.0({a:03d}*A)" for i, (_, a, *_) in enumerate(phases)]
        for i, (_, _, p_imp, p_exp) in enumerate(phases):
            lines += [
                f"1-0:{21 + 20 * i}.7.0({_milli(p_imp, 2)}*kW)",
                f"1-0:{22 + 20 * i}.7.0({_milli(p_exp, 2)}*kW)",
            ]
        capture = self.gas_capture(at)
        lines += [
            "0-1:24.1.0(003)",
            f"0-1:96.1.0({_hex(self.gas_id)})",
            f"0-1:24.2.1({_stamp(capture, self.tz)})({_milli(self.household.gas_litres(capture), 5)}*m3)",
        ]
        return lines

    def _failure_log(self, count: int) -> str:
        """The long power failure log: ``count`` past failures, a week apart, before the model's epoch."""
        entries = "".join(
            f"({_stamp(EPOCH_START - timedelta(days=7 * (count - i), hours=-3), self.tz)})"
            f"({(self.seed % 50 + 1) * 60 * (i + 1):010d}*s)"
            for i in range(count)
        )
        return f"1-0:99.97.0({count})(0-0:96.7.19){entries}"

    def _lines_v2(self, at: datetime) -> list[str]:
        regs = self._registers(at)
        imp, exp = self._power_w(at)
        capture = self.gas_capture(at)
        return [
            f"0-0:96.1.1({self.equipment_id})",
            *(f"1-0:{code}({_milli(wh, 5)}*kWh)" for code, wh in regs.items()),
            f"0-0:96.14.0({self.tariff(at):04d})",
            f"1-0:1.7.0({imp // 1000:04d}.{imp % 1000 // 10:02d}*kW)",
            f"1-0:2.7.0({exp // 1000:04d}.{exp % 1000 // 10:02d}*kW)",
            "0-0:17.0.0(0999.00*kW)",
            "0-0:96.3.10(1)",
            "0-0:96.13.1()",
            "0-0:96.13.0()",
            "0-1:24.1.0(3)",
            f"0-1:96.1.0({self.gas_id})",
            f"0-1:24.3.0({_stamp(capture, self.tz, flag=False)})(00)(60)(1)(0-1:24.2.1)(m3)",
            f"({_milli(self.household.gas_litres(capture), 5)})",
            "0-1:24.4.0(1)",
        ]

    def telegram(self, at: datetime | None = None) -> bytes:
        """The complete telegram at ``at`` (default: the meter's clock now), CRC line included from v4."""
        body = "".join(f"{line}\r\n" for line in self.lines(at))
        text = f"{self.header}\r\n\r\n{body}!".encode("ascii")
        if self.version == "2.2":
            return text + b"\r\n"
        return text + f"{crc16_arc(text):04X}\r\n".encode("ascii")

    def frame(self, at: datetime | None = None) -> bytes:
        """What the port sends at ``at``: the telegram, or its E-MeterP1 frame when encrypted; a pending
        ``corrupt_next`` damages it."""
        data = self.telegram(at)
        damage = self.corrupt_next > 0
        if damage and self.encryption is None:
            self.corrupt_next -= 1
            data = _flip_digit(data)
        if self.encryption is not None:
            enc = self.encryption
            data = encrypt_telegram(
                data, system_title=enc.system_title, frame_counter=enc.frame_counter, keys=enc.keys
            )
            enc.frame_counter += 1
            if damage:
                self.corrupt_next -= 1
                middle = len(data) // 2
                data = data[:middle] + bytes([data[middle] ^ 0x01]) + data[middle + 1 :]
        return data


def _flip_digit(telegram: bytes) -> bytes:
    """The telegram with the first digit of its first energy register changed: plausible, wrong CRC."""
    at = telegram.find(b"1-0:1.8.1(") + len(b"1-0:1.8.1(")
    digit = telegram[at : at + 1]
    replacement = b"1" if digit != b"1" else b"2"
    return telegram[:at] + replacement + telegram[at + 1 :]


def build_p1_meters(
    count: int,
    *,
    version: P1Version = "5",
    interval_s: float | None = None,
    keys: P1Keys | None = None,
    seed: int = 0,
) -> list[SimulatedP1Meter]:
    """``count`` meters with seeds ``seed``, ``seed + 1``, ...; with ``keys`` each encrypts (E-MeterP1)
    under its own system title ``OAMP`` + its 4-byte index, as ``openami simulate p1`` serves them."""
    return [
        SimulatedP1Meter(
            seed + i,
            version=version,
            interval_s=interval_s,
            encryption=None if keys is None else P1Encryption(b"OAMP" + i.to_bytes(4, "big"), keys),
        )
        for i in range(count)
    ]
