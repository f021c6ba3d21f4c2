"""Configuration commands to DLMS meters: load limit (limiter, class 71), push destination (push setup,
class 40) and tariff calendar (activity calendar, class 20); and the parameters of every command kind.

Kept apart from :mod:`openami.hes.commands` because each of them is mostly encoding: turning what an
operator writes (``{"threshold": 8000}``, ``"hes.example:4059"``, a calendar of seasons, weeks and days)
into the COSEM attributes of IEC 62056-6-2 and back. The service records, sends and audits them like
any other command.

Each kind has two halves with one rule between them: :func:`apply` writes the attributes, and
:func:`in_place` reads them back and says whether the meter holds what the command asked for. The
service calls ``in_place`` after ``apply`` to confirm (a meter that acknowledged a SET but reads back
something else failed the command) and *before* a second attempt (ADR 0013: verify before resend), so
what counts as done is the same both times.

Parameters are checked (:func:`command_params`) when a command is asked for, before anything is
recorded: a bad one is :class:`~openami.security.errors.InvalidInput` naming the field, and what is
recorded is the normalised form, so a job attempt hours later encodes exactly what was checked.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Final

from openami.drivers.dlms.client import DlmsClient
from openami.protocols.dlms.axdr import (
    CosemDate,
    CosemDateTime,
    CosemTime,
    Data,
    datetime_octets,
    encode_data,
    encode_datetime,
)
from openami.protocols.dlms.obis import Obis
from openami.protocols.dlms.xdlms import CosemAttribute, CosemMethod
from openami.security.errors import InvalidInput
from openami.security.keyvault import KeyKind

__all__ = [
    "CONFIG_KINDS",
    "KEY_ROTATION",
    "ROTATED_KEYS",
    "apply",
    "command_params",
    "in_place",
]

CONFIG_KINDS: Final = frozenset({"load_limit", "push_setup", "tariff_calendar"})
KEY_ROTATION: Final = "key_rotation"
ROTATED_KEYS: Final[dict[str, tuple[KeyKind, int]]] = {"encryption": ("ek", 0), "authentication": ("ak", 2)}
"""Key rotation's ``key`` parameter -> (key vault kind, global_key_transfer key_id)."""

_LIMITER: Final = Obis(0, 0, 17, 0, 0, 255)
_PUSH_SETUP: Final = Obis(0, 1, 25, 9, 0, 255)
_CALENDAR: Final = Obis(0, 0, 13, 0, 0, 255)
_TARIFF_SCRIPTS: Final = Obis(0, 0, 10, 0, 100, 255)
"""The tariffication script table the day profiles' switches run a script of."""
_THRESHOLD_ACTIVE: Final = CosemAttribute(71, _LIMITER, 3)
_THRESHOLD_NORMAL: Final = CosemAttribute(71, _LIMITER, 4)
_DESTINATION: Final = CosemAttribute(40, _PUSH_SETUP, 3)
_ACTIVE_CALENDAR: Final = tuple(CosemAttribute(20, _CALENDAR, index) for index in (2, 3, 4, 5))
_PASSIVE_CALENDAR: Final = tuple(CosemAttribute(20, _CALENDAR, index) for index in (6, 7, 8, 9))
_ACTIVATION_TIME: Final = CosemAttribute(20, _CALENDAR, 10)
_ACTIVATE_PASSIVE: Final = CosemMethod(20, _CALENDAR, 1)

_TRANSPORTS: Final = {"tcp": 0, "udp": 1}
_MESSAGES: Final = {"a-xdr": 0, "xml": 1}
_MAX_THRESHOLD: Final = 0xFFFFFFFF
_MAX_NAME: Final = 32
_MAX_ENTRIES: Final = 32
_HOST: Final = re.compile(r"^[A-Za-z0-9.\-]{1,253}$|^\[[0-9A-Fa-f:.]{2,45}\]$")
_MONTH_DAY: Final = re.compile(r"^(\d{2})-(\d{2})$")
_HOUR_MINUTE: Final = re.compile(r"^(\d{2}):(\d{2})$")
_DAYS: Final = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")


