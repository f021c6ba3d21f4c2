"""Every DSMR telegram in the shared corpus parses with its CRC checked and yields sensible values.

The corpus (``dsmr/`` in the shared corpora, MIT, read in place) holds real and reference telegrams
from v2.2 to v5, Fluvius e-MUCS, Irish Iskra, Hungarian E.ON and Sagemcom meters. The generic test
runs over whatever files are there (part of the corpus is held back and added later); the explicit
expectations below were read from the files by hand and are checked in base units.
"""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from pathlib import Path

import pytest

from openami.bus.messages import ReadingBatch
from openami.protocols.dsmr import DsmrStreamParser, parse_telegram, readings, to_json
from tests.conftest import corpora_dir

KNOWN_UNITS = {"Wh", "W", "varh", "var", "VAh", "VA", "V", "A", "Hz", "s", "m3", "J", None}


def _files() -> list[Path]:
    folder = corpora_dir() / "dsmr"
    return sorted(p for p in folder.iterdir() if p.is_file() and p.name not in {"LICENSE", "SOURCES.md"})


def _file_ids() -> list[str]:
    try:
        return [p.name for p in _files()]
    except BaseException:  # corpora_dir() skips or fails outside a test: let the test report it
        return ["corpus-missing"]


def _data(name: str) -> bytes:
    return (corpora_dir() / "dsmr" / name).read_bytes()


@pytest.mark.parametrize("name", _file_ids())
def test_every_corpus_telegram_parses_with_crc_checked(name: str) -> None:
    telegram = parse_telegram(_data(name))  # check_crc=True: a mismatch raises
    assert telegram.crc_ok in (True, None)
    if telegram.crc is None:  # only pre-DSMR-4 telegrams go without CRC
        assert telegram.version is None
    assert telegram.objects
    for value in telegram.values:
        assert value.unit in KNOWN_UNITS, value
        if isinstance(value.value, float):
            assert math.isfinite(value.value)
        if value.timestamp is not None:
            assert value.timestamp.utcoffset() is not None
    json.dumps(to_json(telegram))  # the JSON view is serialisable as it is
    energy = [v for v in telegram.values if v.unit == "Wh"]
    assert energy or any(v.unit in ("m3", "J") for v in telegram.values)
    stamp = datetime(2024, 1, 1, tzinfo=UTC)
    batch = ReadingBatch.from_readings(
        readings(telegram, received_at=stamp), tenant="t", source="dsmr", received_at=stamp
    )
    assert batch.reading_count > 0


@pytest.mark.parametrize("name", _file_ids())
def test_every_corpus_telegram_comes_through_the_stream_parser_byte_by_byte(name: str) -> None:
    data = _data(name)
    parser = DsmrStreamParser()
    telegrams = [t for i in range(len(data)) for t in parser.feed(data[i : i + 1])]
    telegrams += parser.feed(b"\r\n/")  # a following header: the last telegram's CRC line has ended
    assert telegrams  # a file may hold more than one telegram; the first is what parse_telegram reads
    assert telegrams[0].values == parse_telegram(data).values
    assert not [e for e in parser.errors if not str(e).endswith("bytes outside a telegram")]


