"""Companion standards as data: which COSEM objects a meter of a profile carries, and where.

Why: a companion standard (IDIS, DSMR, IS 15959) fixes the OBIS codes and interface classes of the
objects a conforming meter exposes. Holding that as frozen tables lets the head end read a meter of a
known profile -- clock, energy registers, load profiles, event logs, disconnector -- with no code written
for that meter. Each module cites the public description its table follows and marks what could not
be confirmed from it.

Modules: :mod:`.idis` (IDIS package 2, poly-phase), :mod:`.dsmr5` (DSMR 5.0.2 P1 companion standard),
:mod:`.is15959` (Indian IS 15959 categories). They are imported on demand by :func:`profiles`.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass

from openami.protocols.dlms.obis import Obis

__all__ = ["ObjectSpec", "Profile", "obj", "profiles"]


@dataclass(frozen=True)
class ObjectSpec:
    """One object of a companion standard.

    ``unit`` is the unit the standard states for the value (symbols as in
    :mod:`openami.protocols.dlms.units`, except DSMR P1 which states the unit as the telegram writes
    it); ``scaler_hint`` is a scaler the standard recommends, when it states one. Neither replaces the
    ``scaler_unit`` the meter itself reports: they are for validation and for text protocols that
    carry no scaler.
    """

    obis: Obis
    class_id: int
    description: str
    unit: str | None = None
    scaler_hint: int | None = None


@dataclass(frozen=True)
class Profile:
    """A companion standard: its objects and the roles a head end needs to find."""

    name: str
    objects: tuple[ObjectSpec, ...]
    load_profiles: tuple[Obis, ...]
    event_logs: tuple[Obis, ...]
    clock: Obis
    disconnect_control: Obis | None
    meter_id: Obis

    def find(self, obis: Obis) -> ObjectSpec | None:
        """The object with this OBIS code; group F is ignored when no exact match exists."""
        for spec in self.objects:
            if spec.obis == obis:
                return spec
        for spec in self.objects:
            if spec.obis[:5] == obis[:5]:
                return spec
        return None


def obj(
    code: str, class_id: int, description: str, unit: str | None = None, scaler_hint: int | None = None
) -> ObjectSpec:
    """An :class:`ObjectSpec` from the reduced text form, so tables read like the standards print them."""
    return ObjectSpec(Obis.parse(code), class_id, description, unit, scaler_hint)


_MODULES = ("idis", "dsmr5", "is15959")


def profiles() -> dict[str, Profile]:
    """Every known profile by name (modules imported on first use)."""
    found: dict[str, Profile] = {}
    for module_name in _MODULES:
        module = importlib.import_module(f"{__name__}.{module_name}")
        profile = module.PROFILE
        if not isinstance(profile, Profile):  # pragma: no cover - a module's own type error
            raise TypeError(f"{module_name}.PROFILE is not a Profile")
        found[profile.name] = profile
    return found
