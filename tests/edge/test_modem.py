"""The gateway's modem signal: the AT answers' tables, the probe against the simulated AT port over
loopback TCP (echo, unsolicited codes, LTE or not, silence, garbage, nobody there), and HEALTH."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest

from openami.edge.agent import GatewayAgent
from openami.edge.config import GatewayConfigError, load_config
from openami.edge.modem import ModemError, ModemProbe, Signal, parse_cesq, parse_csq
from openami.simulator.at_modem import AtModemSimulator, ModemState
from tests.edge.support import eventually, free_port, write_config

pytestmark = pytest.mark.timeout(20)


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("+CSQ: 0,0", (-113, 0)),
        ("+CSQ: 1,7", (-111, 7)),
        ("+CSQ: 15,3", (-83, 3)),
        ("+CSQ: 31,99", (-51, None)),
        ("+CSQ: 99,99", (None, None)),
        ("+CSQ: 32,8", (None, None)),  # outside the table: not a number to report
        ("  +CSQ:18 , 2", (-77, 2)),
    ],
)
def test_csq(line: str, expected: tuple[int | None, int | None]) -> None:
    assert parse_csq(line) == expected


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("+CESQ: 99,99,255,255,20,50", (-91, -10.0)),
        ("+CESQ: 99,99,255,255,0,97", (-44, -20.0)),
        ("+CESQ: 99,99,255,255,34,1", (-140, -3.0)),
        ("+CESQ: 99,99,255,255,255,255", (None, None)),
    ],
)
def test_cesq(line: str, expected: tuple[int | None, float | None]) -> None:
    assert parse_cesq(line) == expected


@pytest.mark.parametrize("line", ["", "OK", "+CSQ: x,y", "+CREG: 1", "+CSQ: 12"])
def test_not_an_answer(line: str) -> None:
    with pytest.raises(ModemError):
        parse_csq(line)


async def test_lte_modem_with_echo_and_unsolicited_codes() -> None:
    state = ModemState(rssi=18, ber=2, rsrp=60, rsrq=24, unsolicited=["+CREG: 1", "RING"])
    async with AtModemSimulator(state) as modem:
        probe = ModemProbe(modem.url, timeout_s=2.0)
        signal = await probe.query()
        assert signal == Signal(-77, 2, -81, -8.0)
        assert signal.health() == {"signal_dbm": -77, "signal_ber": 2, "rsrp_dbm": -81, "rsrq_db": -8.0}
        assert modem.commands == ["AT+CSQ", "AT+CESQ"] and modem.connections == 1
        state.rssi = 99  # no network
        assert (await probe.query()).dbm is None
        assert modem.connections == 2
        await eventually(lambda: modem.open_connections == 0, 2, "the port closed after the query")


async def test_modem_without_lte_reports_csq_only() -> None:
    async with AtModemSimulator(ModemState(rssi=10, ber=99)) as modem:
        signal = await ModemProbe(modem.url, timeout_s=2.0).query()
    assert signal.health() == {"signal_dbm": -93}


@pytest.mark.parametrize("mode", ["silent", "garbage"])
async def test_silence_and_garbage_give_nulls_and_one_warning(
    mode: str, caplog: pytest.LogCaptureFixture
) -> None:
    async with AtModemSimulator(ModemState(mode=mode)) as modem:  # type: ignore[arg-type]
        probe = ModemProbe(modem.url, timeout_s=0.2)
        with caplog.at_level(logging.DEBUG, logger="openami.edge.modem"):
            first, second = await probe.query(), await probe.query()
        assert first == second == Signal()
        warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
        assert len(warnings) == 1 and probe.failures == 2
        modem.state.mode = "ok"
        assert (await probe.query()).dbm == -73  # and back


async def test_nobody_on_the_port() -> None:
    probe = ModemProbe(f"tcp://127.0.0.1:{free_port()}", timeout_s=0.5)
    assert await probe.query() == Signal() and probe.failures == 1
    with pytest.raises(ValueError, match="tcp://host:port"):
        ModemProbe("COM3")


async def test_health_carries_the_modems_signal(tmp_path: Path) -> None:
    async with AtModemSimulator(ModemState(rssi=21, rsrp=70, rsrq=20)) as modem:
        path = write_config(tmp_path, gateway="gw-modem", url="mqtt://127.0.0.1:9", meters=[])
        with path.open("a") as handle:
            handle.write(f'\n[modem]\nport = "{modem.url}"\ninterval_s = 60\ntimeout_s = 2\n')
        agent = GatewayAgent(load_config(path))
        try:
            assert (await agent.health())["signal_dbm"] is None  # not asked yet
            assert agent.modem is not None
            await agent.modem.query()
            health = await agent.health()
        finally:
            agent.archive.close()
    assert (health["signal_dbm"], health["rsrp_dbm"], health["rsrq_db"]) == (-71, -71, -10.0)
    assert "signal_ber" not in health  # 99: not known


def test_modem_port_is_checked(tmp_path: Path) -> None:
    path = write_config(tmp_path, gateway="gw-modem", url="mqtt://127.0.0.1:9", meters=[])
    with path.open("a") as handle:
        handle.write('\n[modem]\nport = "ttyUSB2"\n')
    with pytest.raises(GatewayConfigError, match=r"modem\.port"):
        load_config(path)


def test_openami_simulate_modem() -> None:
    """`openami simulate modem` as a user runs it (a real process; the CLI tests' launcher)."""
    from tests.cli.test_simulate_commands import _simulator

    with _simulator("modem", "--rssi", "25", "--rsrp", "50", "--rsrq", "30") as (port, _):
        signal = asyncio.run(ModemProbe(f"tcp://127.0.0.1:{port}", timeout_s=5).query())
    assert signal == Signal(-63, None, -91, -5.0)
