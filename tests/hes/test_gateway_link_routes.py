"""Mesh routes in HEALTH envelopes, through the real gateway link: a gateway played with real envelopes
over a real MQTT broker (embedded amqtt and Mosquitto), the listener in the platform, the route history
in the store (SQLite and PostgreSQL) (``docs/concepts/topology.md``)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from openami.app import Platform
from openami.config import Settings
from openami.protocols.edge import Compression, Kind
from openami.store import repositories as repo
from openami.store.repositories import MeterRoute
from openami.store.schema import gateway_link, meter_route
from tests.conftest import postgres_schema_url
from tests.hes import test_gateway_link as link_tests
from tests.hes.test_gateway_link import Gateway, _handled, _link, _provision, _rejected

# The topic prefix and platform fixtures of the gateway link's own tests.
prefix = link_tests.prefix
platform = link_tests.platform


@pytest.fixture(
    params=[
        "embedded",
        pytest.param("mosquitto", marks=pytest.mark.mosquitto),
        pytest.param("postgres", marks=pytest.mark.postgres),
    ]
)
def settings(request: pytest.FixtureRequest, tmp_path: Path, prefix: str) -> Iterator[Settings]:
    """As the gateway link's tests have it (embedded broker, or Mosquitto), and once more on the
    embedded broker with PostgreSQL: the route history is written from the listener's threads."""
    common: dict[str, Any] = {
        "data_dir": tmp_path,
        "database_url": f"sqlite:///{tmp_path / 'hes.sqlite3'}",
        "mqtt_topic_prefix": prefix,
        "dlms_push_port": 0,
        "poll_interval_s": 0,
        "ingest_flush_ms": 20,
    }
    if request.param == "mosquitto":
        yield Settings(mqtt_url=request.getfixturevalue("mosquitto_url"), **common)
        return
    if request.param == "postgres":
        with postgres_schema_url() as url:
            yield Settings(mqtt_url="embedded", mqtt_embedded_port=0, **{**common, "database_url": url})
        return
    yield Settings(mqtt_url="embedded", mqtt_embedded_port=0, **common)


HEALTH = {"uptime_s": 600, "backlog_readings": 0, "unacked_batches": 0, "meters": 3}


@pytest.fixture
async def mesh(platform: Platform, prefix: str) -> AsyncIterator[tuple[Gateway, dict[str, int]]]:
    """GW-1 (with its link key) and its meters MB-1, MB-2; concentrator C-1 under GW-1 with MB-3; MB-9
    on GW-2."""
    ids = _provision(platform)
    with platform.engine.begin() as conn:
        ids["C-1"] = repo.comm_devices.create(
            conn, ids["tenant"], {"ident": "C-1", "kind": "concentrator", "parent_id": ids["GW-1"]}
        ).id
        for serial, device in (("MB-3", ids["C-1"]), ("MB-9", ids["GW-2"])):
            values = {"serial": serial, "medium": "heat", "protocol": "mbus", "comm_device_id": device}
            ids[serial] = repo.meters.create(conn, ids["tenant"], values).id
    async with Gateway(platform.mqtt_url, prefix) as gw:
        yield gw, ids


def _history(platform: Platform, meter_id: int) -> list[MeterRoute]:
    with platform.engine.connect() as conn:
        rows = conn.execute(select(meter_route).where(meter_route.c.meter_id == meter_id).order_by("id"))
        return [MeterRoute(**row._mapping) for row in rows]


def _health(routes: list[dict[str, Any]]) -> dict[str, Any]:
    return {**HEALTH, "routes": routes}


