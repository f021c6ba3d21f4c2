"""`openami simulate mbus|iec62056-21|modbus|wmbus` as a user runs them: a real process on an ephemeral
port, read with the real drivers, stopped with Ctrl-C."""

from __future__ import annotations

import asyncio
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from openami.drivers.iec62056_21.client import read_tcp
from openami.drivers.mbus.client import MbusTcpClient
from openami.drivers.modbus.models import SDM630
from openami.drivers.modbus.reader import ModbusMeterReader
from openami.drivers.wmbus.receiver import WmbusReceiver
from openami.protocols.wmbus import decode_telegram

pytestmark = pytest.mark.timeout(60)


@contextmanager
def _simulator(*args: str) -> Iterator[tuple[int, str]]:
    """Start ``openami simulate ARGS --port 0``; yields the port it printed and its first lines."""
    process = subprocess.Popen(
        [sys.executable, "-m", "openami.cli", "simulate", *args, "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={"COLUMNS": "200", "PATH": "/usr/bin:/bin"},
    )
    try:
        assert process.stdout is not None
        first = process.stdout.readline()
        match = re.search(r"127\.0\.0\.1:(\d+)", first)
        assert match, first
        yield int(match[1]), first
        process.send_signal(signal.SIGINT)
        output, _ = process.communicate(timeout=20)
        assert process.returncode == 0, output
        assert "Traceback" not in output
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()


def test_simulate_mbus() -> None:
    with _simulator("mbus", "--meters", "2") as (port, _):

        async def read() -> list[object]:
            async with MbusTcpClient("127.0.0.1", port, timeout=2) as client:
                return list((await client.read_primary(2)).records)

        records = asyncio.run(read())
    assert any(getattr(r, "quantity", "") == "volume" for r in records)


def test_simulate_iec() -> None:
    with _simulator("iec62056-21", "--meters", "2") as (port, _):
        readout = asyncio.run(read_tcp("127.0.0.1", port, address="71000002", readout_s=20))
    assert readout.bcc_checked
    serial = readout.find("C.1.0") or readout.find("0.0.0")
    assert serial is not None and serial.value == "71000002"  # the addressed meter answered


def test_simulate_modbus() -> None:
    with _simulator("modbus", "--meters", "1") as (port, _):

        async def read() -> list[object]:
            async with ModbusMeterReader("127.0.0.1", port, 1, SDM630, timeout=3) as reader:
                return list(await reader.read())

        values = asyncio.run(read())
    assert {v.point.channel for v in values} >= {"1-0:1.8.0"}  # type: ignore[attr-defined]


def test_simulate_wmbus_with_a_key() -> None:
    key = "00112233445566778899AABBCCDDEEFF"
    with _simulator("wmbus", "--meters", "1", "--key", key, "--interval", "0.2") as (port, _):

        async def first_line() -> bytes:
            async with asyncio.timeout(10):
                async for line in WmbusReceiver(f"wmbus+tcp://127.0.0.1:{port}").lines():
                    if line.telegram is not None:
                        return line.telegram.frame
            raise AssertionError("no telegram")

        frame = asyncio.run(first_line())
    telegram = decode_telegram(frame, key=bytes.fromhex(key))
    assert telegram.decrypted and telegram.records


@pytest.mark.parametrize(
    "args",
    [
        ["wmbus", "--key", "zz"],
        ["wmbus", "--key", "00"],
        ["p1", "--encryption-key", "zz", "--authentication-key", "zz"],
        ["p1", "--encryption-key", "00", "--authentication-key", "00"],
    ],
)
def test_bad_keys_are_one_line_and_exit_2(args: list[str]) -> None:
    from typer.testing import CliRunner

    from openami.cli import app

    result = CliRunner().invoke(app, ["simulate", *args, "--port", "0"])
    assert result.exit_code == 2, result.output
    assert ("Traceback" not in result.output and result.exception is None) or isinstance(
        result.exception, SystemExit
    )
