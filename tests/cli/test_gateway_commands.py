"""`openami gateway` (bad configuration: one line, exit 2) and `openami bench gateway` (JSON on stdout)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from openami.cli import app

pytestmark = pytest.mark.timeout(60)
runner = CliRunner()

GOOD = """
id = "gw-1"
tenant = "acme"
archive = "archive.db"

[uplink]
url = "mqtt://127.0.0.1:1883"
key = "{key}"

[[meters]]
serial = "MB-1"
protocol = "mbus"
address = "{address}"
"""


def _write(
    tmp_path: Path, *, key: str = "ab" * 32, address: str = "mbus+tcp://127.0.0.1:10001?primary=1"
) -> Path:
    path = tmp_path / "gateway.toml"
    path.write_text(GOOD.format(key=key, address=address))
    return path


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"address": "mbus+tcp://127.0.0.1:10001?primary=0"}, "meters[0].address: "),
        ({"address": "modbus+tcp://127.0.0.1:502"}, "meters[0].address: "),
        ({"key": "abc"}, "uplink.key: must be 64 hex digits"),
    ],
)
def test_a_bad_configuration_is_one_line_and_exit_2(
    tmp_path: Path, change: dict[str, str], message: str
) -> None:
    result = runner.invoke(app, ["gateway", "--config", str(_write(tmp_path, **change))])
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: bad gateway configuration: ")
    assert message in lines[0]
    assert "ab" * 32 not in result.output  # secrets stay out of messages


def test_a_missing_file_is_exit_2(tmp_path: Path) -> None:
    result = runner.invoke(app, ["gateway", "--config", str(tmp_path / "nope.toml")])
    assert result.exit_code == 2 and "cannot read" in result.output


def test_bench_gateway_prints_json(tmp_path: Path) -> None:
    result = runner.invoke(app, ["bench", "gateway", "--meters", "20", "--cycles", "2", "--json"])
    assert result.exit_code == 0, result.output
    figures = json.loads(result.stdout)
    assert (figures["meters"], figures["mbus_meters"], figures["modbus_meters"]) == (20, 10, 10)
    assert figures["meters_failed"] == 0 and len(figures["per_cycle"]) == 2
    assert figures["readings_per_cycle"] > 20 and figures["keeps_up"] is True
    assert figures["margin"] == pytest.approx(900 / figures["worst_cycle_s"], rel=0.05)
    assert all(cycle["batches"] >= 1 for cycle in figures["per_cycle"])