def command_params(kind: str, params: Mapping[str, Any] | None) -> dict[str, Any]:
    """The normalised parameters of a ``kind`` command; :class:`InvalidInput` naming what is wrong.

    Relay and clock commands take none; ``load_limit`` ``{"threshold": W, "normal": W?}``,
    ``push_setup`` ``{"destination": "host:port", "transport": "tcp"|"udp", "message": "a-xdr"|"xml"}``,
    ``tariff_calendar`` a calendar (:func:`_calendar`), ``key_rotation`` ``{"key": "encryption" |
    "authentication"}``.
    """
    given = dict(params or {})
    if kind == "load_limit":
        _only(given, kind, {"threshold", "normal"})
        checked = {"threshold": _watts(given.get("threshold"), "threshold")}
        if given.get("normal") is not None:
            checked["normal"] = _watts(given["normal"], "normal")
        return checked
    if kind == "push_setup":
        _only(given, kind, {"destination", "transport", "message"})
        return {
            "destination": _destination(given.get("destination")),
            "transport": _choice(given.get("transport", "tcp"), "transport", _TRANSPORTS),
            "message": _choice(given.get("message", "a-xdr"), "message", _MESSAGES),
        }
    if kind == "tariff_calendar":
        return _calendar(given)
    if kind == KEY_ROTATION:
        _only(given, kind, {"key"})
        return {"key": _choice(given.get("key"), "key", ROTATED_KEYS)}
    if given:
        raise InvalidInput(f"a {kind} command takes no parameters (got {', '.join(sorted(given))})")
    return {}


def _only(given: Mapping[str, Any], kind: str, allowed: set[str]) -> None:
    unknown = set(given) - allowed
    if unknown:
        raise InvalidInput(
            f"{kind}: unknown parameters {', '.join(sorted(unknown))} (allowed: {', '.join(sorted(allowed))})"
        )


def _integer(value: Any, name: str, low: int, high: int) -> int:
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise InvalidInput(f"{name} must be a whole number in {low}..{high}, got {value!r}")
    return value


def _watts(value: Any, name: str) -> int:
    return _integer(value, f"{name} (W)", 0, _MAX_THRESHOLD)


def _choice(value: Any, name: str, choices: Mapping[str, Any]) -> str:
    if value not in choices:
        raise InvalidInput(f"{name} must be one of {', '.join(choices)}, got {value!r}")
    return str(value)


def _text(value: Any, name: str) -> str:
    if not isinstance(value, str) or not 0 < len(value.encode()) <= _MAX_NAME or not value.isprintable():
        raise InvalidInput(f"{name} must be 1..{_MAX_NAME} bytes of printable text, got {value!r}")
    return value


def _destination(value: Any) -> str:
    if not isinstance(value, str) or ":" not in value:
        raise InvalidInput(f"destination must be 'host:port', got {value!r}")
    host, _, port = value.rpartition(":")
    if not _HOST.match(host) or not port.isdigit() or not 0 < int(port) <= 0xFFFF:
        raise InvalidInput(f"destination must be 'host:port' with a port in 1..65535, got {value!r}")
    return value


def _entries(value: Any, name: str) -> list[Mapping[str, Any]]:
    if not isinstance(value, list) or not 0 < len(value) <= _MAX_ENTRIES:
        raise InvalidInput(f"calendar {name} must be a list of 1..{_MAX_ENTRIES} entries")
    if not all(isinstance(item, Mapping) for item in value):
        raise InvalidInput(f"calendar {name}: every entry must be an object")
    return value


def _match(pattern: re.Pattern[str], value: Any, name: str, shape: str) -> tuple[int, int]:
    found = pattern.match(value) if isinstance(value, str) else None
    if found is None:
        raise InvalidInput(f"{name} must be {shape}, got {value!r}")
    return int(found[1]), int(found[2])


