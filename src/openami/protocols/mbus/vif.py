"""Value information block (EN 13757-3 §6.4 and annex): what a record measures and in which unit.

A VIB is the primary VIF, possibly switched to the extension tables FB or FD by its first VIFE, then
combinable (orthogonal) VIFEs that qualify it: "per hour", "upper limit", "multiplicative correction
factor", record error codes. Every value is normalised to one base unit per quantity (Wh, J, m3, kg, s,
W, J/h, m3/h, kg/h, °C, K, bar, V, A) by ``10**exponent * factor``, so consumers never see a VIF range.

Unknown codes are kept, not refused: a reserved primary VIF becomes quantity ``reserved`` and an unknown
VIFE an annotation ``vife_0x..``, because one odd record should not cost the rest of a telegram. Only
structure is refused: more than ten VIFE, or a plain-text unit that runs past the data.
"""

from __future__ import annotations

from dataclasses import dataclass

from openami.protocols.mbus.errors import DecodeError

__all__ = ["IDENTIFIER_QUANTITIES", "MAX_VIFE", "PROFILE_VIFE", "ValueInformation", "parse_vib"]

MAX_VIFE = 10

_DURATION = ((1, "s"), (60, "s"), (3600, "s"), (86400, "s"))
"""Duration units nn = seconds, minutes, hours, days: all normalised to seconds."""
_LONG_DURATION = ((3600, "s"), (86400, "s"), (1, "month"), (1, "year"))
"""FD 0x68..0x6F: hours, days, months, years; months and years have no fixed length in seconds."""


@dataclass(frozen=True, slots=True)
class ValueInformation:
    """A decoded VIB.

    ``kind`` tells the value decoder how to read the data field: ``number`` (scaled by ``10**exponent *
    factor``), ``date`` (type G), ``datetime`` (type F/I/J by length), ``id`` and ``flags`` (unsigned,
    unscaled), ``raw`` (a container whose bytes only the manufacturer can read, kept as bytes). A
    manufacturer-specific VIF (0x7F) still has a DIF-coded value, so it is a ``number`` with no unit.
    """

    vif: int
    vife: tuple[int, ...]
    quantity: str
    unit: str | None
    exponent: int = 0
    factor: int = 1
    kind: str = "number"
    annotations: tuple[str, ...] = ()
    plain_text: str | None = None

    def scale(self, raw: int | float) -> int | float:
        """``raw * factor * 10**exponent`` in the base unit; dividing by a power of ten (not multiplying
        by 0.001) keeps 1234 Wh*10^-3 exactly the float 1.234."""
        value = raw * self.factor
        if self.exponent >= 0:
            scaled: int | float = value * 10**self.exponent
        else:
            scaled = value / 10**-self.exponent
        return scaled


Entry = tuple[str, str | None, int, int, str]
"""(quantity, unit, exponent, factor, kind)"""


def _primary(code: int) -> Entry:
    n = code & 0x07
    table: tuple[tuple[int, int, str, str, int], ...] = (
        (0x00, 0x07, "energy", "Wh", -3),
        (0x08, 0x0F, "energy", "J", 0),
        (0x10, 0x17, "volume", "m3", -6),
        (0x18, 0x1F, "mass", "kg", -3),
        (0x28, 0x2F, "power", "W", -3),
        (0x30, 0x37, "power", "J/h", 0),
        (0x38, 0x3F, "volume_flow", "m3/h", -6),
        (0x40, 0x47, "volume_flow", "m3/h", -7),
        (0x48, 0x4F, "volume_flow", "m3/h", -9),
        (0x50, 0x57, "mass_flow", "kg/h", -3),
    )
    for low, high, quantity, unit, bias in table:
        if low <= code <= high:
            factor = 60 if low == 0x40 else 3600 if low == 0x48 else 1
            return quantity, unit, n + bias, factor, "number"
    nn = code & 0x03
    four: tuple[tuple[int, str, str], ...] = (
        (0x58, "flow_temperature", "°C"),
        (0x5C, "return_temperature", "°C"),
        (0x60, "temperature_difference", "K"),
        (0x64, "external_temperature", "°C"),
        (0x68, "pressure", "bar"),
    )
    for low, quantity, unit in four:
        if low <= code <= low + 3:
            return quantity, unit, nn - 3, 1, "number"
    for low, quantity in ((0x20, "on_time"), (0x24, "operating_time"), (0x70, "averaging_duration"),
                          (0x74, "actuality_duration")):  # fmt: skip
        if low <= code <= low + 3:
            return quantity, _DURATION[nn][1], 0, _DURATION[nn][0], "number"
    special: dict[int, Entry] = {
        0x6C: ("date", None, 0, 1, "date"),
        0x6D: ("date_time", None, 0, 1, "datetime"),
        0x6E: ("hca", "HCA", 0, 1, "number"),
        0x78: ("fabrication_no", None, 0, 1, "id"),
        0x79: ("enhanced_identification", None, 0, 1, "id"),
        0x7A: ("bus_address", None, 0, 1, "id"),
        0x7E: ("any", None, 0, 1, "number"),
        0x7F: ("manufacturer_specific", None, 0, 1, "number"),
    }
    return special.get(code, ("reserved", None, 0, 1, "number"))


