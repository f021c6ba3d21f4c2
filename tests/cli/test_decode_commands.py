"""`openami decode <protocol>` and `openami bench decode`: JSON out, exit code 2 for bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from openami.bench.decode import _KEY, _wired, _wireless
from openami.cli import app
from openami.protocols.decoders import DECODERS

runner = CliRunner()


def test_every_decoder_has_a_command() -> None:
    result = runner.invoke(app, ["decode", "--help"])
    assert result.exit_code == 0
    for name in [*DECODERS, "dlms"]:
        assert name in result.output


def test_mbus_frame_from_a_file(tmp_path: Path) -> None:
    capture = tmp_path / "frame.hex"
    capture.write_text(_wired().hex(" "))
    result = runner.invoke(app, ["decode", "mbus", str(capture), "--json"])
    assert result.exit_code == 0, result.output
    decoded = json.loads(result.output)
    assert decoded["header"]["id"] == "12345678" and decoded["header"]["manufacturer"] == "OAM"
    assert decoded["records"][0] == {
        "value": 563412000,
        "unit": "Wh",
        "quantity": "energy",
        "function": "instantaneous",
        "storage": 0,
        "tariff": 0,
        "subunit": 0,
    }


def test_encrypted_wmbus_needs_its_key() -> None:
    telegram = _wireless(encrypted=True).hex()
    decoded = json.loads(
        runner.invoke(app, ["decode", "wmbus", "--hex", telegram, "--key", _KEY.hex()]).output
    )
    assert decoded["records"][1]["unit"] == "m3"
    for args, reason in (([], "key"), (["--key", "00" * 16], "")):
        result = runner.invoke(app, ["decode", "wmbus", "--hex", telegram, *args])
        assert result.exit_code == 2
        assert result.output.startswith("error: undecodable") and reason in result.output


@pytest.mark.parametrize("name", list(DECODERS))
def test_garbage_is_exit_code_2_with_one_line(name: str) -> None:
    result = runner.invoke(app, ["decode", name, "--hex", "68 03 03 68 00"])
    assert result.exit_code == 2, result.output
    assert len(result.output.strip().splitlines()) == 1


def test_bench_decode_reports_rates() -> None:
    result = runner.invoke(app, ["bench", "decode", "--count", "200", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert set(report) == {"mbus", "wmbus", "wmbus_mode5"}
    assert all(part["telegrams"] == 200 and part["telegrams_per_s"] > 0 for part in report.values())