# (file, OBIS, expected value in base units, unit, expected timestamp or None, channel)
EXPECTED = [
    ("TELEGRAM_V2_2.txt", "1-0:1.8.1", 1001, "Wh", None, None),
    ("TELEGRAM_V2_2.txt", "1-0:1.7.0", 1010, "W", None, None),
    ("TELEGRAM_V2_2.txt", "0-0:17.0.0", 999000, "W", None, None),
    ("TELEGRAM_V2_2.txt", "0-1:24.3.0", 1.001, "m3", "2016-11-07T19:00:00+01:00", 1),
    ("TELEGRAM_V3.txt", "1-0:1.8.2", 12345678, "Wh", None, None),
    ("TELEGRAM_V3.txt", "0-0:17.0.0", 16, "A", None, None),
    ("TELEGRAM_V3.txt", "0-0:96.13.1", "012345678", None, None, None),
    ("TELEGRAM_V3.txt", "0-1:24.3.0", 1.001, "m3", "2009-02-12T16:00:00+01:00", 1),
    ("TELEGRAM_V4_2.txt", "1-0:1.8.1", 1581123, "Wh", None, None),
    ("TELEGRAM_V4_2.txt", "1-0:41.7.0", 1247, "W", None, None),
    ("TELEGRAM_V4_2.txt", "1-0:51.7.0", 6, "A", None, None),
    ("TELEGRAM_V4_2.txt", "0-0:96.7.21", 15, None, None, None),
    ("TELEGRAM_V4_2.txt", "0-1:24.2.1", 981.443, "m3", "2016-11-29T20:00:00+01:00", 1),
    ("TELEGRAM_V5.txt", "1-0:1.8.1", 4426, "Wh", None, None),
    ("TELEGRAM_V5.txt", "1-0:2.8.1", 2444, "Wh", None, None),
    ("TELEGRAM_V5.txt", "1-0:32.7.0", 230, "V", None, None),
    ("TELEGRAM_V5.txt", "1-0:71.7.0", 0.86, "A", None, None),
    ("TELEGRAM_V5.txt", "0-1:24.2.1", 0.107, "m3", "2017-01-02T16:10:05+01:00", 1),
    ("TELEGRAM_V5.txt", "0-0:96.1.1", "K8EG004046395507", None, None, None),
    ("TELEGRAM_V5_TWO_MBUS.txt", "1-0:1.8.1", 2130115, "Wh", None, None),
    ("TELEGRAM_V5_TWO_MBUS.txt", "1-0:72.32.0", 192, None, None, None),
    ("TELEGRAM_V5_TWO_MBUS.txt", "0-2:24.2.1", 246.138, "m3", "2020-04-26T22:30:01+02:00", 2),
    ("TELEGRAM_V5_EON_HU.txt", "1-0:2.8.0", 627177, "Wh", None, None),
    ("TELEGRAM_V5_EON_HU.txt", "1-0:4.8.0", 303131, "varh", None, None),
    ("TELEGRAM_V5_EON_HU.txt", "1-0:13.7.0", 4.556, None, None, None),
    ("TELEGRAM_V5_EON_HU.txt", "1-0:14.7.0", 50, "Hz", None, None),
    ("TELEGRAM_V5_EON_HU.txt", "1-0:7.7.0", 504, "var", None, None),
    ("TELEGRAM_V5_EON_HU.txt", "0-0:42.0.0", "SAG3082200002160", None, None, None),
    ("TELEGRAM_FLUVIUS_V171.txt", "1-0:1.8.2", 15758, "Wh", None, None),
    ("TELEGRAM_FLUVIUS_V171.txt", "1-0:1.4.0", 2351, "W", None, None),
    ("TELEGRAM_FLUVIUS_V171.txt", "1-0:1.6.0", 2589, "W", "2020-05-09T13:45:58+02:00", None),
    ("TELEGRAM_FLUVIUS_V171.txt", "0-1:24.2.3", 112.384, "m3", "2020-05-12T13:45:58+02:00", 1),
    ("TELEGRAM_FLUVIUS_V171.txt", "0-2:24.2.1", 872.234, "m3", "2020-05-12T13:45:58+02:00", 2),
    ("TELEGRAM_FLUVIUS_V171_ALT.txt", "1-0:1.6.0", 3064, "W", "2023-11-02T11:45:00+01:00", None),
    ("TELEGRAM_FLUVIUS_V171_ALT.txt", "1-0:31.7.0", 0.27, "A", None, None),
    ("TELEGRAM_SAGEMCOM_T210_D_R.txt", "1-0:1.8.0", 6545766, "Wh", None, None),
    ("TELEGRAM_SAGEMCOM_T210_D_R.txt", "1-0:4.7.0", 166, "var", None, None),
    ("TELEGRAM_ISKRA_IE.txt", "1-0:2.8.2", 10282, "Wh", None, None),
    ("TELEGRAM_ISKRA_IE.txt", "1-0:62.7.0", 627, "W", None, None),
    ("TELEGRAM_UNPADDED_CRC.txt", "0-1:24.2.1", 240_860_000_000, "J", "2026-02-15T20:05:23+01:00", 1),
    ("TELEGRAM_ESY5Q3DA1004_V304.txt", "1-0:1.8.0", 32549506.1662, "Wh", None, None),
    ("TELEGRAM_ESY5Q3DA1004_V304.txt", "1-0:1.7.0", 1688.21, "W", None, None),
    ("TELEGRAM_ESY5Q3DB1024_V304.txt", "1-0:2.8.0", 19949322.1493, "Wh", None, None),
    ("TELEGRAM_ESY5Q3DB1024_V304.txt", "1-0:0.0.0", "0272031312565", None, None, None),
]