_FD_NAMED: dict[int, tuple[str, str]] = {
    0x08: ("access_number", "id"), 0x09: ("medium", "id"), 0x0A: ("manufacturer", "id"),
    0x0B: ("parameter_set_id", "id"), 0x0C: ("model_version", "id"), 0x0D: ("hardware_version", "id"),
    0x0E: ("firmware_version", "id"), 0x0F: ("software_version", "id"), 0x10: ("customer_location", "id"),
    0x11: ("customer", "id"), 0x12: ("access_code_user", "id"), 0x13: ("access_code_operator", "id"),
    0x14: ("access_code_system_operator", "id"), 0x15: ("access_code_developer", "id"),
    0x16: ("password", "id"), 0x17: ("error_flags", "flags"), 0x18: ("error_mask", "flags"),
    0x1A: ("digital_output", "flags"), 0x1B: ("digital_input", "flags"), 0x1C: ("baud_rate", "number"),
    0x1D: ("response_delay_time", "number"), 0x1E: ("retry", "number"), 0x1F: ("remote_control", "flags"),
    0x20: ("first_storage_number", "number"), 0x21: ("last_storage_number", "number"),
    0x22: ("storage_block_size", "number"), 0x2A: ("operator_specific_data", "id"),
    0x30: ("tariff_start", "datetime"), 0x3A: ("dimensionless", "number"),
    0x60: ("reset_counter", "number"), 0x61: ("cumulation_counter", "number"),
    0x62: ("control_signal", "flags"), 0x63: ("day_of_week", "number"), 0x64: ("week_number", "number"),
    0x65: ("time_point_of_day_change", "datetime"), 0x66: ("parameter_activation_state", "flags"),
    0x67: ("special_supplier_information", "id"), 0x70: ("battery_change", "datetime"),
    0x71: ("rssi", "number"), 0x72: ("daylight_saving", "id"), 0x73: ("listening_window", "id"),
    0x75: ("meter_stopped_count", "number"), 0x76: ("manufacturer_protocol_container", "raw"),
}  # fmt: skip


IDENTIFIER_QUANTITIES: frozenset[str] = frozenset(
    {"fabrication_no", "enhanced_identification", "bus_address"}
    | {quantity for quantity, kind in _FD_NAMED.values() if kind == "id"}
)
"""Quantities that name or address a meter (serials, versions, codes): numbers, but never readings."""


