"""Radio meters at the edge, over real sockets: simulated OMS meters -> a simulated receiver stick on a
loopback TCP port -> the gateway agent's receivers -> its archive, and unlisted senders -> the
archive's discovered devices -> DISCOVERY through a real broker -> the head-end's pending devices."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import select

from openami.bus.memory import MemoryBus
from openami.edge.agent import GatewayAgent
from openami.edge.config import GatewayConfigError, load_config, parse_config
from openami.edge.wmbus import parse_radio_address
from openami.hes.gateway_link import GatewayLinkListener
from openami.hes.gateway_link_store import DiscoveredDevice
from openami.hes.wmbus_ingest import discovered_device
from openami.security.keyvault import KeyVault
from openami.simulator.wmbus_meter import SimulatedReceiver, SimulatedWmbusMeter
from openami.store import repositories as repo
from openami.store.engine import make_engine
from openami.store.migrate import upgrade
from openami.store.schema import pending_device
from openami.transports.mqtt_broker import EmbeddedBroker
from tests.edge.support import KEY, PREFIX, TENANT, eventually, free_port, write_config
from tests.edge.test_gateway_link import running

pytestmark = pytest.mark.timeout(60)

WATER_KEY = bytes.fromhex("11" * 16)
FAST = {"interval_s": 0.05, "jitter_s": 0.02}


def _config(directory: Path, url: str, receiver_port: int, *, gateway: str = "gw-radio") -> Path:
    """A gateway listening to one receiver: W-1 listed with the right key, W-2 with a wrong one."""
    path = write_config(directory, gateway=gateway, url=url, meters=[], mqtt_version="3.1.1")
    path.write_text(
        path.read_text()
        + f"""
[[meters]]
serial = "W-1"
protocol = "wmbus"
address = "wmbus://OAM/11111111"
keys = {{ encryption = "{WATER_KEY.hex()}" }}

[[meters]]
serial = "W-2"
protocol = "wmbus"
address = "wmbus://22222222"
keys = {{ encryption = "{"33" * 16}" }}

