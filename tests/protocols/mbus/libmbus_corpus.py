"""Reading the libmbus corpus (``mbus-libmbus/``) in place, and comparing its normalised decode to ours.

libmbus spells some things differently; the comparison maps its spellings onto ours rather than making
our decoder imitate them:

* units: ``m^3`` -> ``m3`` (also ``m^3/h``); ``Units for H.C.A.`` -> ``HCA``; ``-`` and the empty unit
  (dates, identifiers, dimensionless) -> ``None``; the fixed data structure's ``l`` and ``kWh`` -> ``m3``
  and ``Wh`` with the value scaled (we normalise, libmbus prints the fixed table's unit); ``reserved but
  historic`` -> counter 1's unit (that is what the code means), and libmbus's ``Reserved`` -> ``None``.
* quantity: lower case with ``_`` for punctuation (``Volume flow`` -> ``volume_flow``), plus the aliases
  in :data:`QUANTITY_ALIASES`; for a plain-text VIF libmbus puts the meter's text in Quantity and ``-``
  in Unit, where we put it in ``unit`` (quantity ``plain_text``).
* function: ``Instantaneous value`` -> ``instantaneous`` ...; the fixed structure's ``Actual value`` ->
  ``instantaneous``; manufacturer-specific data (``Manufacturer specific`` / ``More records follow``)
  -> our function of the same name, value as upper-case hex.
* values: numbers compare with a relative tolerance of 1e-9; libmbus prints dates with a ``Z`` it cannot
  know (M-Bus time is local), we print none; binary LVAR numbers libmbus prints as hex most significant
  byte first, we return the integer.
* a time point with the invalid bit: libmbus prints ``1900-01-00T00:00:00Z``, we return ``None``.
* a VIF 0x7B without its table byte: libmbus prints an empty record, we a ``reserved`` quantity.
* medium: lower case with ``_``; ``Warm water (30-90°C)`` -> ``warm_water``.
"""

from __future__ import annotations

import math
import re
import xml.etree.ElementTree as ET
from pathlib import Path

from openami.protocols.mbus import MbusTelegram, decode_frame

QUANTITY_ALIASES = {
    "Time point (date)": "date",
    "Time point (date & time)": "date_time",
    "H.C.A.": "hca",
    "Parameter set identification": "parameter_set_id",
    "": "manufacturer_specific",
}
MEDIUM_ALIASES = {"Warm water (30-90°C)": "warm_water"}
FUNCTIONS = {
    "Instantaneous value": "instantaneous",
    "Maximum value": "maximum",
    "Minimum value": "minimum",
    "Value during error state": "value_during_error",
    "Manufacturer specific": "manufacturer_specific",
    "More records follow": "more_records_follow",
    "Actual value": "instantaneous",
}
UNITS: dict[str, tuple[str | None, float]] = {
    "m^3": ("m3", 1),
    "m^3/h": ("m3/h", 1),
    "m^3/min": ("m3/h", 60),
    "m^3/s": ("m3/h", 3600),
    "Units for H.C.A.": ("HCA", 1),
    "-": (None, 1),
    "": (None, 1),
    "Reserved": (None, 1),
    "l": ("m3", 0.001),
    "kWh": ("Wh", 1000),
}


def corpus_root(corpora: Path) -> Path:
    return corpora / "mbus-libmbus"


def read_hex(path: Path) -> bytes:
    return bytes.fromhex(path.read_text())


def read_xml(path: Path) -> ET.Element:
    """The files say ISO-8859-1 but are UTF-8 (``°C`` is two bytes): parse the decoded text."""
    text = path.read_bytes().decode("utf-8")
    return ET.fromstring(re.sub(r"^<\?xml[^>]*\?>", "", text.lstrip()))