def _fd(code: int) -> Entry:
    """Table FD (VIF 0xFD): identification, service and electrical quantities."""
    if code <= 0x07:
        return ("credit" if code < 4 else "debit"), "currency", (code & 3) - 3, 1, "number"
    if code in _FD_NAMED:
        quantity, kind = _FD_NAMED[code]
        unit = {"baud_rate": "Bd", "rssi": "dBm"}.get(quantity)
        return quantity, unit, 0, 1, kind
    nn = code & 0x03
    ranged: tuple[tuple[int, str], ...] = (
        (0x24, "storage_interval"), (0x2C, "duration_since_readout"), (0x34, "tariff_period"),
    )  # fmt: skip
    for low, quantity in ranged:
        if low <= code <= low + 3:
            return quantity, "s", 0, _DURATION[nn][0], "number"
    if 0x31 <= code <= 0x33:
        return "tariff_duration", "s", 0, _DURATION[nn][0], "number"
    if code in (0x28, 0x29, 0x38, 0x39):
        quantity = "storage_interval" if code < 0x30 else "tariff_period"
        return quantity, "month" if code & 1 == 0 else "year", 0, 1, "number"
    if 0x40 <= code <= 0x4F:
        return "voltage", "V", (code & 0x0F) - 9, 1, "number"
    if 0x50 <= code <= 0x5F:
        return "current", "A", (code & 0x0F) - 12, 1, "number"
    if 0x68 <= code <= 0x6F:
        quantity = "duration_since_cumulation" if code < 0x6C else "battery_operating_time"
        factor, unit = _LONG_DURATION[nn]
        return quantity, unit, 0, factor, "number"
    if code == 0x74:
        return "remaining_battery_life", "s", 0, 86400, "number"
    return "reserved", None, 0, 1, "number"


def _fb(code: int) -> Entry:
    """Table FB (VIF 0xFB): the large and non-metric ranges of the primary quantities."""
    n1, n2, n3 = code & 1, code & 3, code & 3
    pairs: dict[int, tuple[str, str, int]] = {
        0x00: ("energy", "Wh", n1 + 5), 0x02: ("reactive_energy", "varh", n1 + 2),
        0x08: ("energy", "J", n1 + 8), 0x10: ("volume", "m3", n1 + 2), 0x18: ("mass", "kg", n1 + 5),
        0x1A: ("relative_humidity", "%", n1 - 1), 0x28: ("power", "W", n1 + 5),
        0x30: ("power", "J/h", n1 + 8),
    }  # fmt: skip
    if code & ~1 in pairs:
        quantity, unit, exponent = pairs[code & ~1]
        return quantity, unit, exponent, 1, "number"
    quads: dict[int, tuple[str, str, int]] = {
        0x14: ("reactive_power", "var", n2), 0x2C: ("frequency", "Hz", n2 - 3),
        0x34: ("apparent_power", "VA", n2), 0x58: ("flow_temperature", "°F", n3 - 3),
        0x5C: ("return_temperature", "°F", n3 - 3), 0x60: ("temperature_difference", "°F", n3 - 3),
        0x64: ("external_temperature", "°F", n3 - 3), 0x70: ("temperature_limit", "°F", n3 - 3),
        0x74: ("temperature_limit", "°C", n3 - 3),
    }  # fmt: skip
    if code & ~3 in quads:
        quantity, unit, exponent = quads[code & ~3]
        return quantity, unit, exponent, 1, "number"
    if 0x78 <= code <= 0x7F:
        return "cumulative_max_power", "W", (code & 7) - 3, 1, "number"
    if code in (0x20, 0x21):
        return "volume", "ft3", -(code & 1), 1, "number"
    if code in (0x2A, 0x2B):
        return ("phase_u_u" if code == 0x2A else "phase_u_i"), "°", -1, 1, "number"
    return "reserved", None, 0, 1, "number"


PROFILE_VIFE = {0x13: "inverse_compact_profile", 0x1E: "compact_profile_with_registers",
                0x1F: "compact_profile"}  # fmt: skip
"""EN 13757-3:2018 combinable VIFE that announce a compact profile when the data field is variable-length
(DIF 0xD); on any other field they keep their older meaning, a record error code."""
_PER = {0x20: "/s", 0x21: "/min", 0x22: "/h", 0x23: "/d", 0x24: "/week", 0x25: "/month", 0x26: "/year",
        0x2C: "/l", 0x2D: "/m3", 0x2E: "/kg", 0x2F: "/K", 0x30: "/kWh", 0x31: "/GJ", 0x32: "/kW",
        0x33: "/(K*l)", 0x34: "/V", 0x35: "/A", 0x36: "*s", 0x37: "*s/V", 0x38: "*s/A"}  # fmt: skip