def _calendar(given: Mapping[str, Any]) -> dict[str, Any]:
    """``{"name", "seasons": [{"name", "start": "MM-DD", "week"}], "weeks": [{"name", "days": [7 day
    ids, Monday first]}], "days": [{"id", "switches": [{"time": "HH:MM", "script": selector}]}],
    "activate_at": ISO-8601 with offset, or null for at once}``; every week a season names and every
    day a week names must be defined."""
    _only(given, "tariff_calendar", {"name", "seasons", "weeks", "days", "activate_at"})
    days = []
    for day in _entries(given.get("days"), "days"):
        switches = []
        for switch in _entries(day.get("switches"), "switches"):
            hour, minute = _match(_HOUR_MINUTE, switch.get("time"), "switch time", "'HH:MM'")
            if hour > 23 or minute > 59:
                raise InvalidInput(f"switch time {switch.get('time')!r} is not a time of day")
            script = _integer(switch.get("script"), "switch script", 0, 0xFFFF)
            switches.append({"time": f"{hour:02d}:{minute:02d}", "script": script})
        switches.sort(key=lambda s: str(s["time"]))
        days.append({"id": _integer(day.get("id"), "day id", 0, 255), "switches": switches})
    day_ids = {day["id"] for day in days}
    if len(day_ids) != len(days):
        raise InvalidInput("calendar days: two days have the same id")
    weeks = []
    for week in _entries(given.get("weeks"), "weeks"):
        ids = week.get("days")
        if not isinstance(ids, list) or len(ids) != len(_DAYS):
            raise InvalidInput(f"week {week.get('name')!r}: days must list 7 day ids, Monday first")
        ids = [_integer(d, "week day id", 0, 255) for d in ids]
        missing = sorted(set(ids) - day_ids)
        if missing:
            raise InvalidInput(f"week {week.get('name')!r} names undefined days {missing}")
        weeks.append({"name": _text(week.get("name"), "week name"), "days": ids})
    week_names = {week["name"] for week in weeks}
    seasons = []
    for season in _entries(given.get("seasons"), "seasons"):
        month, month_day = _match(_MONTH_DAY, season.get("start"), "season start", "'MM-DD'")
        if not (1 <= month <= 12 and 1 <= month_day <= 31):
            raise InvalidInput(f"season start {season.get('start')!r} is not a day of the year")
        week_name = _text(season.get("week"), "season week")
        if week_name not in week_names:
            raise InvalidInput(f"season {season.get('name')!r} names an undefined week {week_name!r}")
        name = _text(season.get("name"), "season name")
        seasons.append({"name": name, "start": f"{month:02d}-{month_day:02d}", "week": week_name})
    activate_at = given.get("activate_at")
    if activate_at is not None:
        try:
            moment = datetime.fromisoformat(str(activate_at))
        except ValueError:
            raise InvalidInput(f"activate_at must be ISO-8601, got {activate_at!r}") from None
        if moment.tzinfo is None:
            raise InvalidInput(f"activate_at {activate_at!r} needs a UTC offset")
        activate_at = moment.astimezone(UTC).isoformat()
    return {
        "name": _text(given.get("name"), "calendar name"),
        "seasons": seasons,
        "weeks": weeks,
        "days": days,
        "activate_at": activate_at,
    }


