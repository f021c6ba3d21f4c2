"""`openami demo` as a user runs it: a real process, real ports, Ctrl-C to stop."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

OPENAMI = [sys.executable, "-m", "openami.cli"]


def _env(tmp_path: Path, web_port: int) -> dict[str, str]:
    return {
        **os.environ,
        "OPENAMI_DATA_DIR": str(tmp_path / "var"),
        "OPENAMI_WEB_PORT": str(web_port),
        "OPENAMI_MQTT_EMBEDDED_PORT": "0",
        "OPENAMI_DLMS_PUSH_PORT": "0",
        "OPENAMI_LOG_LEVEL": "INFO",
        "COLUMNS": "200",
    }


@pytest.mark.slow
@pytest.mark.parametrize("stop_signal", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_demo_serves_health_and_stops_cleanly(tmp_path: Path, free_port: int, stop_signal: int) -> None:
    process = subprocess.Popen(
        [*OPENAMI, "demo", "--days", "0.5"],
        cwd=tmp_path,
        env=_env(tmp_path, free_port),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 120  # the README promises /health within 2 minutes
        health = None
        while time.monotonic() < deadline and process.poll() is None:
            try:
                health = httpx.get(f"http://127.0.0.1:{free_port}/health", timeout=2)
                if health.status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.5)
        assert health is not None, "demo never answered"
        assert health.status_code == 200
        assert health.json()["status"] == "ok"
        metrics = httpx.get(f"http://127.0.0.1:{free_port}/metrics", timeout=5).text
        assert "openami_readings_ingested" in metrics
        process.send_signal(stop_signal)
        output, _ = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 0, output
    assert "Traceback" not in output
    assert "openami-demo" in output  # the credentials were printed
    assert "platform stopped" in output  # graceful: intake stopped, accepted data flushed


def test_demo_once_prints_a_summary(tmp_path: Path, free_port: int) -> None:
    # 0.1 days is 2.4 hours: not a whole number of quarter hours, which the back-fill must round.
    result = subprocess.run(
        [*OPENAMI, "demo", "--once", "--days", "0.1"],
        cwd=tmp_path,
        env=_env(tmp_path, free_port),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "readings stored (new)" in result.stdout
    # meters / gateways: 300 behind 7 virtual gateways, 12 pushing, 6 DLMS + 14 field meters polled,
    # 5 radio, 8 behind the 2 OpenAMI gateways
    assert "345 / 9" in result.stdout
    edge = next(line for line in result.stdout.splitlines() if "OpenAMI gateways" in line)
    gateways, meters, readings = (
        int(part.strip(" │").replace(",", "")) for part in edge.split("│")[2].split("/")
    )
    # One round: 2 heat (9 readings) and 2 water (3) M-Bus meters, 2 SDM630 (13) and 2 heat (6) Modbus
    # meters: 62. Twice that when the gateways' own schedule (on the quarter hour) fell into the run.
    assert (gateways, meters) == (2, 8) and readings in (62, 124), edge
    polled = next(line for line in result.stdout.splitlines() if "DLMS meters polled" in line)
    assert " 6 / " in polled and polled.rstrip(" │").endswith("/ 0"), polled
    buses = next(line for line in result.stdout.splitlines() if "port meters read" in line)
    # 3 SDM630 (13 points), 3 Modbus heat (6), 3 M-Bus (15: identifiers are not readings), 3 IEC
    # 62056-21, a DSMR 5 and an SML meter
    assert " 14 / 121 " in buses, buses
    radio = next(line for line in result.stdout.splitlines() if "wM-Bus meters" in line)
    meters, telegrams, _readings = (
        int(part.strip(" │").replace(",", "")) for part in radio.split("│")[2].split("/")
    )
    assert meters == 5 and telegrams >= 5, radio  # every radio meter heard at least once
    # 0.1 days rounds to 9 quarter hours (2.25 h) or 10, depending on when in the quarter it starts
    pushes = next(line for line in result.stdout.splitlines() if "DLMS meters / pushes" in line)
    assert any(f"12 / {12 * quarters}" in pushes for quarters in (9, 10)), pushes
    refused = next(line for line in result.stdout.splitlines() if "DLMS pushes refused" in line)
    assert refused.split()[-2:] == ["0", "│"] or refused.rstrip(" │").endswith(" 0"), refused


@pytest.mark.parametrize(
    ("command", "setting"),
    [(["demo"], "OPENAMI_WEB_PORT"), (["demo", "--once"], "OPENAMI_MQTT_EMBEDDED_PORT")],
)
def test_taken_port_is_one_clear_line(
    tmp_path: Path, free_port: int, command: list[str], setting: str
) -> None:
    """Whatever holds the port, start-up stops at once with the setting to change, and cleans up."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        env = _env(tmp_path, free_port)
        env[setting] = str(holder.getsockname()[1])
        result = subprocess.run(
            [*OPENAMI, *command],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    assert result.returncode == 1
    assert f"address already in use (set {setting})" in result.stderr
    assert "Traceback" not in result.stderr