def _snake(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")


def _value_matches(expected: str, got: object, factor: float) -> bool:
    try:
        number = float(expected)
    except ValueError:
        number = None
    if number is not None and isinstance(got, int | float) and not isinstance(got, bool):
        return math.isclose(number * factor, got, rel_tol=1e-6, abs_tol=1e-6 * factor)
    if isinstance(got, bytes):
        return got.hex(" ").upper() == expected
    if isinstance(got, int) and re.fullmatch(r"([0-9A-F]{2} )*[0-9A-F]{2}", expected):
        return int(expected.replace(" ", ""), 16) == got  # binary LVAR, printed MSB first
    if isinstance(got, str):
        return got == expected.removesuffix("Z")
    if got is None:
        return expected == "1900-01-00T00:00:00Z"  # libmbus's rendering of a time flagged invalid
    return False


def compare(hex_path: Path) -> list[str]:
    """Every difference between our decode of ``hex_path`` and libmbus's ``.norm.xml`` (empty: a match)."""
    telegram = decode_frame(read_hex(hex_path))
    root = read_xml(hex_path.with_suffix(".norm.xml"))
    return _compare_header(telegram, root) + _compare_records(telegram, root)


def _compare_header(telegram: MbusTelegram, root: ET.Element) -> list[str]:
    info = root.find("SlaveInformation")
    assert info is not None
    h = telegram.header
    diffs = []
    checks = {
        "Id": lambda e, g: g is not None and g.lstrip("0") == e.lstrip("0"),
        "Manufacturer": lambda e, g: g == e,
        "Version": lambda e, g: g == int(e),
        "Medium": lambda e, g: g == MEDIUM_ALIASES.get(e, _snake(e)),
        "AccessNumber": lambda e, g: g == int(e),
        "Status": lambda e, g: g == int(e, 16),
    }
    attrs = {"Id": "id", "Manufacturer": "manufacturer", "Version": "version", "Medium": "medium",
             "AccessNumber": "access_number", "Status": "status"}  # fmt: skip
    for tag, check in checks.items():
        expected = info.findtext(tag)
        if expected is None:
            continue
        got = getattr(h, attrs[tag], None)
        if not check(expected, got):
            diffs.append(f"header {tag}: libmbus {expected!r}, ours {got!r}")
    return diffs


def _compare_records(telegram: MbusTelegram, root: ET.Element) -> list[str]:
    expected = root.findall("DataRecord")
    diffs = []
    if len(expected) != len(telegram.records):
        diffs.append(f"{len(expected)} records in libmbus, {len(telegram.records)} ours")
    first_unit: tuple[str | None, float] = (None, 1)
    for i, (e, r) in enumerate(zip(expected, telegram.records, strict=False)):
        unit_text = e.findtext("Unit") or ""
        quantity = e.findtext("Quantity") or ""
        if unit_text == "reserved but historic":
            unit, factor = first_unit
        else:
            unit, factor = UNITS.get(unit_text, (unit_text, 1))
        if i == 0:
            first_unit = (unit, factor)
        plain = r.quantity == "plain_text"
        want = {
            "function": FUNCTIONS.get(e.findtext("Function") or "", e.findtext("Function")),
            "storage": int(e.findtext("StorageNumber") or 0),
            "tariff": int(e.findtext("Tariff") or 0),
            "subunit": int(e.findtext("Device") or 0),
            "unit": quantity if plain else unit,
            "quantity": "plain_text" if plain else QUANTITY_ALIASES.get(quantity, _snake(quantity)),
        }
        if e.findtext("Function") is None:
            # libmbus prints an empty record for a VIF it cannot place (0x7B without its table byte)
            if r.quantity != "reserved":
                diffs.append(f"record {i}: libmbus found no VIF, ours {r.quantity!r}")
            continue
        if e.findtext("Function") == "Actual value":
            # libmbus names no quantity and no storage for the fixed structure
            want["quantity"], want["storage"] = r.quantity, r.storage
        for name, value in want.items():
            if getattr(r, name) != value:
                diffs.append(f"record {i} {name}: libmbus {value!r}, ours {getattr(r, name)!r}")
        if not _value_matches(e.findtext("Value") or "", r.value, factor):
            diffs.append(f"record {i} value: libmbus {e.findtext('Value')!r}, ours {r.value!r}")
    return diffs
