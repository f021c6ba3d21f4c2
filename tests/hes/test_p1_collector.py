"""Consumer-port meters (DSMR P1, encrypted P1, SML) read by the head-end from simulators over TCP, into
the store, through the platform; one unreachable meter fails alone."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import insert, select

from openami.app import Platform
from openami.hes.p1_collector import (
    DSMR_PROTOCOL,
    SML_PROTOCOL,
    P1Collector,
    load_p1_targets,
    telegram_series,
)
from openami.protocols.dsmr import P1Keys, parse_telegram
from openami.security.bootstrap import create_tenant_with_admin
from openami.simulator.p1_meter import P1Encryption, SimulatedP1Meter
from openami.simulator.push_port import PushPortServer
from openami.simulator.sml_meter import SimulatedSmlMeter
from openami.store.schema import channel, comm_device, meter, register_read
from tests.drivers.p1.support import closed_port

pytestmark = pytest.mark.timeout(60)
READ_AT = datetime(2026, 5, 4, 3, 2, 1, tzinfo=UTC)  # the collector's clock: stamps values without one
SML_AT = datetime(2025, 8, 9, 10, 11, 12, tzinfo=UTC)  # the eHZ's frozen model time
V22_AT = datetime(2025, 11, 12, 13, 14, 15, tzinfo=UTC)  # the DSMR 2.2 meter's
TITLE = b"OAMLUX01"
KEYS = P1Keys(
    bytes.fromhex("00112233445566778899AABBCCDDEEFF"), bytes.fromhex("0F0E0D0C0B0A09080706050403020100")
)


def _register(platform: Platform, meters: list[tuple[str, str, str]]) -> tuple[int, dict[str, int]]:
    tenant_id = create_tenant_with_admin(platform.engine, "p1", "P1", "UTC", "admin", "pw-pw-pw-1").tenant_id
    ids = {}
    with platform.engine.begin() as conn:
        for serial, protocol, address in meters:
            device = conn.execute(
                insert(comm_device)
                .values(
                    tenant_id=tenant_id,
                    ident=f"DONGLE-{serial}",
                    kind="modem",
                    protocol=protocol,
                    address=address,
                )
                .returning(comm_device.c.id)
            ).scalar_one()
            ids[serial] = conn.execute(
                insert(meter)
                .values(
                    tenant_id=tenant_id,
                    serial=serial,
                    medium="electricity",
                    protocol=protocol,
                    comm_device_id=device,
                )
                .returning(meter.c.id)
            ).scalar_one()
    return tenant_id, ids


def _stored(platform: Platform) -> dict[str, dict[str, list[tuple[datetime, float]]]]:
    with platform.engine.connect() as conn:
        rows = conn.execute(
            select(meter.c.serial, channel.c.code, channel.c.unit, register_read.c.ts, register_read.c.value)
            .join(channel, channel.c.meter_id == meter.c.id)
            .join(register_read, register_read.c.channel_id == channel.c.id)
            .order_by(register_read.c.ts)
        ).all()
    out: dict[str, dict[str, list[tuple[datetime, float]]]] = {}
    for row in rows:
        out.setdefault(row.serial, {}).setdefault(row.code, []).append((row.ts, row.value))
    return out


@contextlib.asynccontextmanager
async def _serving(*meters: SimulatedP1Meter | SimulatedSmlMeter) -> AsyncIterator[list[int]]:
    async with contextlib.AsyncExitStack() as stack:
        servers = [await stack.enter_async_context(PushPortServer(m)) for m in meters]
        yield [s.port for s in servers]


async def test_consumer_port_meters_are_read_into_the_store(platform: Platform) -> None:
    v5 = SimulatedP1Meter(1, interval_s=0.05)
    v22 = SimulatedP1Meter(2, version="2.2", interval_s=0.05, now=lambda: V22_AT)
    encrypted = SimulatedP1Meter(3, interval_s=0.05, encryption=P1Encryption(TITLE, KEYS))
    ehz = SimulatedSmlMeter(4, interval_s=0.05, now=lambda: SML_AT)
    async with _serving(v5, v22, encrypted, ehz) as (p5, p22, penc, psml):
        tenant_id, ids = _register(
            platform,
            [
                ("P1-V5", DSMR_PROTOCOL, f"dsmr+tcp://127.0.0.1:{p5}"),
                ("P1-V22", DSMR_PROTOCOL, f"dsmr+tcp://127.0.0.1:{p22}"),
                ("P1-LUX", DSMR_PROTOCOL, f"dsmr+tcp://127.0.0.1:{penc}?encrypted=1"),
                ("EHZ-1", SML_PROTOCOL, f"sml+tcp://127.0.0.1:{psml}"),
                ("P1-GONE", DSMR_PROTOCOL, f"dsmr+tcp://127.0.0.1:{closed_port()}"),
                ("P1-NOKEY", DSMR_PROTOCOL, f"dsmr+tcp://127.0.0.1:{p5}?encrypted=1"),
                ("BAD-ADDRESS", SML_PROTOCOL, "sml+tcp://127.0.0.1"),
                ("BAD-OPTION", SML_PROTOCOL, f"sml+tcp://127.0.0.1:{psml}?encrypted=1"),
            ],
        )
        assert platform.vault is not None
        assert KEYS.authentication_key is not None
        lux = ids["P1-LUX"]
        platform.vault.store(
            tenant_id, system_title=TITLE, meter_id=lux, kind="ek", secret=KEYS.encryption_key
        )
        platform.vault.store(
            tenant_id, system_title=TITLE, meter_id=lux, kind="ak", secret=KEYS.authentication_key
        )
        targets, skipped = load_p1_targets(platform.engine)
        assert [t.serial for t in targets] == ["P1-V5", "P1-V22", "P1-LUX", "P1-GONE", "P1-NOKEY", "EHZ-1"]
        assert sorted(serial for serial, _ in skipped) == ["BAD-ADDRESS", "BAD-OPTION"]
        collector = P1Collector(
            platform.engine,
            platform.bus,
            vault=platform.vault,
            connect_s=1.0,
            telegram_s=2.0,
            now=lambda: READ_AT,
        )
        report = await collector.collect_all()
    assert (report.meters, report.succeeded, report.failed) == (6, 4, 2)
    assert report.errors == {"P1Unreachable": 1, "MissingKey": 1}
    outcomes = {o.serial: o for o in report.outcomes}
    assert outcomes["P1-GONE"].error is not None and outcomes["P1-GONE"].error.startswith("P1Unreachable:")
    await platform.settle()
    stored = _stored(platform)
    assert set(stored) == {"P1-V5", "P1-V22", "P1-LUX", "EHZ-1"}

    # DSMR 5 (plain and encrypted): every value at the telegram's own clock, the gas at its capture time.
    for serial, sim in (("P1-V5", v5), ("P1-LUX", encrypted)):
        channels = stored[serial]
        ((stamp, _),) = channels["1-0:1.8.1"]
        assert stamp != READ_AT and abs(stamp - datetime.now(UTC)) < timedelta(minutes=1)
        expected = sim.measurements(stamp)
        assert set(channels) == set(expected)
        for code, measured in expected.items():
            assert channels[code] == [(measured.timestamp, pytest.approx(measured.value))], (serial, code)
        assert channels["0-1:24.2.1"][0][0] == sim.gas_capture(stamp)

    # DSMR 2.2 has no clock: electricity at the read time; the gas keeps its own (hourly) capture time.
    channels = stored["P1-V22"]
    expected = v22.measurements(V22_AT)
    assert set(channels) == set(expected)
    for code, measured in expected.items():
        assert channels[code] == [(measured.timestamp or READ_AT, pytest.approx(measured.value))], code
    assert channels["0-1:24.3.0"][0][0] == datetime(2025, 11, 12, 13, tzinfo=UTC)

    # SML: the eHZ sends a second counter, not a clock, so values carry the read time.
    channels = stored["EHZ-1"]
    assert channels == {
        code: [(READ_AT, pytest.approx(m.value))] for code, m in ehz.measurements(SML_AT).items()
    }


def test_telegram_series_keep_sub_meter_values_on_the_meter_read() -> None:
    sim = SimulatedP1Meter(5)
    at = datetime(2025, 3, 3, 3, 3, 3, tzinfo=UTC)
    series = telegram_series(parse_telegram(sim.telegram(at)), "E-1", at + timedelta(seconds=1))
    assert {s.meter for s in series} == {"E-1"}
    assert all(s.kind == "register" and len(s.points) == 1 for s in series)
    units = {s.channel: s.unit for s in series}
    assert units["1-0:1.8.1"] == "Wh" and units["1-0:32.7.0"] == "V" and units["0-1:24.2.1"] == "m3"
    assert units["1-0:31.7.0"] == "A" and units["1-0:1.7.0"] == "W"