_ORTHOGONAL = {
    0x27: "per_revolution", 0x28: "per_input_pulse_0", 0x29: "per_input_pulse_1",
    0x2A: "per_output_pulse_0", 0x2B: "per_output_pulse_1", 0x39: "start_of", 0x3A: "uncorrected",
    0x3B: "accumulation_if_positive", 0x3C: "accumulation_abs_if_negative", 0x3E: "at_base_conditions",
    0x3F: "obis_declaration", 0x40: "lower_limit", 0x48: "upper_limit", 0x41: "lower_limit_exceeds",
    0x49: "upper_limit_exceeds", 0x7E: "future_value", 0x7F: "manufacturer_specific_vife",
}  # fmt: skip


def _orthogonal(code: int, entry: Entry, notes: list[str]) -> Entry:
    """Apply one combinable VIFE: adjust unit or scale, or just note it."""
    quantity, unit, exponent, factor, kind = entry
    if code <= 0x1F:
        notes.append(f"record_error_{code}")
    elif code in _PER:
        unit = (unit or "") + _PER[code]
        notes.append("per" + _PER[code])
    elif code in _ORTHOGONAL:
        notes.append(_ORTHOGONAL[code])
    elif 0x70 <= code <= 0x77:
        exponent += (code & 0x07) - 6
    elif code == 0x7D:
        exponent += 3
    elif 0x78 <= code <= 0x7B:
        notes.append(f"additive_correction_1e{(code & 3) - 3}")
    else:
        notes.append(f"vife_{code:#04x}")
    return quantity, unit, exponent, factor, kind


def parse_vib(data: bytes, pos: int) -> tuple[ValueInformation, int]:
    """The VIB at ``pos`` and the offset after it.

    A plain-text VIF (0x7C/0xFC) is followed by a length byte and that many ASCII characters, last
    character first, before any VIFE: the order real meters send and libmbus reads.
    """
    if pos >= len(data):
        raise DecodeError("telegram ends before the VIF", pos)
    vif = data[pos]
    pos += 1
    code = vif & 0x7F
    vifes: list[int] = []
    text: str | None = None

    def next_vife() -> int:
        nonlocal pos
        if pos >= len(data):
            raise DecodeError("telegram ends inside the VIFE chain", pos)
        if len(vifes) == MAX_VIFE:
            raise DecodeError(f"more than {MAX_VIFE} VIFE", pos)
        vifes.append(data[pos])
        pos += 1
        return vifes[-1]

    more = bool(vif & 0x80)
    if code == 0x7C:
        if pos >= len(data):
            raise DecodeError("telegram ends before the plain-text unit length", pos)
        length = data[pos]
        if pos + 1 + length > len(data):
            raise DecodeError(f"plain-text unit of {length} bytes runs past the telegram", pos)
        text = data[pos + 1 : pos + 1 + length][::-1].decode("latin-1")
        pos += 1 + length
        entry: Entry = ("plain_text", text, 0, 1, "number")
    elif code in (0x7B, 0x7D) and more:
        ext = next_vife()
        more = bool(ext & 0x80)
        entry = _fb(ext & 0x7F) if code == 0x7B else _fd(ext & 0x7F)
    elif code in (0x7B, 0x7D):
        entry = ("reserved", None, 0, 1, "number")
    else:
        entry = _primary(code)
    notes: list[str] = []
    raw_tail = code == 0x7F
    while more:
        vife = next_vife()
        more = bool(vife & 0x80)
        if raw_tail:
            continue  # after 0x7F everything is the manufacturer's: keep the bytes, interpret none
        if vife & 0x7F == 0x7F:
            raw_tail = True
        entry = _orthogonal(vife & 0x7F, entry, notes)
    quantity, unit, exponent, factor, kind = entry
    return ValueInformation(
        vif, tuple(vifes), quantity, unit, exponent, factor, kind, tuple(notes), text
    ), pos
