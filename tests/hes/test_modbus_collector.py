"""Modbus meters read by the head-end: registered meters behind a simulated gateway, into the store."""

from __future__ import annotations

import pytest
from sqlalchemy import insert, select

from openami.app import Platform
from openami.drivers.modbus.models import HEAT, SDM630
from openami.hes.modbus_collector import MODBUS_PROTOCOL, load_modbus_targets
from openami.security.bootstrap import create_tenant_with_admin
from openami.simulator.modbus_meter import ModbusSimulator, SimulatedModbusMeter
from openami.store.schema import channel, comm_device, meter, register_read

pytestmark = pytest.mark.timeout(60)


def _register(platform: Platform, port: int) -> None:
    tenant_id = create_tenant_with_admin(platform.engine, "mb", "MB", "UTC", "admin", "pw-pw-pw-1").tenant_id
    with platform.engine.begin() as conn:
        gateway = conn.execute(
            insert(comm_device)
            .values(
                tenant_id=tenant_id,
                ident="GW-MODBUS",
                kind="gateway",
                protocol="modbus",
                address=f"modbus+tcp://127.0.0.1:{port}?unit=1",
            )
            .returning(comm_device.c.id)
        ).scalar_one()
        heat_gateway = conn.execute(
            insert(comm_device)
            .values(
                tenant_id=tenant_id,
                ident="GW-MODBUS-2",
                kind="gateway",
                protocol="modbus",
                address=f"modbus+tcp://127.0.0.1:{port}?unit=2",
            )
            .returning(comm_device.c.id)
        ).scalar_one()
        for serial, medium, model, device in (
            ("SDM-1", "electricity", SDM630.model, gateway),
            ("HEAT-1", "heat", HEAT.model, heat_gateway),
            ("ODD-1", "electricity", "no-such-model", gateway),
        ):
            conn.execute(
                insert(meter).values(
                    tenant_id=tenant_id,
                    serial=serial,
                    medium=medium,
                    protocol=MODBUS_PROTOCOL,
                    model=model,
                    comm_device_id=device,
                )
            )


async def test_modbus_meters_are_read_into_the_store(platform: Platform) -> None:
    meters = {
        1: SimulatedModbusMeter(SDM630, {"1-0:1.8.0": lambda: 5_000_000.0, "1-0:32.7.0": lambda: 230.0}),
        2: SimulatedModbusMeter(HEAT, {"6-0:1.0.0": lambda: 9_000_000.0, "6-0:10.0.0": lambda: 65.5}),
    }
    async with ModbusSimulator("127.0.0.1", 0, meters) as gateway:
        _register(platform, gateway.port)
        targets, skipped = load_modbus_targets(platform.engine)
        assert [t.serial for t in targets] == ["SDM-1", "HEAT-1"]
        assert skipped == [("ODD-1", "no register map for model 'no-such-model'")]
        assert platform.modbus is not None
        report = await platform.modbus.collect_all()
    assert (report.succeeded, report.failed) == (2, 0)
    assert report.readings == len(SDM630.points) + len(HEAT.points)
    await platform.settle()
    with platform.engine.connect() as conn:
        stored = dict(
            conn.execute(
                select(meter.c.serial + ":" + channel.c.code, register_read.c.value)
                .join(channel, channel.c.meter_id == meter.c.id)
                .join(register_read, register_read.c.channel_id == channel.c.id)
            ).all()
        )
    assert stored["SDM-1:1-0:1.8.0"] == pytest.approx(5_000_000.0)
    assert stored["SDM-1:1-0:32.7.0"] == pytest.approx(230.0)
    assert stored["HEAT-1:6-0:1.0.0"] == 9_000_000.0
    assert stored["HEAT-1:6-0:10.0.0"] == pytest.approx(65.5)


async def test_an_unreachable_gateway_fails_its_meters_only(platform: Platform, free_port: int) -> None:
    _register(platform, free_port)
    assert platform.modbus is not None
    platform.modbus.timeout_s = 0.5
    report = await platform.modbus.collect_all()
    assert (report.succeeded, report.failed) == (0, 2)
    assert list(report.errors) == ["ModbusUnreachable"]
