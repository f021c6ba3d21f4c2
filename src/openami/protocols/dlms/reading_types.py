"""OBIS code -> reading type of a channel (what is measured, in which unit, register or interval).

Why a table of value-group rules and not a list of codes: OBIS is compositional. Value group C names
the quantity (and, from 21 to 80, repeats it per phase), D names the processing (instantaneous,
cumulative, per recording interval, demand...), E the tariff, F the historical value. Two small tables
(:data:`QUANTITIES` keyed by C, :data:`PROCESSING` keyed by D) therefore cover thousands of codes, and a
meter of a known profile needs no new code. Codes no rule covers map to ``None``: the caller keeps the raw
value rather than labelling it with a guess.

Source: the public descriptions of the OBIS value groups (IEC 62056-6-1 / DLMS UA Blue Book OBIS
chapter summaries: value group A media, C "electricity related" quantities with the +20/+40/+60 phase
repeats, D "processing of measurement values"), cross-checked against the public IDIS, DSMR 5.0.2 P1
and IS 15959 object lists that use them. Unit symbols are those of
:mod:`openami.protocols.dlms.units` so that a reading type can be checked against the ``scaler_unit`` the
meter reports (gas volume is therefore ``m³``, as the unit enumeration renders code 13).

Register or interval: a value is *interval* data only when its D says it is a quantity over one
recording interval (time integral 5, D=29) or, when captured by a load profile, the average over the
period that just closed (last average, D=5). A cumulative register (D=8) or an instantaneous sample
(D=7) captured by a profile stays a register reading: deltas are the consumer's business.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType
from typing import Final, Literal

from openami.protocols.dlms.obis import Obis
from openami.protocols.dlms.units import unit_symbol

__all__ = ["PROCESSING", "QUANTITIES", "ReadingType", "reading_type"]

Kind = Literal["register", "interval"]
Direction = Literal["import", "export", "none"]
Phase = Literal["L1", "L2", "L3", "N"]

# Unit codes of the Blue Book enumeration (see units.py); symbols are looked up there.
_W, _VA, _VAR, _WH, _VAH, _VARH, _A, _V, _HZ, _M3 = 27, 28, 29, 30, 31, 32, 33, 35, 44, 13


@dataclass(frozen=True)
class ReadingType:
    """What a channel with this OBIS code holds."""

    code: str
    kind: Kind
    unit: str | None
    direction: Direction
    quantity: str
    description: str
    phase: Phase | None = None
    #: Blue Book unit code of ``unit`` (None for dimensionless quantities such as power factor).
    unit_code: int | None = None


@dataclass(frozen=True)
class _Quantity:
    """Value group C of electricity: a quantity family.

    ``flow`` families (active, reactive, apparent) have a rate unit (W) for instantaneous/demand values
    and an amount unit (Wh) for time integrals; other families (voltage, current, power factor,
    frequency) have one unit and no time integrals.
    """

    name: str
    direction: Direction
    label: str
    rate_unit: int | None
    amount_unit: int | None = None

    @property
    def flow(self) -> bool:
        return self.amount_unit is not None


@dataclass(frozen=True)
class _Processing:
    """Value group D of electricity: how the measured quantity is processed."""

    label: str
    #: "rate": instantaneous or averaged (W, V, A...); "amount": a time integral (Wh).
    measure: Literal["rate", "amount"]
    #: Interval data even when read directly (a time integral over one recording interval).
    interval: bool = False
    #: Interval data when captured by a load profile (the average of the period just closed).
    interval_in_profile: bool = False


#: Value group C (electricity, A=1) for C = 1..20; C = 21..80 repeat 1..20 for L1, L2, L3.
QUANTITIES: Final[MappingProxyType[int, _Quantity]] = MappingProxyType(
    {
        1: _Quantity("active", "import", "active (+A)", _W, _WH),
        2: _Quantity("active", "export", "active (-A)", _W, _WH),
        3: _Quantity("reactive", "import", "reactive (+R)", _VAR, _VARH),
        4: _Quantity("reactive", "export", "reactive (-R)", _VAR, _VARH),
        # Quadrants: Q1 and Q2 are +R (reactive import), Q3 and Q4 are -R.
        5: _Quantity("reactive_q1", "import", "reactive QI", _VAR, _VARH),
        6: _Quantity("reactive_q2", "import", "reactive QII", _VAR, _VARH),
        7: _Quantity("reactive_q3", "export", "reactive QIII", _VAR, _VARH),
        8: _Quantity("reactive_q4", "export", "reactive QIV", _VAR, _VARH),
        9: _Quantity("apparent", "import", "apparent (+VA)", _VA, _VAH),
        10: _Quantity("apparent", "export", "apparent (-VA)", _VA, _VAH),
        11: _Quantity("current", "none", "current", _A),
        12: _Quantity("voltage", "none", "voltage", _V),
        13: _Quantity("power_factor", "none", "power factor", None),
        14: _Quantity("frequency", "none", "supply frequency", _HZ),
        15: _Quantity("active_absolute", "none", "active |+A|+|-A|", _W, _WH),
        16: _Quantity("active_net", "none", "active net (+A)-(-A)", _W, _WH),
    }
)

#: Value group D (electricity). Left out: thresholds, occurrence counters, durations (31..42) and the
#: "cumulative min/max" families, which are not channel values.
PROCESSING: Final[MappingProxyType[int, _Processing]] = MappingProxyType(
    {
        0: _Processing("billing period average", "rate"),
        3: _Processing("minimum 1", "rate"),
        4: _Processing("current average 1 (demand)", "rate"),
        5: _Processing("last average 1 (demand)", "rate", interval_in_profile=True),
        6: _Processing("maximum 1 (maximum demand)", "rate"),
        7: _Processing("instantaneous value", "rate"),
        8: _Processing("time integral 1 (cumulative from origin)", "amount"),
        9: _Processing("time integral 2 (since start of billing period)", "amount"),
        24: _Processing("current average 3", "rate"),
        25: _Processing("last average 3", "rate", interval_in_profile=True),
        29: _Processing("time integral 5 (over the last recording interval)", "amount", interval=True),
    }
)

_INSTANTANEOUS = 7

_PHASES: Final[tuple[tuple[int, Phase], ...]] = ((20, "L1"), (40, "L2"), (60, "L3"))

#: C codes outside 1..80 that are still electricity channels. 91: neutral current (UNCERTAIN: recalled
#: from the public OBIS summaries; used by some IDIS meters).
_SPECIAL_C: Final[MappingProxyType[int, tuple[_Quantity, Phase]]] = MappingProxyType(
    {91: (_Quantity("current", "none", "current", _A), "N")}
)

#: Non-electricity media (value group A): (A, C) -> (quantity, unit code, label). D/E are not
#: interpreted beyond "a current index/value" (D = 0 for these media's meter indexes in the public
#: examples, e.g. 7-0:3.0.0 gas meter volume). UNCERTAIN beyond the gas volume examples: the C codes for
#: heat (A=6: 1 energy, 8 power) and water (A=8/9: 1 volume) are from public summaries, not a full table.
_MEDIA: Final[MappingProxyType[tuple[int, int], tuple[str, int, str]]] = MappingProxyType(
    {
        (6, 1): ("heat_energy", _WH, "heat energy"),
        (6, 8): ("heat_power", _W, "heat power"),
        (7, 1): ("gas_volume", _M3, "gas volume forward, undisturbed"),
        (7, 2): ("gas_volume", _M3, "gas volume forward, disturbed"),
        (7, 3): ("gas_volume", _M3, "gas volume forward, absolute"),
        (8, 1): ("water_volume", _M3, "cold water volume"),
        (9, 1): ("water_volume", _M3, "hot water volume"),
    }
)
_MEDIA_D: Final[frozenset[int]] = frozenset({0, 8})


def reading_type(obis: Obis, *, from_profile: bool = False) -> ReadingType | None:
    """The reading type of the channel named ``obis``, or None when no rule covers it.

    ``from_profile`` says the value was read from a load profile buffer rather than from the object
    itself; it only changes the kind for D codes that are per-period values in a profile (see the
    module docstring). Groups B (channel) and F (historical value) do not change the reading type;
    E names the tariff (0 = total) and appears in the description.
    """
    if obis.a == 1:
        return _electricity(obis, from_profile)
    media = _MEDIA.get((obis.a, obis.c))
    if media is not None and obis.d in _MEDIA_D:
        quantity, unit, label = media
        return ReadingType(
            code=obis.reduced,
            kind="register",
            unit=unit_symbol(unit),
            direction="import",
            quantity=quantity,
            description=label,
            unit_code=unit,
        )
    if obis.a == 0 and obis.c == 24 and obis.d == 2 and 1 <= obis.b <= 4:
        # M-Bus client channel values (DSMR 5 0-n:24.2.1 gas/water/heat): the unit comes from the
        # device (scaler_unit of the extended register), not from the code.
        return ReadingType(
            code=obis.reduced,
            kind="register",
            unit=None,
            direction="import",
            quantity="mbus_value",
            description=f"M-Bus channel {obis.b} value",
        )
    return None


def _electricity(obis: Obis, from_profile: bool) -> ReadingType | None:
    phase: Phase | None = None
    c = obis.c
    special = _SPECIAL_C.get(c)
    if special is not None:
        quantity, phase = special
    else:
        for offset, phase_name in _PHASES:
            if offset < c <= offset + 20:
                c, phase = c - offset, phase_name
                break
        found = QUANTITIES.get(c)
        if found is None:
            return None
        quantity = found
    processing = PROCESSING.get(obis.d)
    if processing is None:
        return None
    if processing.measure == "amount":
        if not quantity.flow:
            return None  # V²h, A²h and the like are not channel values here
        unit_code = quantity.amount_unit
        quantity_name = f"{quantity.name}_energy"
    else:
        unit_code = quantity.rate_unit
        quantity_name = f"{quantity.name}_power" if quantity.flow else quantity.name
    interval = processing.interval or (from_profile and processing.interval_in_profile)
    if obis.d == _INSTANTANEOUS and obis.e != 0:
        return None  # E of an instantaneous value is not a tariff (harmonics and the like): not mapped
    noun = ("energy" if processing.measure == "amount" else "power") if quantity.flow else ""
    parts = [f"{quantity.label} {noun}".strip(), processing.label]
    if phase is not None:
        parts.append(f"phase {phase}")
    if obis.e:
        parts.append(f"tariff {obis.e}")
    return ReadingType(
        code=obis.reduced,
        kind="interval" if interval else "register",
        unit=None if unit_code is None else unit_symbol(unit_code),
        direction=quantity.direction,
        quantity=quantity_name,
        description=", ".join(p for p in parts if p),
        phase=phase,
        unit_code=unit_code,
    )
