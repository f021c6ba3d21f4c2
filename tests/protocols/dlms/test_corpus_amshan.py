"""Every amshan corpus case (Aidon, Kaifa, Kamstrup HAN pushes) decodes to the values upstream asserted.

Each case gives the LLC PDU (``e6e700`` + DataNotification APDU) and the bare notification body; the
expected items are (index in upstream's parsed list, OBIS, A-XDR type, value). Aidon values are
expected already scaled (upstream applies the scaler_unit the meter sends); Kaifa and Kamstrup send
none, so their values are the raw register values.
"""

from __future__ import annotations

import json
import math
import re
from datetime import UTC, datetime
from functools import cache
from typing import Any

import pytest

from openami.protocols.dlms.apdu import DataNotification, decode_apdu
from openami.protocols.dlms.axdr import decode_data_all
from openami.protocols.dlms.notification import Notification, NotifiedValue, interpret
from openami.protocols.dlms.stream import decode_stream
from tests.conftest import corpora_dir

CASES_JSON = "dlms/amshan/cases.json"


@cache
def _cases() -> list[dict[str, Any]]:
    cases: list[dict[str, Any]] = json.loads((corpora_dir() / CASES_JSON).read_text())["cases"]
    return cases


def _case_ids() -> list[str]:
    """Case names for parametrisation; a placeholder when the corpus is absent (the test then skips/fails)."""
    try:
        return [
            c["source"].split("::")[-1] + "@" + c["source"].split("/")[-1].split(".")[0] for c in _cases()
        ]
    except BaseException:  # corpora_dir() skips or fails outside a test: let the test report it
        return ["corpus-missing"]


def _case(case_id: str) -> dict[str, Any]:
    cases = _cases()  # skips (fails under CI) when the corpus is absent
    return cases[_case_ids().index(case_id)]


def _llc_input(case: dict[str, Any]) -> bytes:
    return next(bytes.fromhex(v) for v in case["inputs"].values() if v.lower().startswith("e6e700"))


def _body_input(case: dict[str, Any]) -> bytes:
    return next(bytes.fromhex(v) for v in case["inputs"].values() if not v.lower().startswith("e6e700"))


def _datetime_literal(text: str) -> datetime:
    """``datetime(2020, 1, 21, 16, 0, 0, tzinfo=timezone.utc)`` as written in the corpus."""
    fields = [int(n) for n in re.findall(r"-?\d+", text.split("tzinfo")[0])]
    year, month, day, hour, minute, second = fields[:6]
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC if "timezone.utc" in text else None)


def _matches(expected: object, got: NotifiedValue) -> bool:
    if isinstance(expected, str) and isinstance(got.value, int | float):
        return math.isclose(float(expected), got.value, rel_tol=1e-12)  # a Decimal, as a string
    if isinstance(expected, int | float) and not isinstance(expected, bool):
        return isinstance(got.value, int | float) and math.isclose(expected, got.value, rel_tol=1e-12)
    return expected == got.value


def _check_items(case: dict[str, Any], notification: Notification) -> None:
    positions = {v.obis.dotted: i for i, v in enumerate(notification.values)}
    last = -1
    for item in sorted(case["expected"]["items"], key=lambda i: i["index"]):
        if item["obis"] is None:  # Kamstrup's list id has no OBIS code: not a meter value
            continue
        assert item["obis"] in positions, f"{item['obis']} missing"
        got = notification.values[positions[item["obis"]]]
        assert got.raw.type.name.lower() == item["type"], item  # type: ignore[attr-defined]
        assert _matches(item["value"], got), (item, got)
        assert positions[item["obis"]] > last, "values out of the meter's order"
        last = positions[item["obis"]]


@pytest.mark.parametrize("case_id", _case_ids())
def test_corpus_case_decodes_through_stream(case_id: str) -> None:
    case = _case(case_id)
    result = decode_stream(_llc_input(case))
    assert result.errors == []
    assert len(result.notifications) == 1
    notification = result.notifications[0]
    _check_items(case, notification)
    for literal in case["expected"].get("datetimes", []):
        assert notification.timestamp == _datetime_literal(literal)


@pytest.mark.parametrize("case_id", _case_ids())
def test_corpus_case_apdu_header(case_id: str) -> None:
    case = _case(case_id)
    apdu = decode_apdu(_llc_input(case)[3:])
    assert isinstance(apdu, DataNotification)
    header_time = case["expected"]["apdu"]["datetime"]
    if header_time == 0:
        assert apdu.datetime is None
    else:
        assert apdu.datetime is not None
        assert apdu.datetime.to_datetime() is not None
        assert apdu.datetime.to_datetime().replace(tzinfo=None) == _datetime_literal(header_time)  # type: ignore[union-attr]
    assert apdu.body == decode_data_all(_body_input(case))


@pytest.mark.parametrize("case_id", _case_ids())
def test_corpus_case_interprets_bare_body(case_id: str) -> None:
    """The notification body alone (no header) interprets to the same values."""
    case = _case(case_id)
    body = decode_data_all(_body_input(case))
    notification = interpret(DataNotification(0, False, False, None, body))
    _check_items(case, notification)


def test_corpus_aidon_meter_id_and_units() -> None:
    case = next(c for c in _cases() if c["source"].endswith("test_aidon.py::test_parse_no_list_3"))
    notification = decode_stream(_llc_input(case)).notifications[0]
    assert notification.meter_id == "7359992892587665"
    by_obis = {v.obis.dotted: v for v in notification.values}
    assert (by_obis["1.0.32.7.0.255"].value, by_obis["1.0.32.7.0.255"].unit) == (227.6, "V")
    assert (by_obis["1.0.1.8.0.255"].value, by_obis["1.0.1.8.0.255"].unit) == (22721380, "Wh")


def test_corpus_kamstrup_meter_id_from_meter_number() -> None:
    case = next(c for c in _cases() if c["source"].endswith("test_parse_se_list_three_phase_real_sample"))
    assert decode_stream(_llc_input(case)).notifications[0].meter_id == "5705705705705707"
