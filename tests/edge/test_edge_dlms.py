"""DLMS/COSEM meters read by the gateway agent: simulated meters over real loopback sockets (HDLC through
a "terminal server" and the TCP wrapper), HLS-GMAC with every APDU ciphered, LLS and the public client,
keys from the gateway's configuration, reads resumed from the gateway's own archive.

The meters and the agent share one injected clock, so "an hour later" is a variable, not a wait. The
simulated meters are strict about invocation counters (as real ones are), so a second session only
succeeds when the gateway carried its counters over, across a restart too.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from openami.edge.agent import GatewayAgent
from openami.edge.archive import Archive, ArchivedEvent, ArchivedReading
from openami.edge.config import load_config
from openami.edge.dlms import client_system_title
from openami.hes.rounds import RoundReport
from openami.simulator.dlms_meter import SimulatedMeter
from openami.simulator.dlms_server import DlmsSimulator, build_meters, hdlc_address
from tests.api.support import Clock
from tests.edge.support import free_port, write_config

pytestmark = pytest.mark.timeout(30)

START = datetime(2026, 3, 2, 10, 7, 30, tzinfo=UTC)
QUARTER = timedelta(minutes=15)
BACKFILL = timedelta(hours=6)
CHANNELS = ("1-0:1.7.0", "1-0:1.8.0", "1-0:2.8.0")  # P, +A, -A: the simulator's profile columns


@pytest.fixture
def clock() -> Clock:
    moving = Clock()
    moving.now = START
    return moving


@pytest.fixture
async def hdlc(clock: Clock) -> AsyncIterator[DlmsSimulator]:
    async with DlmsSimulator("127.0.0.1", build_meters(3, seed=5, now=clock, strict_counters=True), 0,
                             framing="hdlc") as running:  # fmt: skip
        yield running


def _hls(sim: SimulatedMeter) -> dict[str, str]:
    return {"encryption": sim.keys.encryption_key.hex(), "authentication": sim.keys.authentication_key.hex()}


def _hdlc_meter(sim: DlmsSimulator, index: int, keys: dict[str, str] | None, **extra: str) -> dict[str, Any]:
    address = f"hdlc+tcp://127.0.0.1:{sim.ports[index]}?physical={hdlc_address(index).physical}"
    return {"serial": sim.meters[index].serial, "protocol": "dlms", "address": address, "keys": keys, **extra}


def _agent(directory: Path, meters: list[dict[str, Any]], clock: Clock) -> GatewayAgent:
    config = load_config(
        write_config(directory, gateway="gw-dlms", url=f"mqtt://127.0.0.1:{free_port()}", meters=meters)
    )
    agent = GatewayAgent(config, now=clock)
    agent.dlms.options = dataclasses.replace(agent.dlms.options, backfill=BACKFILL)
    return agent


def _quarters(first: datetime, last: datetime) -> list[datetime]:
    """Every quarter-hour boundary in [first, last]."""
    ts = first.replace(minute=first.minute // 15 * 15, second=0, microsecond=0)
    ts = ts if ts >= first else ts + QUARTER
    found = []
    while ts <= last:
        found.append(ts)
        ts += QUARTER
    return found


def _profile(agent: GatewayAgent, serial: str) -> dict[str, list[ArchivedReading]]:
    by_channel: dict[str, list[ArchivedReading]] = {}
    for reading in agent.archive.readings(serial):
        by_channel.setdefault(reading.channel, []).append(reading)
    return by_channel


def _outcome(report: RoundReport, serial: str) -> Any:
    (found,) = [o for o in report.outcomes if o.serial == serial]
    return found


async def test_hls_meters_over_hdlc_are_archived_once_and_resumed_from_the_archive(
    tmp_path: Path, hdlc: DlmsSimulator, clock: Clock
) -> None:
    good, drifting, locked = hdlc.meters
    drifting.clock_offset = timedelta(minutes=4)
    wrong = {"encryption": "11" * 16, "authentication": "22" * 16}
    meters = [_hdlc_meter(hdlc, 0, _hls(good)), _hdlc_meter(hdlc, 1, _hls(drifting)),
              _hdlc_meter(hdlc, 2, wrong)]  # fmt: skip
    agent = _agent(tmp_path, meters, clock)
    assert (agent.targets.count, agent.targets.skipped) == (3, [])
    assert {t.endpoint.auth for t in agent.targets.dlms} == {"hls"}

    first = await agent.poll_once()
    assert first.failed == 1 and first.succeeded == 2
    # A wrong key is that meter's failed read with the reason, not an exception and not the round's.
    refused = _outcome(first, locked.serial)
    assert not refused.ok and refused.error.startswith("DlmsAuthFailed"), refused.error

    expected = _quarters(START - BACKFILL, START)
    for sim in (good, drifting):
        profile = _profile(agent, sim.serial)
        assert sorted(profile) == list(CHANNELS)
        rows = {ts: (imp, exp, power) for ts, imp, exp, power, _ in sim.profile_rows(START - BACKFILL, START)}
        assert sorted(rows) == expected
        for channel, column in (("1-0:1.8.0", 0), ("1-0:2.8.0", 1), ("1-0:1.7.0", 2)):
            archived = profile[channel]
            assert [r.ts for r in archived] == expected  # every interval, once
            assert [r.value for r in archived] == [float(rows[r.ts][column]) for r in archived]
            assert {r.interval_s for r in archived} == {900}
    assert not agent.archive.readings(locked.serial)

    # The drifting meter's clock was set (from the agent's clock) and the set recorded.
    assert _outcome(first, drifting.serial).clock_set and not _outcome(first, good.serial).clock_set
    assert abs(drifting.clock_offset.total_seconds()) < 1
    synced = [e for e in _events(agent.archive, drifting.serial) if e.code == "clock_synchronised"]
    assert [(e.ts, (e.detail or {})["drift_s"]) for e in synced] == [(START, 240.0)]

    # An hour later: the next round reads on from the last archived interval, not from the backfill
    # start, and a strict meter accepts the session (the counters went on from the first one's).
    clock.now = START + timedelta(hours=1)
    second = await agent.poll_once()
    assert _outcome(second, good.serial).ok and _outcome(second, drifting.serial).ok
    new = _quarters(START + timedelta(seconds=1), clock.now)
    assert len(new) == 4
    assert _outcome(second, good.serial).readings == len(new) * len(CHANNELS)
    for sim in (good, drifting):
        profile = _profile(agent, sim.serial)
        assert all([r.ts for r in profile[c]] == expected + new for c in CHANNELS)
    # The meter logged the set at its old time (4 minutes ahead, read in the second round) and at the
    # new one; each is archived once, however often the rounds overlap.
    logged = [(e.ts, (e.detail or {})["dlms_code"]) for e in _events(agent.archive, drifting.serial)
              if e.code == "clock_adjusted"]  # fmt: skip
    assert sorted(logged) == [(START, 5), (START + timedelta(minutes=4), 4)]
    agent.archive.close()

    # A restart (a new agent on the same archive) resumes too; its counters continue the archive's.
    clock.now = START + timedelta(hours=1, minutes=30)
    again = _agent(tmp_path, meters[:2], clock)
    third = await again.poll_once()
    assert third.failed == 0, third.errors
    assert _outcome(third, good.serial).readings == 2 * len(CHANNELS)
    again.archive.close()


def _events(archive: Archive, serial: str) -> list[ArchivedEvent]:
    return archive.events(serial)


async def test_wrapper_meters_with_lls_and_the_public_client(tmp_path: Path, clock: Clock) -> None:
    sims = build_meters(3, seed=9, now=clock)
    async with DlmsSimulator("127.0.0.1", sims, 0) as wrapper:
        lls, public, wrong = (f"tcp://127.0.0.1:{port}" for port in wrapper.ports)
        meters: list[dict[str, Any]] = [
            {"serial": sims[0].serial, "protocol": "dlms", "address": lls,
             "keys": {"password": sims[0].keys.password.decode()}},
            {"serial": sims[1].serial, "protocol": "dlms", "address": public},
            {"serial": sims[2].serial, "protocol": "dlms", "address": wrong, "keys": {"password": "not-it"}},
        ]  # fmt: skip
        agent = _agent(tmp_path, meters, clock)
        endpoints = [(t.endpoint.framing, t.endpoint.auth, t.endpoint.client_sap) for t in agent.targets.dlms]
        assert endpoints == [("wrapper", "lls", 1), ("wrapper", "none", 16), ("wrapper", "lls", 1)]
        report = await agent.poll_once()
        assert [_outcome(report, sim.serial).ok for sim in sims] == [True, True, False], report.errors
        assert (_outcome(report, sims[2].serial).error or "").startswith("DlmsAuthFailed")
        expected = _quarters(START - BACKFILL, START)
        for sim in sims[:2]:
            assert [r.ts for r in _profile(agent, sim.serial)["1-0:1.8.0"]] == expected
        agent.archive.close()


@pytest.mark.parametrize(
    ("address", "keys", "reason"),
    [
        ("tcp://127.0.0.1:4059?auth=hls", None, "keys.encryption is missing"),
        ("tcp://127.0.0.1:4059", {"encryption": "11" * 16}, "keys.authentication is missing"),
        ("tcp://127.0.0.1:4059", {"encryption": "11" * 32, "authentication": "22" * 32}, "AES-128"),
        ("tcp://127.0.0.1:4059?auth=lls", {"encryption": "11" * 16}, "keys.password"),
    ],
)
def test_keys_that_do_not_fit_skip_the_meter_naming_the_field(
    tmp_path: Path, clock: Clock, address: str, keys: dict[str, str] | None, reason: str
) -> None:
    agent = _agent(tmp_path, [{"serial": "D-1", "protocol": "dlms", "address": address, "keys": keys}], clock)
    assert agent.targets.count == 0
    ((serial, why),) = agent.targets.skipped
    assert serial == "D-1" and reason in why
    agent.archive.close()


def test_a_fep_address_is_a_configuration_error(tmp_path: Path) -> None:
    from openami.edge.config import GatewayConfigError

    meters = [{"serial": "D-1", "protocol": "dlms", "address": "fep://MODEM-1"}]
    path = write_config(tmp_path, gateway="gw-dlms", url="mqtt://127.0.0.1:1883", meters=meters)
    with pytest.raises(GatewayConfigError, match=r"meters\[0\]\.address.*front-end processor"):
        load_config(path)


def test_the_gateway_calls_itself_by_a_title_of_its_own() -> None:
    title = client_system_title("gw-0042")
    assert len(title) == 8 and title.startswith(b"OAG")
    assert title == client_system_title("gw-0042") != client_system_title("gw-0043")


# -- what the archive keeps for the resume and the counters ---------------------------------------


def test_archive_resume_points_and_counter_blocks(tmp_path: Path) -> None:
    archive = Archive(tmp_path / "a.db")
    t0 = START
    archive.add(
        [
            ArchivedReading("M1", "1-0:1.8.0", t0, 1.0, "Wh", "register", 900),
            ArchivedReading("M1", "1-0:1.8.0", t0 + QUARTER, 2.0, "Wh", "register", 900),
            ArchivedReading("M1", "1-0:1.7.0", t0, 5.0, "W", "register", 900),  # lags: sets the start
            ArchivedReading("M1", "1-0:1.8.1", t0 + 4 * QUARTER, 9.0, "Wh"),  # no interval: not profile
            ArchivedReading("M2", "volume", t0, 3.0, "m3"),
        ],
        [
            ArchivedEvent("M1", t0 + QUARTER, "power_failure", "warning", {"dlms_code": 1}),
            ArchivedEvent("M1", t0 + 3 * QUARTER, "comm_lost", "alarm", {"failures": 3}),
        ],
    )
    assert archive.last_profile_times(["M1", "M2", "M3"]) == {"M1": t0}
    assert archive.last_event_times(["M1", "M2"], detail_key="dlms_code") == {"M1": t0 + QUARTER}
    assert archive.last_profile_times([]) == {} == archive.last_event_times([], detail_key="dlms_code")
    with pytest.raises(ValueError, match="identifier"):
        archive.last_event_times(["M1"], detail_key="a') OR 1=1 --")
    assert [e.code for e in archive.events("M1")] == ["power_failure", "comm_lost"]

    first = archive.reserve_block("ic:M1", 1000)
    assert first == 1
    second = archive.reserve_block("ic:M1", 1000)  # a concurrent session: the next block
    assert second == 1001
    assert not archive.release_block("ic:M1", first, 1000, 8)  # another block lies above: kept
    assert archive.release_block("ic:M1", second, 1000, 1010)  # the last one: its unused rest back
    assert archive.reserve_block("ic:M1", 1000) == 1010
    assert archive.reserve_block("ic:M2", 5) == 1  # counters are independent
    archive.close()
    reopened = Archive(tmp_path / "a.db")
    assert reopened.reserve_block("ic:M1", 1000) == 2010  # kept across a restart
    assert reopened.stats()["readings"] == 5  # the blocks are not the reading totals
    reopened.close()
