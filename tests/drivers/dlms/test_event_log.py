"""Event logs read by the head-end over real TCP on loopback, HLS-GMAC with every APDU ciphered."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from itertools import pairwise

import pytest

from openami.drivers.dlms import DlmsClient
from openami.drivers.dlms.events import EVENT_LOGS, MeterEvent, read_event_log
from openami.protocols.dlms.axdr import Data
from openami.protocols.dlms.obis import Obis
from openami.protocols.dlms.profiles import idis_events as idis
from openami.protocols.dlms.xdlms import CosemAttribute
from openami.simulator.dlms_meter import SimulatedMeter
from openami.simulator.dlms_server import DlmsSimulator, build_meters
from tests.drivers.dlms.test_client_simulator import HOST, hls

pytestmark = pytest.mark.timeout(30)

STANDARD = idis.STANDARD_EVENT_LOG.obis
FRAUD = idis.FRAUD_DETECTION_LOG.obis
DISCONNECTOR = idis.DISCONNECTOR_CONTROL_LOG.obis
SECOND = timedelta(seconds=1)


@pytest.fixture
async def simulator(free_port: int) -> AsyncIterator[DlmsSimulator]:
    async with DlmsSimulator(HOST, build_meters(1, seed=11), free_port) as sim:
        yield sim


def whole_second(ts: datetime) -> datetime:
    return ts.replace(microsecond=0)


def expected(meter: SimulatedMeter, log: Obis, start: datetime, end: datetime) -> list[tuple[datetime, int]]:
    """What [start, end) holds, from the meter's own (sans-IO) view."""
    return [(e.ts, e.code) for e in meter.events.events(log, start, end) if e.ts < end]


def plain(events: list[MeterEvent]) -> list[tuple[datetime, int]]:
    return [(e.ts, e.code) for e in events]


def test_event_logs_constant() -> None:
    assert [log.reduced for log in EVENT_LOGS] == ["0-0:99.98.0", "0-0:99.98.1", "0-0:99.98.2"]


async def test_read_logs_by_range(simulator: DlmsSimulator) -> None:
    meter = simulator.meters[0]
    end = whole_second(datetime.now(UTC))
    start = end - timedelta(days=300)
    async with DlmsClient(HOST, simulator.ports[0], hls(meter)) as client:
        standard = await read_event_log(client, STANDARD, start, end)
        fraud = await read_event_log(client, FRAUD, start, end)
        disconnector = await read_event_log(client, DISCONNECTOR, start, end)
        columns = await client.get(CosemAttribute(7, FRAUD, 3))
        period = await client.get(CosemAttribute(7, FRAUD, 4))
    assert standard
    assert plain(standard) == expected(meter, STANDARD, start, end)
    assert plain(fraud) == expected(meter, FRAUD, start, end)
    assert disconnector == []
    assert {e.name for e in standard} == {"power_down", "power_up"}
    assert all(e.ts.tzinfo is not None and e.log == STANDARD for e in standard)
    downs = [e for e in standard if e.code == idis.POWER_DOWN]
    assert {(e.severity, e.description) for e in downs} == {("warning", "Power down")}
    assert {e.name for e in fraud} <= {
        "cover_open",
        "cover_closed",
        "magnetic_tamper",
        "magnetic_tamper_cleared",
    }
    assert period == Data.uint32(0)
    assert isinstance(columns.value, tuple)
    assert columns.value[1].value[1] == Data.octet_string(idis.FRAUD_DETECTION_LOG.code_object.to_bytes())


async def test_consecutive_ranges_return_each_event_once(simulator: DlmsSimulator) -> None:
    meter = simulator.meters[0]
    end = datetime.now(UTC)  # not a whole second: cuts between events at any fraction
    start = end - timedelta(days=360)
    step = timedelta(days=17, hours=3, minutes=7, seconds=11.37)
    cuts = [start + k * step for k in range(21)] + [end]
    async with DlmsClient(HOST, simulator.ports[0], hls(meter)) as client:
        await client.set_clock(end - timedelta(days=40, seconds=0.6))  # sub-second recorded events
        await client.set_clock(datetime.now(UTC))
        whole = await read_event_log(client, STANDARD, start, end + timedelta(seconds=5))
        pieces: list[MeterEvent] = []
        for lower, upper in pairwise(cuts):
            pieces += await read_event_log(client, STANDARD, lower, upper)
        pieces += await read_event_log(client, STANDARD, end, end + timedelta(seconds=5))
    assert len(whole) > 10
    assert sorted(plain(pieces)) == sorted(plain(whole))
    assert len(set(plain(pieces))) == len(pieces)
    assert sum(e.code == idis.CLOCK_ADJUSTED_OLD for e in whole) == 2


async def test_clock_set_is_logged(simulator: DlmsSimulator) -> None:
    meter = simulator.meters[0]
    target = datetime(2026, 1, 15, 12, 0, tzinfo=UTC)
    async with DlmsClient(HOST, simulator.ports[0], hls(meter)) as client:
        before = await client.get_clock()
        await client.set_clock(target)
        after = await read_event_log(client, STANDARD, target - SECOND, target + timedelta(seconds=5))
        old = await read_event_log(
            client, STANDARD, before - timedelta(seconds=5), before + timedelta(seconds=5)
        )
    new_time = [e for e in after if e.code == idis.CLOCK_ADJUSTED_NEW]
    assert len(new_time) == 1
    assert abs(new_time[0].ts - target) < timedelta(seconds=2)
    old_time = [e for e in old if e.code == idis.CLOCK_ADJUSTED_OLD]
    assert len(old_time) == 1
    assert abs(old_time[0].ts - before) < timedelta(seconds=2)
    assert {e.name for e in new_time + old_time} == {"clock_adjusted"}
    assert new_time[0].description == "Clock adjusted (new date/time)"


async def test_disconnect_and_reconnect_are_logged(simulator: DlmsSimulator) -> None:
    meter = simulator.meters[0]
    async with DlmsClient(HOST, simulator.ports[0], hls(meter)) as client:
        start = whole_second(await client.get_clock())
        await client.disconnect()
        await client.reconnect()
        events = await read_event_log(client, DISCONNECTOR, start, start + timedelta(minutes=1))
        last = await client.get(CosemAttribute(1, idis.DISCONNECTOR_CONTROL_LOG.code_object, 2))
    assert [(e.code, e.name, e.severity) for e in events] == [
        (idis.REMOTE_DISCONNECT, "remote_disconnect", "info"),
        (idis.REMOTE_RECONNECT, "remote_reconnect", "info"),
    ]
    assert last == Data.uint8(idis.REMOTE_RECONNECT)


async def test_unknown_codes_are_kept(simulator: DlmsSimulator) -> None:
    meter = simulator.meters[0]
    at = whole_second(meter.clock()) - timedelta(minutes=5)
    meter.events.record(FRAUD, at, 99)
    async with DlmsClient(HOST, simulator.ports[0], hls(meter)) as client:
        events = await read_event_log(client, FRAUD, at, at + SECOND)
    assert [(e.ts, e.code, e.name, e.severity) for e in events] == [(at, 99, "dlms_event_99", "info")]