@pytest.mark.parametrize(("name", "code", "value", "unit", "stamp", "channel"), EXPECTED)
def test_corpus_values_normalised(
    name: str, code: str, value: object, unit: str | None, stamp: str | None, channel: int | None
) -> None:
    got = parse_telegram(_data(name)).value(code)
    assert got is not None, code
    if isinstance(value, float):
        assert isinstance(got.value, float)
        assert math.isclose(got.value, value, rel_tol=1e-12)
    else:
        assert got.value == value
        assert type(got.value) is type(value)
    assert got.unit == unit
    assert (got.timestamp.isoformat() if got.timestamp else None) == stamp
    assert got.channel == channel


def test_corpus_known_files_have_no_unparsed_lines() -> None:
    for name in {e[0] for e in EXPECTED}:
        assert parse_telegram(_data(name)).unparsed == (), name


def test_corpus_headers_versions_and_crcs() -> None:
    v5 = parse_telegram(_data("TELEGRAM_V5.txt"))
    assert (v5.manufacturer, v5.identification, v5.version, v5.crc) == ("ISk", "MT382-1000", "5.0", 0x6EEE)
    assert parse_telegram(_data("TELEGRAM_V4_2.txt")).version == "4.2"
    fluvius = parse_telegram(_data("TELEGRAM_FLUVIUS_V171.txt"))
    assert fluvius.version == "e-MUCS 50217"
    assert fluvius.equipment_id == "1SAG3101021605"
    assert fluvius.timestamp == datetime.fromisoformat("2020-05-12T13:54:09+02:00")
    unpadded = parse_telegram(_data("TELEGRAM_UNPADDED_CRC.txt"))  # "!B9F": a meter that drops the 0
    assert (unpadded.crc, unpadded.crc_ok) == (0x0B9F, True)
    v22 = parse_telegram(_data("TELEGRAM_V2_2.txt"))
    assert (v22.crc, v22.crc_ok, v22.version) == (None, None, None)


def test_corpus_power_failure_log() -> None:
    log = parse_telegram(_data("TELEGRAM_V4_2.txt")).power_failures
    assert [p.duration_s for p in log] == [237126, 2147583646, 2317482647]
    assert log[0].end == datetime.fromisoformat("2000-01-04T18:03:20+01:00")
    assert parse_telegram(_data("TELEGRAM_V5.txt")).power_failures == ()  # (0)(0-0:96.7.19): empty log
    two = parse_telegram(_data("TELEGRAM_V5_TWO_MBUS.txt")).power_failures
    assert [(p.end.isoformat() if p.end else None, p.duration_s) for p in two] == [
        ("2019-03-26T09:50:15+01:00", 2014)
    ]


def test_corpus_mbus_devices() -> None:
    fluvius = parse_telegram(_data("TELEGRAM_FLUVIUS_V171.txt")).mbus
    assert [(d.channel, d.device_type, d.equipment_id) for d in fluvius] == [
        (1, 3, "7FLO2119033733"),
        (2, 7, "8SAG1234567890"),
    ]
    two = parse_telegram(_data("TELEGRAM_V5_TWO_MBUS.txt"))
    assert [(d.channel, d.equipment_id) for d in two.mbus] == [(1, None), (2, "G0039001936990619")]
    gas = [r for r in readings(two) if r.unit == "m3"]
    assert [(r.meter, r.channel, r.value) for r in gas] == [("G0039001936990619", "0-2:24.2.1", 246.138)]


def test_corpus_fluvius_monthly_peaks_keep_peak_times_and_skip_the_invalid_one() -> None:
    obj = parse_telegram(_data("TELEGRAM_FLUVIUS_V171_ALT.txt")).get("0-0:98.1.0")
    assert obj is not None
    assert [v.value for v in obj.values] == [0, 1862, 4229, 4927]
    assert obj.values[0].timestamp is None  # the meter sent 632525252525W
    assert obj.values[3].timestamp == datetime.fromisoformat("2023-10-16T13:00:00+02:00")


def test_corpus_readings_skip_settings_and_states() -> None:
    got = readings(parse_telegram(_data("TELEGRAM_FLUVIUS_V171.txt")))
    channels = {r.channel for r in got}
    assert {"1-0:1.8.1", "1-0:1.6.0", "1-0:32.7.0", "0-1:24.2.3"} <= channels
    assert not channels & {
        "0-0:17.0.0",
        "1-0:31.4.0",
        "0-0:96.14.0",
        "0-0:96.3.10",
        "0-1:24.1.0",
        "0-0:98.1.0",
    }
    assert all(r.kind == "register" for r in got)
