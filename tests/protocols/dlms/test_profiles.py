"""Companion standards as data: every object resolvable, no duplicates, roles present."""

from __future__ import annotations

import pytest

from openami.protocols.dlms.cosem import CLASSES
from openami.protocols.dlms.obis import Obis
from openami.protocols.dlms.profiles import Profile, dsmr5, idis, is15959, profiles

ALL = [idis.PROFILE, dsmr5.PROFILE, is15959.PROFILE]


def test_registry() -> None:
    assert profiles() == {"IDIS": idis.PROFILE, "DSMR5": dsmr5.PROFILE, "IS15959": is15959.PROFILE}


@pytest.mark.parametrize("profile", ALL, ids=lambda p: p.name)
def test_profile_consistency(profile: Profile) -> None:
    codes = [spec.obis for spec in profile.objects]
    assert len(set(codes)) == len(codes), "duplicate OBIS in profile"
    for spec in profile.objects:
        assert spec.class_id in CLASSES, spec
        assert Obis.parse(spec.obis.reduced) == spec.obis
        assert spec.description
    roles = [profile.clock, profile.meter_id, *profile.load_profiles, *profile.event_logs]
    if profile.disconnect_control is not None:
        roles.append(profile.disconnect_control)
    for role in roles:
        assert profile.find(role) is not None, role
    assert profile.find(profile.clock).class_id == 8  # type: ignore[union-attr]
    for code in (*profile.load_profiles, *profile.event_logs):
        assert profile.find(code).class_id == 7  # type: ignore[union-attr]
    if profile.disconnect_control is not None:
        assert profile.find(profile.disconnect_control).class_id == 70  # type: ignore[union-attr]


def test_find_ignores_f_when_no_exact_match() -> None:
    spec = idis.PROFILE.find(Obis(1, 0, 1, 8, 0, 101))
    assert spec is not None
    assert spec.obis == Obis.parse("1-0:1.8.0")
    assert idis.PROFILE.find(Obis.parse("9-9:9.9.9")) is None


@pytest.mark.parametrize(
    ("code", "class_id"),
    [
        ("0-0:1.0.0", 8),
        ("1-0:1.8.0", 3),
        ("1-0:2.8.2", 3),
        ("1-0:72.7.0", 3),
        ("1-0:99.1.0", 7),
        ("1-0:99.2.0", 7),
        ("0-0:99.98.4", 7),
        ("1-0:99.97.0", 7),
        ("0-0:96.3.10", 70),
        ("0-3:25.9.0", 40),
        ("0-0:42.0.0", 1),
        ("1-0:0.2.0", 1),
    ],
)
def test_idis_spot_checks(code: str, class_id: int) -> None:
    spec = idis.PROFILE.find(Obis.parse(code))
    assert spec is not None
    assert spec.class_id == class_id


def test_dsmr5_p1() -> None:
    p = dsmr5.PROFILE
    assert p.meter_id == Obis.parse("0-0:96.1.1")
    assert p.disconnect_control is None
    version = p.find(Obis.parse("1-3:0.2.8"))
    assert version is not None
    energy = p.find(Obis.parse("1-0:1.8.1"))
    assert energy is not None
    assert (energy.class_id, energy.unit) == (3, "kWh")
    for n in dsmr5.MBUS_CHANNELS:
        gas = p.find(Obis(0, n, 24, 2, 1))
        assert gas is not None
        assert (gas.class_id, gas.unit) == (4, "m3")
        device = p.find(Obis(0, n, 24, 1, 0))
        assert device is not None
        assert device.class_id == 72
    for code in ("1-0:32.32.0", "1-0:32.36.0", "0-0:96.7.21", "0-0:96.7.9", "0-0:96.14.0"):
        assert p.find(Obis.parse(code)) is not None, code


def test_is15959_categories() -> None:
    p = is15959.PROFILE
    for obis in is15959.CATEGORIES.values():
        spec = p.find(obis)
        assert spec is not None
        assert spec.class_id == 7
    for profile, scaler in is15959.SCALER_PROFILES.items():
        assert p.find(profile) is not None
        scaler_spec = p.find(scaler)
        assert scaler_spec is not None
        assert scaler_spec.class_id == 7
    assert is15959.SCALER_PROFILES[Obis.parse("1-0:94.91.0")] == Obis.parse("1-0:94.91.3")
    assert len(p.event_logs) == 7
    block = p.find(Obis.parse("1-0:1.29.0"))
    assert block is not None
    assert block.unit == "Wh"
