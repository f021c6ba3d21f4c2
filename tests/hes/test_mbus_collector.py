"""M-Bus meters read by the head-end through a simulated M-Bus-to-TCP converter, into the store."""

from __future__ import annotations

import pytest
from sqlalchemy import insert, select

from openami.app import Platform
from openami.hes.mbus_collector import MBUS_PROTOCOL, channel_codes, load_mbus_targets
from openami.protocols.mbus import DataRecord
from openami.security.bootstrap import create_tenant_with_admin
from openami.simulator.mbus_meter import MbusBusSimulator
from openami.store.schema import channel, comm_device, meter, register_read

pytestmark = pytest.mark.timeout(60)


def _register(platform: Platform, port: int) -> None:
    tenant_id = create_tenant_with_admin(platform.engine, "mb", "MB", "UTC", "admin", "pw-pw-pw-1").tenant_id
    meters = (
        ("HEAT-12345678", "heat", "primary=1"),
        ("WATER-87654321", "water", "secondary=87654321"),
        ("WATER-NONE", "water", "primary=9"),  # nobody answers at 9
        ("BAD-ADDRESS", "water", "primary=1&secondary=12345678"),
    )
    with platform.engine.begin() as conn:
        for serial, medium, query in meters:
            device = conn.execute(
                insert(comm_device)
                .values(
                    tenant_id=tenant_id,
                    ident=f"CONV-{serial}",
                    kind="gateway",
                    protocol="mbus",
                    address=f"mbus+tcp://127.0.0.1:{port}?{query}",
                )
                .returning(comm_device.c.id)
            ).scalar_one()
            conn.execute(
                insert(meter).values(
                    tenant_id=tenant_id,
                    serial=serial,
                    medium=medium,
                    protocol=MBUS_PROTOCOL,
                    comm_device_id=device,
                )
            )


async def test_mbus_meters_are_read_into_the_store(platform: Platform) -> None:
    async with MbusBusSimulator() as bus:
        _register(platform, bus.port)
        targets, skipped = load_mbus_targets(platform.engine)
        assert [t.serial for t in targets] == ["HEAT-12345678", "WATER-87654321", "WATER-NONE"]
        assert [serial for serial, _ in skipped] == ["BAD-ADDRESS"]
        assert platform.mbus is not None
        platform.mbus.timeout_s = 0.5
        report = await platform.mbus.collect_all()
    assert (report.succeeded, report.failed) == (2, 1)
    assert list(report.errors) == ["MbusTimeout"]
    await platform.settle()
    with platform.engine.connect() as conn:
        stored = dict(
            conn.execute(
                select(meter.c.serial + ":" + channel.c.code, register_read.c.value)
                .join(channel, channel.c.meter_id == meter.c.id)
                .join(register_read, register_read.c.channel_id == channel.c.id)
            ).all()
        )
    assert stored["HEAT-12345678:energy"] == 123456 * 1000.0  # 123456 kWh in Wh
    assert stored["WATER-87654321:volume"] == pytest.approx(4.242)  # 4242 l in m3


def test_channel_codes_name_records_stably() -> None:
    def rec(quantity: str, **fields: object) -> DataRecord:
        base: dict[str, object] = {"function": "instantaneous", "storage": 0, "tariff": 0, "subunit": 0}
        base.update(fields)
        return DataRecord(1.0, "Wh", quantity, dif=0, **base)  # type: ignore[arg-type]

    records = [
        rec("energy"),
        rec("energy", tariff=1),
        rec("power", function="maximum"),
        rec("volume"),
        rec("volume"),
        rec("energy", storage=1),
        DataRecord("ABC", None, "fabrication_no", "instantaneous", 0, 0, 0, dif=0),
    ]
    assert [code for code, _ in channel_codes(records)] == [
        "energy",
        "energy:t1",
        "power:maximum",
        "volume",
        "volume#2",
    ]
