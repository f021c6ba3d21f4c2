"""Discovery at the edge: the M-Bus secondary-address search against the simulated converter on a
loopback port (alone and while the same bus is polled), the archive's discovered table, re-reporting
through a real broker, payloads the head-end's own parser takes, and configuration errors."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiomqtt
import pytest

from openami.edge.agent import GatewayAgent
from openami.edge.archive import Archive, ArchivedDevice
from openami.edge.config import GatewayConfigError, load_config, parse_config
from openami.edge.discovery import MAX_PAYLOAD, discovery_payloads
from openami.edge.wmbus import RadioSender
from openami.hes.gateway_link import parse_discovery
from openami.protocols.edge import Kind
from openami.simulator.mbus_meter import MbusBusSimulator, heat_meter, water_meter
from openami.simulator.wmbus_meter import SimulatedWmbusMeter
from openami.transports.mqtt_broker import EmbeddedBroker
from tests.edge.support import HeadEndPeer, eventually, free_port, write_config

pytestmark = pytest.mark.timeout(60)


def _bus() -> MbusBusSimulator:
    """Three slaves whose ids differ in the first digit, so a whole-bus search takes a dozen steps."""
    return MbusBusSimulator(
        [heat_meter(1, "12345678"), water_meter(2, "22345699"), water_meter(5, "87654321", 4242)]
    )


def _agent(directory: Path, bus_port: int, *, url: str | None = None, **settings: Any) -> GatewayAgent:
    """Heat meter 12345678 listed by secondary address, water meter 87654321 by primary address 5;
    water meter 22345699 on the same bus is not listed."""
    bus = f"mbus+tcp://127.0.0.1:{bus_port}"
    meters = [
        {"serial": "HEAT-1", "protocol": "mbus", "address": f"{bus}?secondary=12345678"},
        {"serial": "WATER-5", "protocol": "mbus", "address": f"{bus}?primary=5"},
    ]
    path = write_config(
        directory,
        gateway="gw-search",
        url=url or f"mqtt://127.0.0.1:{free_port()}",
        meters=meters,
        mqtt_version="3.1.1",
        **settings,
    )
    path.write_text(
        path.read_text()
        + f'\n[discovery]\nmbus_buses = ["{bus}"]\nmbus_search_interval_s = 3600\n'
        + "mbus_search_timeout_s = 0.05\n"
    )
    return GatewayAgent(load_config(path))


async def test_the_search_reports_only_the_unlisted_slave(tmp_path: Path) -> None:
    async with _bus() as simulator:
        agent = _agent(tmp_path, simulator.port)
        try:
            found = await agent.discovery.search_mbus()
            again = await agent.discovery.search_mbus()
            devices = agent.archive.devices()
            assert [d.ident for d in await agent.discovery.unlisted()] == ["22345699"]
            listed = await agent.apply_config(
                {
                    "version": 1,
                    "meters": [{"serial": "WATER-2", "protocol": "mbus", "address": devices[0].address}],
                }
            )
            assert listed and await agent.discovery.unlisted() == []  # in the meter list now: not reported
        finally:
            agent.archive.close()
    address = f"mbus+tcp://127.0.0.1:{simulator.port}?secondary=22345699"
    assert [(d.protocol, d.ident, d.address, d.manufacturer, d.medium) for d in found] == [
        ("mbus", "22345699", address, "ZRI", "water")
    ]
    assert (found[0].version, found[0].device_type) == (0x01, 0x07)
    assert [d.ident for d in again] == ["22345699"]  # seen again, not a second device
    assert len(devices) == 1 and devices[0].address == address
    assert agent.discovery.stats.searches == 2 and agent.discovery.stats.search_errors == 0


async def test_searching_while_the_same_bus_is_polled_breaks_neither(tmp_path: Path) -> None:
    """The search selects with wildcards on the very bus the poll selects single meters on; the
    collector's bus lock keeps them apart, so every read is right and every search complete."""
    async with _bus() as simulator:
        agent = _agent(tmp_path, simulator.port)
        try:
            for _ in range(2):
                report, found = await asyncio.gather(agent.poll_once(), agent.discovery.search_mbus())
                assert (report.succeeded, report.failed) == (2, 0), report.outcomes
                assert [d.ident for d in found] == ["22345699"]
            energies = {r.value for r in agent.archive.readings("HEAT-1") if r.channel == "energy"}
            volumes = {r.value for r in agent.archive.readings("WATER-5") if r.channel == "volume"}
        finally:
            agent.archive.close()
    assert energies == {123456000.0}  # kWh as Wh: the heat meter's own value, not a collision's
    assert volumes == {4.242}  # the water meter at primary 5 (litres as m3), not 22345699's
    assert agent.discovery.stats.search_errors == 0


async def test_a_bus_that_is_not_there_costs_only_its_search(tmp_path: Path) -> None:
    agent = _agent(tmp_path, free_port(), read_timeout_s=0.5)
    try:
        assert await agent.discovery.search_mbus() == []
    finally:
        agent.archive.close()
    assert agent.discovery.stats.search_errors == 1


