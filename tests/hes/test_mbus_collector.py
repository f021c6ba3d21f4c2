"""M-Bus meters read by the head-end through a simulated M-Bus-to-TCP converter or a serial line (a
pty), into the store."""

from __future__ import annotations

import asyncio
import os

import pytest
from sqlalchemy import insert, select

from openami.app import Platform
from openami.hes.mbus_collector import MBUS_PROTOCOL, load_mbus_targets
from openami.protocols.mbus import DataRecord
from openami.protocols.mbus.channels import channel_codes
from openami.security.bootstrap import create_tenant_with_admin
from openami.simulator.mbus_meter import MbusBusSimulator
from openami.store.schema import channel, comm_device, meter, register_read

pytestmark = pytest.mark.timeout(60)


def _register(platform: Platform, port: int) -> None:
    meters = (
        ("HEAT-12345678", "heat", "primary=1"),
        ("WATER-87654321", "water", "secondary=87654321"),
        ("WATER-NONE", "water", "primary=9"),  # nobody answers at 9
        ("BAD-ADDRESS", "water", "primary=1&secondary=12345678"),
    )
    _insert(platform, [(s, m, f"mbus+tcp://127.0.0.1:{port}?{q}") for s, m, q in meters])


def _insert(platform: Platform, meters: list[tuple[str, str, str]]) -> None:
    tenant_id = create_tenant_with_admin(platform.engine, "mb", "MB", "UTC", "admin", "pw-pw-pw-1").tenant_id
    with platform.engine.begin() as conn:
        for serial, medium, address in meters:
            device = conn.execute(
                insert(comm_device)
                .values(
                    tenant_id=tenant_id,
                    ident=f"CONV-{serial}",
                    kind="gateway",
                    protocol="mbus",
                    address=address,
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


def _stored(platform: Platform) -> dict[str, float]:
    with platform.engine.connect() as conn:
        return dict(
            conn.execute(
                select(meter.c.serial + ":" + channel.c.code, register_read.c.value)
                .join(channel, channel.c.meter_id == meter.c.id)
                .join(register_read, register_read.c.channel_id == channel.c.id)
            ).all()
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
    stored = _stored(platform)
    assert stored["HEAT-12345678:energy"] == 123456 * 1000.0  # 123456 kWh in Wh
    assert stored["WATER-87654321:volume"] == pytest.approx(4.242)  # 4242 l in m3


async def test_mbus_meters_on_a_serial_line(platform: Platform) -> None:
    """A level converter's tty (a pty here), meters on it read in turn; a wrong rate or a missing tty
    fails only its meters, an unusable address is skipped."""
    simulator = MbusBusSimulator()
    master, slave = os.openpty()
    task = asyncio.create_task(simulator.serve_fd(master))
    tty = os.ttyname(slave)
    try:
        _insert(
            platform,
            [
                ("HEAT-12345678", "heat", f"mbus+serial://{tty}?baud=2400&primary=1"),
                ("WATER-87654321", "water", f"mbus+serial://{tty}?secondary=87654321"),  # 2400 by default
                ("WATER-12345699", "water", f"mbus+serial://{tty}?baud=2400&primary=2"),
                ("WATER-FAST", "water", f"mbus+serial://{tty}?baud=9600&primary=5"),  # it listens at 2400
                ("WATER-GONE", "water", "mbus+serial:///dev/nonexistent-tty?primary=1"),
                ("BAD-BAUD", "water", f"mbus+serial://{tty}?baud=1234&primary=3"),
                ("BAD-HOST", "water", f"mbus+serial://host{tty}?primary=3"),
            ],
        )
        targets, skipped = load_mbus_targets(platform.engine)
        assert [(t.bus, t.baudrate) for t in targets[:2]] == [(tty, 2400), (tty, 2400)]
        assert [serial for serial, _ in skipped] == ["BAD-BAUD", "BAD-HOST"]
        assert platform.mbus is not None
        platform.mbus.timeout_s = 0.3
        report = await platform.mbus.collect_all()
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        os.close(slave)
    assert (report.succeeded, report.failed) == (3, 2)
    assert report.errors == {"MbusTimeout": 1, "MbusUnreachable": 1}
    await platform.settle()
    stored = _stored(platform)
    assert stored["HEAT-12345678:energy"] == 123456 * 1000.0
    assert stored["WATER-87654321:volume"] == pytest.approx(4.242)
    assert stored["WATER-12345699:volume"] == pytest.approx(98.765)


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
        rec("energy", function="value_during_error"),
        DataRecord("ABC", None, "fabrication_no", "instantaneous", 0, 0, 0, dif=0),
        DataRecord(12345678, None, "fabrication_no", "instantaneous", 0, 0, 0, dif=0),
    ]
    assert [code for code, _ in channel_codes(records)] == [
        "energy",
        "energy:t1",
        "power:maximum",
        "volume",
        "volume#2",
    ]