[[receivers]]
url = "wmbus+tcp://127.0.0.1:{receiver_port}"
"""
    )
    return path


def _meters() -> tuple[SimulatedWmbusMeter, SimulatedWmbusMeter, SimulatedWmbusMeter]:
    listed = SimulatedWmbusMeter("11111111", "water", key=WATER_KEY, **FAST)  # type: ignore[arg-type]
    wrong_key = SimulatedWmbusMeter("22222222", "water", key=bytes.fromhex("44" * 16), **FAST)  # type: ignore[arg-type]
    neighbour = SimulatedWmbusMeter("33333333", "heat", key=bytes(16), manufacturer="KAM", **FAST)  # type: ignore[arg-type]
    return listed, wrong_key, neighbour


async def test_listed_meters_are_archived_and_the_neighbour_is_discovered(tmp_path: Path) -> None:
    listed, wrong_key, neighbour = _meters()
    started = datetime.now(UTC)
    async with SimulatedReceiver([listed, wrong_key, neighbour]) as stick:
        port = await stick.serve_tcp()
        # No broker at this address: the gateway archives while its uplink is down.
        config = load_config(_config(tmp_path, f"mqtt://127.0.0.1:{free_port()}", port))
        async with running(GatewayAgent(config)) as agent:
            await agent.radio.wait_connected(5)
            await eventually(lambda: agent.radio.stats.telegrams >= 4, 10, "telegrams of W-1")
            await eventually(lambda: agent.archive.devices() != [], 5, "the neighbour archived")
            health = await agent.health()
            volumes = [r.value for r in agent.archive.readings("W-1") if r.channel == "volume"]
            assert agent.archive.readings("W-2") == []  # its key is wrong: nothing decoded
            devices = agent.archive.devices()
        ended = datetime.now(UTC)

    assert volumes == sorted(volumes) and volumes
    low, high = listed.register(started)[0] / 1000, listed.register(ended)[0] / 1000  # litres -> m3
    assert all(low - 1e-9 <= v <= high + 1e-9 for v in volumes), (low, volumes, high)

    assert [(d.protocol, d.ident) for d in devices] == [("wmbus", "33333333")]  # not W-1, not W-2
    device = devices[0]
    assert device.manufacturer == "KAM" and device.medium == "heat"
    assert device.address == "wmbus://KAM/33333333"
    assert parse_radio_address(device.address) == ("KAM", "33333333")  # usable as a meter address
    assert (device.version, device.device_type) == (neighbour.address.version, neighbour.address.device_type)
    assert device.rssi is not None and abs(device.rssi - neighbour.rssi_dbm) <= 2
    assert device.first_seen is not None and started.replace(microsecond=0) <= device.first_seen

    assert health["meters"] == 2 and health["wmbus_meters"] == 2
    assert health["wmbus_heard"] == 1  # W-1; W-2's telegrams do not decode
    assert health["receivers_connected"] == 1
    assert health["wmbus_telegrams"] >= 4 and health["wmbus_rejected"] >= 1
    assert health["discovered_devices"] == 0  # counted at the first report, and the link never came up


async def test_the_head_end_files_the_unlisted_meter_as_pending(tmp_path: Path) -> None:
    """Through the real link: the agent's DISCOVERY reaches the head-end's listener over a broker and
    ends up a pending device of that gateway, with the address the gateway would read it under."""
    engine = make_engine(f"sqlite:///{tmp_path / 'hes.sqlite3'}")
    upgrade(engine)
    with engine.begin() as conn:
        tenant_id = repo.tenants.create(conn, {"slug": TENANT, "name": "Acme"}).id
        gateway_id = repo.comm_devices.create(conn, tenant_id, {"ident": "gw-radio", "kind": "gateway"}).id
    vault = KeyVault(engine, bytes(32))
    vault.store_gateway_key(tenant_id, gateway_id, KEY)
    bus = MemoryBus()
    await bus.start()
    listed, _, neighbour = _meters()
    async with EmbeddedBroker("127.0.0.1", 0) as broker, SimulatedReceiver([listed, neighbour]) as stick:
        link = GatewayLinkListener(broker.url, PREFIX, bus, engine, vault, mqtt5=False)
        await link.start()
        try:
            port = await stick.serve_tcp()
            config = load_config(_config(tmp_path, broker.url, port))
            async with running(GatewayAgent(config)) as agent:

                def pending() -> list[tuple[str, str, str, str, str | None]]:
                    with engine.connect() as conn:
                        rows = conn.execute(
                            select(
                                pending_device.c.protocol,
                                pending_device.c.ident,
                                pending_device.c.address,
                                pending_device.c.manufacturer,
                                pending_device.c.medium,
                            ).where(pending_device.c.comm_device_id == gateway_id)
                        ).all()
                    return [tuple(row) for row in rows]

                await eventually(lambda: pending() != [], 15, "a pending device at the head-end")
                assert agent.discovery.stats.envelopes_sent >= 1
        finally:
            await link.stop()
            await bus.close()
    assert pending() == [("wmbus", "33333333", "wmbus://KAM/33333333", "KAM", "heat")]
    assert link.stats.accepted >= 1


def test_the_head_ends_discovered_device_agrees_with_the_gateways() -> None:
    """Both ends name a radio meter the same way (id, manufacturer, medium) for the pending table."""
    neighbour = _meters()[2]
    assert discovered_device(neighbour.address) == DiscoveredDevice(
        "wmbus", "33333333", neighbour.link_address.hex().upper(), "KAM", "heat"
    )


@pytest.mark.parametrize(
    ("snippet", "field"),
    [
        ('[[receivers]]\nurl = "wmbus+udp://127.0.0.1:1"\n', "receivers[0].url"),
        ('[[receivers]]\nurl = "wmbus+tcp://127.0.0.1"\n', "receivers[0].url"),
        ('[[receivers]]\nurl = "wmbus+tcp://h:1"\nbaud = 9600\n', "receivers[0].baud"),
        (
            '[[receivers]]\nurl = "wmbus+tcp://h:1"\n[[receivers]]\nurl = "wmbus+tcp://h:1"\n',
            "receivers[1].url",
        ),
        ('[[meters]]\nserial = "W"\nprotocol = "wmbus"\naddress = "wmbus://1234"\n', "meters[0].address"),
        (
            '[[meters]]\nserial = "W"\nprotocol = "wmbus"\naddress = "wmbus://K1M/12345678"\n',
            "meters[0].address",
        ),
        (
            '[[meters]]\nserial = "W"\nprotocol = "wmbus"\naddress = "wmbus://12345678"\n'
            f'keys = {{ encryption = "{"00" * 32}" }}\n',
            "meters[0].keys.encryption",
        ),
        (
            '[[meters]]\nserial = "A"\nprotocol = "wmbus"\naddress = "wmbus://KAM/12345678"\n'
            '[[meters]]\nserial = "B"\nprotocol = "wmbus"\naddress = "wmbus://12345678"\n',
            "meters[1].address",
        ),
    ],
)
def test_bad_radio_configuration_names_the_field(tmp_path: Path, snippet: str, field: str) -> None:
    base = write_config(tmp_path, gateway="gw-bad", url="mqtt://127.0.0.1:1883", meters=[]).read_text()
    with pytest.raises(GatewayConfigError) as caught:
        parse_config(base + "\n" + snippet, base=tmp_path)
    assert caught.value.field == field, caught.value