async def test_health_routes_are_recorded_once_and_changes_close_and_open(
    platform: Platform, mesh: tuple[Gateway, dict[str, int]]
) -> None:
    gateway, ids = mesh
    link = _link(platform)
    routes: list[dict[str, Any]] = [
        {"meter": "MB-1", "via": ["MB-2", "RPT-7"], "rssi": -71, "snr": 7.5},
        {"meter": "MB-2", "via": [], "rssi": -58},
        {"meter": "MB-3", "via": ["MB-1"], "hops": 2},
        {"meter": "MB-404", "via": []},  # unknown: a problem, nothing stored
        {"meter": "MB-9", "via": []},  # behind GW-2, not GW-1
        {"meter": "MB-2", "via": ["X"]},  # listed twice
        {"meter": "MB-5", "via": "RPT-7"},  # malformed
    ]
    await gateway.send(Kind.HEALTH, 9, _health(routes), compression=Compression.ZLIB)
    await _handled(link, 1)
    assert link.stats.accepted == 1
    mb1 = _history(platform, ids["MB-1"])
    assert [(r.source, r.hops, r.until is None) for r in mb1] == [
        ("registration", None, False),
        ("gateway", ["MB-2", "RPT-7"], True),
    ]
    assert mb1[0].until == mb1[1].since
    assert (mb1[1].comm_device_id, mb1[1].quality) == (ids["GW-1"], {"rssi": -71.0, "snr": 7.5})
    assert _history(platform, ids["MB-2"])[-1].hops == []
    (_, mb3) = _history(platform, ids["MB-3"])
    assert (mb3.comm_device_id, mb3.hops, mb3.quality) == (ids["C-1"], ["MB-1"], {"hops": 2})  # via C-1
    assert len(_history(platform, ids["MB-9"])) == 1  # untouched
    with platform.engine.connect() as conn:
        stored = conn.execute(select(gateway_link.c.health)).scalars().all()
    assert HEALTH in stored  # the health without its routes (they are in meter_route)

    (dead,) = _rejected(platform.engine)
    assert dead.reason.startswith("gateway link HEALTH 9: 4 routes not used: ")
    listing = bytes(dead.payload).decode()
    assert "meter 'MB-404' is unknown" in listing
    assert f"meter 'MB-9' is registered on device {ids['GW-2']}, not under gateway 'GW-1'" in listing
    assert "routes[5] dropped: meter 'MB-2' listed twice" in listing
    assert "routes[6] dropped: via" in listing

    # The same routes again (another quality): nothing new. A changed route: closed and opened.
    same = [{**route, "rssi": -90} for route in routes[:3]]
    await gateway.send(Kind.HEALTH, 10, _health(same))
    await _handled(link, 2)
    assert [len(_history(platform, ids[s])) for s in ("MB-1", "MB-2", "MB-3")] == [2, 2, 2]
    await gateway.send(Kind.HEALTH, 11, _health([{"meter": "MB-1", "via": ["RPT-8"], "rssi": -80}]))
    await _handled(link, 3)
    mb1 = _history(platform, ids["MB-1"])
    assert [r.hops for r in mb1] == [None, ["MB-2", "RPT-7"], ["RPT-8"]]
    assert mb1[1].until == mb1[2].since and mb1[2].until is None
    assert mb1[2].since > mb1[1].since
    # A HEALTH without routes changes nothing; no further dead letters were needed.
    await gateway.send(Kind.HEALTH, 12, HEALTH)
    await _handled(link, 4)
    assert len(_history(platform, ids["MB-1"])) == 3
    assert len(_rejected(platform.engine)) == 1
    assert (link.stats.accepted, link.stats.refused, link.stats.rejected) == (4, 0, 0)


async def test_routes_that_are_no_list_are_a_dead_letter_and_the_health_is_kept(
    platform: Platform, mesh: tuple[Gateway, dict[str, int]]
) -> None:
    gateway, ids = mesh
    await gateway.send(Kind.HEALTH, 20, _health({"MB-1": []}))  # type: ignore[arg-type]
    await _handled(_link(platform), 1)
    (dead,) = _rejected(platform.engine)
    assert "'routes' must be a list" in dead.reason
    assert len(_history(platform, ids["MB-1"])) == 1
    with platform.engine.connect() as conn:
        assert conn.execute(select(gateway_link.c.health)).scalars().all().count(HEALTH) == 1
