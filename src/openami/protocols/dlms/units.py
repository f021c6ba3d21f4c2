"""The DLMS/COSEM ``unit`` enumeration and the ``scaler_unit`` pair of Register objects.

Registers (class 3, 4, 5) send their value as a bare integer plus, in attribute 3, a
``scaler_unit`` structure ``{integer scaler, enum unit}``: the physical value is
``value * 10**scaler`` in ``unit``. The unit codes below are the public Blue Book
enumeration (IEC 62056-6-2); the symbols are written here in SI/IEC style. Codes the
table does not know (reserved ranges, newer editions) have no symbol rather than a guess.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType
from typing import Final

#: Blue Book unit code -> symbol. 255 is "count" (no unit), 254 "other unit".
UNIT_SYMBOLS: Final[MappingProxyType[int, str]] = MappingProxyType(
    {
        1: "a",
        2: "mo",
        3: "wk",
        4: "d",
        5: "h",
        6: "min",
        7: "s",
        8: "°",
        9: "°C",
        10: "currency",
        11: "m",
        12: "m/s",
        13: "m³",
        14: "m³",  # corrected volume
        15: "m³/h",
        16: "m³/h",  # corrected volume flow
        17: "m³/d",
        18: "m³/d",  # corrected volume flow
        19: "l",
        20: "kg",
        21: "N",
        22: "N·m",
        23: "Pa",
        24: "bar",
        25: "J",
        26: "J/h",
        27: "W",
        28: "VA",
        29: "var",
        30: "Wh",
        31: "VAh",
        32: "varh",
        33: "A",
        34: "C",
        35: "V",
        36: "V/m",
        37: "F",
        38: "Ω",
        39: "Ω·m²/m",
        40: "Wb",
        41: "T",
        42: "A/m",
        43: "H",
        44: "Hz",
        45: "1/(Wh)",  # active energy meter constant
        46: "1/(varh)",  # reactive energy meter constant
        47: "1/(VAh)",  # apparent energy meter constant
        48: "V²h",
        49: "A²h",
        50: "kg/s",
        51: "S",
        52: "K",
        53: "1/(V²h)",
        54: "1/(A²h)",
        55: "1/m³",
        56: "%",
        57: "Ah",
        60: "Wh/m³",
        61: "J/m³",
        62: "mol%",
        63: "g/m³",
        64: "Pa·s",
        65: "J/kg",
        70: "dBm",
        71: "dBµV",
        72: "dB",
        254: "other",
        255: "count",
    }
)

#: Codes that mean "a number without a physical unit": rendered as no unit at all.
UNITLESS: Final[frozenset[int]] = frozenset({0, 254, 255})


def unit_symbol(code: int) -> str | None:
    """The symbol for a unit code, or None for "no unit" (count/other) and for codes not in the table."""
    if code in UNITLESS:
        return None
    return UNIT_SYMBOLS.get(code)


@dataclass(frozen=True)
class ScalerUnit:
    """A Register's ``scaler_unit``: multiply the raw value by ``10**scaler`` to get ``unit``.

    The scaler is a signed byte in A-XDR, so it stays small; ``apply`` keeps integers integral
    when the scaler is not negative (an energy total in Wh must not turn into a float for nothing)
    and rounds negative-scaler results to the scaler's precision so that 2307 * 10**-1 reads 230.7,
    not 230.70000000000002.
    """

    scaler: int
    unit: int

    def apply(self, raw: int | float) -> int | float:
        """The physical value of ``raw`` in this unit."""
        if self.scaler == 0:
            return raw
        factor: int = 10 ** abs(self.scaler)
        if self.scaler < 0:
            return round(raw / factor, -self.scaler)
        return raw * factor if isinstance(raw, int) else float(raw * factor)

    @property
    def symbol(self) -> str | None:
        """The unit symbol, or None for unitless counts and unknown codes."""
        return unit_symbol(self.unit)
