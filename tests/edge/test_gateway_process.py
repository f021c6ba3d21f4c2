"""`openami gateway` as its own process, killed with SIGKILL mid-run and started again: what was not
acknowledged is sent again, nothing archived is lost, and no sequence number is used twice."""

from __future__ import annotations

import asyncio
import signal
import sqlite3
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from openami.protocols.edge import Kind
from openami.simulator.edge_site import SimulatedSite
from tests.edge.support import HeadEndPeer, Mosquitto, eventually, write_config

pytestmark = pytest.mark.timeout(60)


async def _start(config: Path, log: Path) -> asyncio.subprocess.Process:
    with log.open("ab") as handle:
        return await asyncio.create_subprocess_exec(
            sys.executable, "-m", "openami.cli", "gateway", "--config", str(config),
            stdout=handle, stderr=handle,
        )  # fmt: skip


def _archived(path: Path) -> set[tuple[str, str, str]]:
    """Every reading in the archive, read through a read-only connection (the agent may be running)."""
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        rows = db.execute("SELECT meter, channel, ts FROM reading").fetchall()
    finally:
        db.close()
    return {(m, c, datetime.fromtimestamp(ts, UTC).isoformat()) for m, c, ts in rows}


async def test_kill_9_and_restart_loses_nothing_and_reuses_no_number(tmp_path: Path) -> None:
    broker = Mosquitto(tmp_path)
    broker.start()
    log = tmp_path / "agent.log"
    try:
        async with SimulatedSite(mbus=2, modbus=2) as site:
            config = write_config(
                tmp_path,
                gateway="gw-kill",
                url=broker.url,
                meters=site.meters,
                health_interval_s=0.3,
                batch_readings=12,
                uplink={"window": 4, "ack_timeout_s": 30.0},
            )
            archive = tmp_path / "archive.db"
            async with HeadEndPeer(broker.url, "gw-kill", ack=False) as peer:
                agent = await _start(config, log)
                try:
                    await eventually(lambda: len(peer.batches) >= 4, 30, "the first run's batches")
                    await eventually(lambda: len(peer.health) >= 2, 10, "health reports")
                finally:
                    agent.send_signal(signal.SIGKILL)
                    await asyncio.wait_for(agent.wait(), 10)
                assert agent.returncode == -signal.SIGKILL
                unacked = set(peer.batches)  # the peer acknowledged nothing
                before_kill = _archived(archive)
                assert before_kill

                peer.ack = True
                agent = await _start(config, log)
                try:
                    await eventually(
                        lambda: all(peer.received[seq] >= 2 for seq in unacked),
                        20,
                        "the unacked batches resent",
                    )
                    await eventually(
                        lambda: before_kill <= set(peer.readings()), 20, "every reading of the first run"
                    )
                finally:
                    agent.send_signal(signal.SIGTERM)
                    await asyncio.wait_for(agent.wait(), 15)
                assert agent.returncode == 0, log.read_text()[-2000:]
        readings = peer.readings()
        assert len(readings) == len(set(readings))  # no reading in two batches
        assert set(readings) <= _archived(archive)
        opened = peer.opened()
        for seq, contents in opened.items():
            assert len(contents) == 1, f"sequence {seq} was used for two different envelopes"
        kinds = {seq: next(iter(contents))[0] for seq, contents in opened.items()}
        resent = [seq for seq, count in peer.received.items() if count > 1]
        assert resent and all(kinds[seq] is Kind.BATCH for seq in resent)  # only batches are ever resent
        assert {Kind.BATCH, Kind.HEALTH, Kind.TIME} <= set(kinds.values())
    finally:
        broker.stop()
