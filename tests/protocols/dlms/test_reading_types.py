"""OBIS -> reading type: spot checks of the value-group rules."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from openami.protocols.dlms.obis import Obis
from openami.protocols.dlms.profiles import profiles
from openami.protocols.dlms.reading_types import ReadingType, reading_type
from openami.protocols.dlms.units import UNIT_SYMBOLS


def rt(code: str, *, from_profile: bool = False) -> ReadingType:
    found = reading_type(Obis.parse(code), from_profile=from_profile)
    assert found is not None, code
    return found


@pytest.mark.parametrize(
    ("code", "kind", "quantity", "direction", "unit"),
    [
        ("1-0:1.8.0", "register", "active_energy", "import", "Wh"),
        ("1-0:2.8.0", "register", "active_energy", "export", "Wh"),
        ("1-0:1.8.2", "register", "active_energy", "import", "Wh"),
        ("1-0:3.8.0", "register", "reactive_energy", "import", "varh"),
        ("1-0:4.8.0", "register", "reactive_energy", "export", "varh"),
        ("1-0:5.8.0", "register", "reactive_q1_energy", "import", "varh"),
        ("1-0:8.8.0", "register", "reactive_q4_energy", "export", "varh"),
        ("1-0:9.8.0", "register", "apparent_energy", "import", "VAh"),
        ("1-0:1.29.0", "interval", "active_energy", "import", "Wh"),
        ("1-0:2.29.0", "interval", "active_energy", "export", "Wh"),
        ("1-0:1.7.0", "register", "active_power", "import", "W"),
        ("1-0:2.7.0", "register", "active_power", "export", "W"),
        ("1-0:21.7.0", "register", "active_power", "import", "W"),
        ("1-0:42.7.0", "register", "active_power", "export", "W"),
        ("1-0:3.7.0", "register", "reactive_power", "import", "var"),
        ("1-0:9.7.0", "register", "apparent_power", "import", "VA"),
        ("1-0:32.7.0", "register", "voltage", "none", "V"),
        ("1-0:52.7.0", "register", "voltage", "none", "V"),
        ("1-0:72.7.0", "register", "voltage", "none", "V"),
        ("1-0:31.7.0", "register", "current", "none", "A"),
        ("1-0:71.7.0", "register", "current", "none", "A"),
        ("1-0:13.7.0", "register", "power_factor", "none", None),
        ("1-0:33.7.0", "register", "power_factor", "none", None),
        ("1-0:14.7.0", "register", "frequency", "none", "Hz"),
        ("1-0:1.6.0", "register", "active_power", "import", "W"),
        ("7-0:3.0.0", "register", "gas_volume", "import", "m³"),
        ("8-0:1.0.0", "register", "water_volume", "import", "m³"),
    ],
)
def test_spot_checks(code: str, kind: str, quantity: str, direction: str, unit: str | None) -> None:
    found = rt(code)
    assert (found.code, found.kind, found.quantity, found.direction, found.unit) == (
        code,
        kind,
        quantity,
        direction,
        unit,
    )


def test_phases() -> None:
    assert rt("1-0:21.7.0").phase == "L1"
    assert rt("1-0:52.7.0").phase == "L2"
    assert rt("1-0:71.7.0").phase == "L3"
    assert rt("1-0:1.7.0").phase is None
    assert rt("1-0:61.8.0").quantity == "active_energy"
    assert rt("1-0:61.8.0").phase == "L3"


def test_profile_capture_keeps_registers() -> None:
    # A cumulative register or an instantaneous sample captured by a load profile stays a register.
    assert rt("1-0:1.8.0", from_profile=True).kind == "register"
    assert rt("1-0:32.7.0", from_profile=True).kind == "register"
    # Per-interval values are interval data however they are read.
    assert rt("1-0:1.29.0", from_profile=True).kind == "interval"
    # The last average demand is a per-period value only inside a profile.
    assert rt("1-0:1.5.0").kind == "register"
    assert rt("1-0:1.5.0", from_profile=True).kind == "interval"


def test_description_mentions_tariff_and_phase() -> None:
    assert "tariff 2" in rt("1-0:1.8.2").description
    assert "phase L1" in rt("1-0:32.7.0").description


def test_group_f_and_b_do_not_matter() -> None:
    assert rt("1-0:1.8.0*101").quantity == rt("1-0:1.8.0").quantity
    assert rt("1-1:1.8.0").unit == "Wh"


def test_mbus_channel_value() -> None:
    found = rt("0-1:24.2.1")
    assert found.quantity == "mbus_value"
    assert found.unit is None


@pytest.mark.parametrize(
    "code",
    [
        "0-0:1.0.0",  # clock
        "0-0:96.1.0",  # identifier
        "1-0:99.1.0",  # load profile object itself
        "1-0:0.2.0",  # firmware id
        "1-0:32.8.0",  # V²h: not a channel here
        "1-0:32.32.0",  # sag counter
        "1-0:32.7.124",  # instantaneous value with E != 0 (not a tariff)
        "5-0:1.0.0",  # cooling: no rule
    ],
)
def test_unmapped(code: str) -> None:
    assert reading_type(Obis.parse(code)) is None


def test_units_agree_with_unit_codes() -> None:
    found = rt("1-0:1.8.0")
    assert found.unit_code is not None
    assert UNIT_SYMBOLS[found.unit_code] == found.unit


def test_profile_registers_have_consistent_units() -> None:
    """Where a DLMS profile states a unit for a mapped object, the mapping agrees with it."""
    for name, profile in profiles().items():
        if name == "DSMR5":
            continue  # P1 states telegram units (kWh, kW)
        for spec in profile.objects:
            found = reading_type(spec.obis)
            if found is not None and spec.unit is not None:
                assert found.unit == spec.unit, (name, spec)


@given(st.tuples(*(st.integers(0, 255) for _ in range(6))))
def test_total(groups: tuple[int, int, int, int, int, int]) -> None:
    found = reading_type(Obis(*groups))
    if found is not None:
        assert found.kind in ("register", "interval")
        assert found.direction in ("import", "export", "none")
        assert found.code == Obis(*groups).reduced
        assert found.unit is None or found.unit_code is not None or found.quantity == "mbus_value"