def _calendar_data(params: Mapping[str, Any]) -> tuple[Data, Data, Data, Data]:
    """The passive calendar's attributes 6..9 (name, seasons, weeks, days) for ``params``."""
    seasons = []
    for season in params["seasons"]:
        month, day = map(int, season["start"].split("-"))
        start = CosemDateTime(CosemDate(None, month, day, None), CosemTime(0, 0, 0, 0))
        seasons.append(
            Data.structure(
                Data.octet_string(season["name"].encode()),
                Data.octet_string(encode_datetime(start)),
                Data.octet_string(season["week"].encode()),
            )
        )
    weeks = [
        Data.structure(Data.octet_string(week["name"].encode()), *map(Data.uint8, week["days"]))
        for week in params["weeks"]
    ]
    days = []
    for day in params["days"]:
        actions = []
        for switch in day["switches"]:
            hour, minute = map(int, switch["time"].split(":"))
            actions.append(
                Data.structure(
                    Data.octet_string(bytes((hour, minute, 0, 0))),
                    Data.octet_string(_TARIFF_SCRIPTS.to_bytes()),
                    Data.uint16(switch["script"]),
                )
            )
        days.append(Data.structure(Data.uint8(day["id"]), Data.array(*actions)))
    return (
        Data.octet_string(params["name"].encode()),
        Data.array(*seasons),
        Data.array(*weeks),
        Data.array(*days),
    )


def _activation(params: Mapping[str, Any]) -> Data | None:
    moment = params.get("activate_at")
    return None if moment is None else Data.octet_string(datetime_octets(datetime.fromisoformat(moment)))


def _same(a: Data, b: Data) -> bool:
    return encode_data(a) == encode_data(b)


async def _holds(
    client: DlmsClient, attributes: tuple[CosemAttribute, ...], wanted: tuple[Data, ...]
) -> bool:
    for attribute, value in zip(attributes, wanted, strict=True):
        if not _same(await client.get(attribute), value):
            return False
    return True


async def apply(client: DlmsClient, kind: str, params: Mapping[str, Any]) -> None:
    """Write what a ``kind`` command with (checked) ``params`` sets on the meter."""
    if kind == "load_limit":
        await client.set(_THRESHOLD_ACTIVE, Data.uint32(params["threshold"]))
        if "normal" in params:
            await client.set(_THRESHOLD_NORMAL, Data.uint32(params["normal"]))
    elif kind == "push_setup":
        await client.set(_DESTINATION, _destination_data(params))
    elif kind == "tariff_calendar":
        for attribute, value in zip(_PASSIVE_CALENDAR, _calendar_data(params), strict=True):
            await client.set(attribute, value)
        activation = _activation(params)
        if activation is None:
            await client.action(_ACTIVATE_PASSIVE, Data.int8(0))
        else:
            await client.set(_ACTIVATION_TIME, activation)
    else:
        raise InvalidInput(f"{kind!r} is not a configuration command")


def _destination_data(params: Mapping[str, Any]) -> Data:
    return Data.structure(
        Data.enum(_TRANSPORTS[params["transport"]]),
        Data.octet_string(params["destination"].encode()),
        Data.enum(_MESSAGES[params["message"]]),
    )


async def in_place(client: DlmsClient, kind: str, params: Mapping[str, Any]) -> dict[str, Any] | None:
    """What the meter reports when it already holds what the command sets (the command's result), else
    None. A calendar with an activation time counts as in place once it is the passive calendar with
    that activation time, or (the time passed) the active one."""
    if kind == "load_limit":
        active = (await client.get(_THRESHOLD_ACTIVE)).value
        normal = (await client.get(_THRESHOLD_NORMAL)).value if "normal" in params else None
        if active != params["threshold"] or normal != params.get("normal"):
            return None
        return {"threshold_active": active, **({"threshold_normal": normal} if normal is not None else {})}
    if kind == "push_setup":
        if not _same(await client.get(_DESTINATION), _destination_data(params)):
            return None
        return {key: params[key] for key in ("destination", "transport", "message")}
    if kind == "tariff_calendar":
        wanted = _calendar_data(params)
        if await _holds(client, _ACTIVE_CALENDAR, wanted):
            return {"calendar": params["name"], "active": True}
        activation = _activation(params)
        if activation is not None and await _holds(
            client, (*_PASSIVE_CALENDAR, _ACTIVATION_TIME), (*wanted, activation)
        ):
            return {"calendar": params["name"], "active": False, "activate_at": params["activate_at"]}
        return None
    raise InvalidInput(f"{kind!r} is not a configuration command")