async def test_known_devices_are_reported_again_when_the_link_comes_up(tmp_path: Path) -> None:
    """Found while the gateway was offline, kept in the archive across a restart, and sent as a
    DISCOVERY once the link is there (DISCOVERY has no ACK, so every connect repeats it)."""
    async with _bus() as simulator:
        offline = _agent(tmp_path, simulator.port)
        try:
            await offline.discovery.search_mbus()
        finally:
            offline.archive.close()
        async with EmbeddedBroker("127.0.0.1", 0) as broker:
            peer = HeadEndPeer(broker.url, "gw-search", version=aiomqtt.ProtocolVersion.V311)
            agent = _agent(tmp_path, simulator.port, url=broker.url)
            async with peer:
                await agent.start()
                try:

                    def reports() -> list[dict[str, Any]]:
                        return [
                            json.loads(payload)
                            for contents in peer.opened().values()
                            for kind, payload in contents
                            if kind is Kind.DISCOVERY
                        ]

                    await eventually(lambda: reports() != [], 10, "a DISCOVERY after connecting")
                finally:
                    await agent.stop()
    (report,) = reports()
    devices, problems = parse_discovery(json.dumps(report).encode())  # the head-end's own parser
    assert problems == []
    assert [(d.protocol, d.ident, d.manufacturer, d.medium) for d in devices] == [
        ("mbus", "22345699", "ZRI", "water")
    ]
    assert set(report["devices"][0]) == {"protocol", "id", "address", "manufacturer", "medium", "seen"}


def _device(index: int, seen: datetime) -> ArchivedDevice:
    return ArchivedDevice("wmbus", f"{index:08d}", f"wmbus://KAM/{index:08d}", "KAM", "heat", seen, 1, 4, -70)


def test_large_reports_are_split_below_the_limit_and_parse_whole() -> None:
    seen = datetime(2026, 3, 1, tzinfo=UTC)
    devices = [_device(i, seen) for i in range(3000)]
    payloads = discovery_payloads(devices)
    assert len(payloads) > 1
    idents: list[str] = []
    for payload in payloads:
        data = json.dumps(payload, separators=(",", ":")).encode()
        assert len(data) <= MAX_PAYLOAD
        parsed, problems = parse_discovery(data)
        assert problems == []
        idents += [d.ident for d in parsed]
    assert idents == [d.ident for d in devices]


def test_the_table_upserts_and_keeps_the_most_recently_seen(tmp_path: Path) -> None:
    archive = Archive(tmp_path / "archive.db")
    start = datetime(2026, 3, 1, tzinfo=UTC)
    try:
        assert archive.note_devices([_device(1, start), _device(2, start)], limit=2) == [
            _device(1, start),
            _device(2, start),
        ]
        later = start + timedelta(hours=1)
        quiet = ArchivedDevice("wmbus", "00000001", "wmbus://KAM/00000001", "KAM", "heat", later)
        assert archive.note_devices([quiet, _device(3, later)], limit=2) == [_device(3, later)]
        kept = {d.ident: d for d in archive.devices()}
    finally:
        archive.close()
    assert set(kept) == {"00000001", "00000003"}  # 2 was seen longest ago: dropped at the limit
    assert kept["00000001"].first_seen == start and kept["00000001"].last_seen == later
    assert kept["00000001"].rssi == -70  # a telegram without RSSI does not erase the one known


async def test_installation_only_policy_ignores_ordinary_telegrams(tmp_path: Path) -> None:
    path = write_config(tmp_path, gateway="gw-ir", url=f"mqtt://127.0.0.1:{free_port()}", meters=[])
    path.write_text(path.read_text() + '\n[discovery]\nwmbus = "installation"\n')
    agent = GatewayAgent(load_config(path))
    meter = SimulatedWmbusMeter("44444444", "water")
    now = datetime.now(UTC)
    try:
        agent.discovery.heard(RadioSender(meter.address, False, -80, now, "wmbus+tcp://127.0.0.1:1"))
        assert await agent.discovery.flush(send=False) == []
        agent.discovery.heard(RadioSender(meter.address, True, -80, now, "wmbus+tcp://127.0.0.1:1"))
        new = await agent.discovery.flush(send=False)
    finally:
        agent.archive.close()
    assert [(d.ident, d.medium, d.rssi) for d in new] == [("44444444", "water", -80)]


@pytest.mark.parametrize(
    ("snippet", "field"),
    [
        ('mbus_buses = ["mbus+tcp://10.0.0.5:10001?primary=1"]', "discovery.mbus_buses[0]"),
        (
            'mbus_buses = ["mbus+tcp://10.0.0.5:10001", "modbus+tcp://10.0.0.5:502"]',
            "discovery.mbus_buses[1]",
        ),
        ('mbus_buses = ["mbus+tcp://10.0.0.5:10001", "mbus+tcp://10.0.0.5:10001"]', "discovery.mbus_buses"),
        ("mbus_search_interval_s = 0", "discovery.mbus_search_interval_s"),
        ('wmbus = "some"', "discovery.wmbus"),
        ("searches = 1", "discovery.searches"),
    ],
)
def test_bad_discovery_configuration_names_the_field(tmp_path: Path, snippet: str, field: str) -> None:
    base = write_config(tmp_path, gateway="gw-bad", url="mqtt://127.0.0.1:1883", meters=[]).read_text()
    with pytest.raises(GatewayConfigError) as caught:
        parse_config(f"{base}\n[discovery]\n{snippet}\n", base=tmp_path)
    assert caught.value.field == field, caught.value
