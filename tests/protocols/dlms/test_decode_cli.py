"""`openami decode dlms`: a capture file or --hex in, a JSON list of notifications out; garbage exits 2."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from openami.cli import app
from tests.conftest import corpora_dir

runner = CliRunner()

# A bare Aidon DataNotification with one {OBIS, value, scaler_unit} entry (1-0:1.7.0 = 280 W).
AIDON_ONE = "e6e7000f40000000000101020309060100010700ff060000011802020f00161b"


def test_decode_cli_corpus_file_json_shape() -> None:
    capture = corpora_dir() / "dlms" / "scs" / "lg_e450__UNENCRYPTED_VALID_DATA_CFG2026.hex"
    result = runner.invoke(app, ["decode", "dlms", str(capture), "--json"])
    assert result.exit_code == 0, result.stderr
    notifications = json.loads(result.stdout)
    assert isinstance(notifications, list) and len(notifications) == 1
    n = notifications[0]
    assert set(n) == {"meter_id", "timestamp", "values"}
    assert n["meter_id"] == "LGZ1030653520967"
    assert n["timestamp"] == "2026-05-04T11:39:21"
    for value in n["values"]:
        assert set(value) == {"obis", "value", "unit", "raw"}
    energy = next(v for v in n["values"] if v["obis"] == "1.1.1.8.0.255")
    assert energy == {"obis": "1.1.1.8.0.255", "value": 482939, "unit": "Wh", "raw": 482939}
    logical_name = next(v for v in n["values"] if v["obis"] == "0.0.42.0.0.255")
    assert logical_name["raw"] == b"LGZ1030653520967".hex()  # bytes rendered as hex


def test_decode_cli_ciphered_file_with_key() -> None:
    capture = corpora_dir() / "dlms" / "scs" / "lg_e450__ENCRYPTED_DATA_NO_PUSHLIST.hex"
    result = runner.invoke(
        app, ["decode", "dlms", str(capture), "--key", "F08660A6C19D2048556BF623AB0257E6", "--json"]
    )
    assert result.exit_code == 0, result.stderr
    assert len(json.loads(result.stdout)[0]["values"]) == 16


def test_decode_cli_hex_option() -> None:
    result = runner.invoke(app, ["decode", "dlms", "--hex", AIDON_ONE, "--json"])
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout) == [
        {
            "meter_id": None,
            "timestamp": None,
            "values": [{"obis": "1.0.1.7.0.255", "value": 280, "unit": "W", "raw": 280}],
        }
    ]


def test_decode_cli_binary_file(tmp_path: Path) -> None:
    capture = tmp_path / "capture.bin"
    capture.write_bytes(bytes.fromhex(AIDON_ONE))
    result = runner.invoke(app, ["decode", "dlms", str(capture)])
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)[0]["values"][0]["value"] == 280


def test_decode_cli_garbage_exits_2_with_one_line() -> None:
    for args in (["--hex", "deadbeef"], ["--hex", "7e a0 07 00 11 22 33"], ["--hex", "abc"], ["--hex", "zz"]):
        result = runner.invoke(app, ["decode", "dlms", *args, "--json"])
        assert result.exit_code == 2, args
        assert result.stdout == ""
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
        assert result.stderr.startswith("error:")


def test_decode_cli_needs_exactly_one_input(tmp_path: Path) -> None:
    assert runner.invoke(app, ["decode", "dlms"]).exit_code == 2
    capture = tmp_path / "c.hex"
    capture.write_text(AIDON_ONE)
    assert runner.invoke(app, ["decode", "dlms", str(capture), "--hex", AIDON_ONE]).exit_code == 2
    missing = runner.invoke(app, ["decode", "dlms", str(tmp_path / "nope.hex")])
    assert missing.exit_code == 2
    assert len(missing.stderr.strip().splitlines()) == 1


def test_decode_cli_bad_key_exits_2() -> None:
    result = runner.invoke(app, ["decode", "dlms", "--hex", AIDON_ONE, "--key", "xyz"])
    assert result.exit_code == 2
    assert "--key" in result.stderr
