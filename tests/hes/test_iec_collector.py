"""IEC 62056-21 meters read by the head-end through simulated RS-485-to-TCP converters, into the store."""

from __future__ import annotations

import asyncio
import itertools
import time
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from sqlalchemy import insert, select

from openami.app import Platform
from openami.hes.iec_collector import (
    IEC_PROTOCOL,
    IecCollector,
    IecIdentityMismatch,
    check_identity,
    load_iec_targets,
    register_values,
)
from openami.protocols.iec62056_21 import parse_readout
from openami.security.bootstrap import create_tenant_with_admin
from openami.simulator.iec62056_21_meter import BusSession, IecMeterServer, SimulatedIecMeter
from openami.store.schema import channel, comm_device, meter, register_read

pytestmark = pytest.mark.timeout(60)

METER_CLOCK = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
READ_AT = datetime(2024, 5, 2, 8, 30, tzinfo=UTC)
CURRENT = {
    "1.8.0": "1-0:1.8.0",
    "1.8.1": "1-0:1.8.1",
    "1.8.2": "1-0:1.8.2",
    "2.8.0": "1-0:2.8.0",
    "16.7.0": "1-0:16.7.0",
    "32.7.0": "1-0:32.7.0",
    "31.7.0": "1-0:31.7.0",
}
SCALE = {"kWh": (1000, "Wh"), "kW": (1000, "W"), "V": (1, "V"), "A": (1, "A")}


def _meter(serial: str, address: str = "", seed: int = 0) -> SimulatedIecMeter:
    return SimulatedIecMeter(serial, address=address, seed=seed, now=lambda: METER_CLOCK)


def _expected(sim: SimulatedIecMeter) -> dict[str, tuple[float, str]]:
    """What the meter prints, scaled by hand to base units: the simulator's own register texts."""
    out = {}
    for address, text in sim.registers(METER_CLOCK).items():
        if address in CURRENT:
            number, unit = text.split("*")
            factor, base = SCALE[unit]
            out[CURRENT[address]] = (float(Decimal(number) * factor), base)
    return out


def _register(platform: Platform, rows: list[tuple[str, str]]) -> None:
    """(serial, converter address) per meter, each with a comm device of its own."""
    tenant_id = create_tenant_with_admin(platform.engine, "ie", "IE", "UTC", "admin", "pw-pw-pw-1").tenant_id
    with platform.engine.begin() as conn:
        for index, (serial, address) in enumerate(rows):
            device = conn.execute(
                insert(comm_device)
                .values(
                    tenant_id=tenant_id,
                    ident=f"CONV-{index}",
                    kind="gateway",
                    protocol="iec",
                    address=address,
                )
                .returning(comm_device.c.id)
            ).scalar_one()
            conn.execute(
                insert(meter).values(
                    tenant_id=tenant_id,
                    serial=serial,
                    medium="electricity",
                    protocol=IEC_PROTOCOL,
                    comm_device_id=device,
                )
            )


def _meter_ids(platform: Platform) -> dict[str, int]:
    with platform.engine.connect() as conn:
        return {row.serial: row.id for row in conn.execute(select(meter.c.serial, meter.c.id))}


def _stored(platform: Platform) -> dict[str, tuple[float, str, datetime]]:
    with platform.engine.connect() as conn:
        rows = conn.execute(
            select(meter.c.serial, channel.c.code, register_read.c.value, channel.c.unit, register_read.c.ts)
            .join(channel, channel.c.meter_id == meter.c.id)
            .join(register_read, register_read.c.channel_id == channel.c.id)
        ).all()
    return {f"{r.serial}:{r.code}": (r.value, r.unit, r.ts) for r in rows}


async def test_iec_meters_are_read_into_the_store(platform: Platform, free_port: int) -> None:
    bus = [
        _meter("11111111", "11111111", 1),
        _meter("22222222", "22222222", 2),
        _meter("33333333", "33333333", 3),
    ]
    alone = _meter("00071234567", seed=4)  # pads its number: the registered serial has no zeros
    async with IecMeterServer(bus) as multidrop, IecMeterServer(alone) as single:
        line = f"iec+tcp://127.0.0.1:{multidrop.port}"
        _register(
            platform,
            [
                ("11111111", f"{line}?address=11111111"),
                ("22222222", f"{line}?address=22222222&switch=1&baud=4800"),
                ("44444444", f"{line}?address=33333333"),  # wired to the wrong address: 33333333 answers
                ("71234567", f"iec+tcp://127.0.0.1:{single.port}?baud=300"),
                ("UNREACHABLE-1", f"iec+tcp://127.0.0.1:{free_port}"),
                ("NO-PORT", "iec+tcp://127.0.0.1?address=1"),
                ("BAD-BAUD", f"{line}?address=55555555&baud=1234"),
                ("BAD-DEVICE", f"{line}?address=a/b"),
                ("NO-DEVICE", line),  # shares the converter, so /?! would be answered by every meter
            ],
        )
        targets, skipped = load_iec_targets(platform.engine)
        assert [t.serial for t in targets] == [
            "11111111",
            "22222222",
            "44444444",
            "71234567",
            "UNREACHABLE-1",
        ]
        reasons = dict(skipped)
        assert list(reasons) == ["NO-PORT", "BAD-BAUD", "BAD-DEVICE", "NO-DEVICE"]
        assert "baud must be one of" in reasons["BAD-BAUD"] and "each needs ?address=" in reasons["NO-DEVICE"]
        assert targets[1].switch and targets[1].max_baudrate == 4800 and targets[1].line_baudrate == 300
        # A job's batch loads only its own meters, and still sees the line a device-less one shares.
        ids = _meter_ids(platform)
        batch, batch_skipped = load_iec_targets(platform.engine, [ids["11111111"], ids["71234567"]])
        assert ([t.serial for t in batch], batch_skipped) == (["11111111", "71234567"], [])
        batch, batch_skipped = load_iec_targets(platform.engine, [ids["NO-DEVICE"], ids["71234567"]])
        assert [t.serial for t in batch] == ["71234567"] and [s for s, _ in batch_skipped] == ["NO-DEVICE"]

        collector = IecCollector(
            platform.engine, platform.bus, timeout_s=0.5, readout_s=5, now=lambda: READ_AT
        )
        report = await collector.collect_all()
    assert (report.meters, report.succeeded, report.failed) == (5, 3, 2)
    assert report.errors == {"IecIdentityMismatch": 1, "Iec62056Unreachable": 1}
    failed = {o.serial: o.error for o in report.outcomes if not o.ok}
    assert "'33333333', not '44444444'" in (failed["44444444"] or "")
    assert report.readings == 3 * len(CURRENT)

    await platform.settle()
    stored = _stored(platform)
    for serial, sim in (("11111111", bus[0]), ("22222222", bus[1]), ("71234567", alone)):
        mine = {key.split(":", 1)[1]: value for key, value in stored.items() if key.startswith(f"{serial}:")}
        assert set(mine) == set(CURRENT.values())  # no text, clock or serial data sets
        for code, (value, unit) in _expected(sim).items():
            stored_value, stored_unit, stamp = mine[code]
            assert (stored_value, stored_unit) == (pytest.approx(value), unit), code  # type: ignore[comparison-overlap]
            assert stamp == READ_AT  # the head-end's clock, not the meter's 0.9.1/0.9.2
    assert not any(key.startswith(("44444444:", "UNREACHABLE-1:")) for key in stored)
    # the seeds differ, so each meter's values are its own and not a neighbour's on the same line
    assert stored["11111111:1-0:1.8.0"][0] != stored["22222222:1-0:1.8.0"][0]


class WatchedConverter(IecMeterServer):
    """A converter that records, per sign-on, when it arrived and when the data message had been sent."""

    def __init__(self, meters: list[SimulatedIecMeter]) -> None:
        super().__init__(meters)
        self.readouts: list[tuple[float, float]] = []

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        loop = asyncio.get_running_loop()
        session = BusSession(self.meters)
        signed_on = None
        try:
            while data := await reader.read(1024):
                if b"/?" in data:
                    signed_on = loop.time()
                reply = session.receive(data)
                writer.write(reply)
                await writer.drain()
                if b"\x03" in reply and signed_on is not None:
                    self.readouts.append((signed_on, loop.time()))
        finally:
            writer.close()


async def test_meters_on_one_converter_are_read_one_after_the_other(platform: Platform) -> None:
    """Readouts on one converter never overlap: each sign-on waits for the previous data message."""
    meters = [_meter(f"1000000{i}", f"1000000{i}", i) for i in range(4)]
    async with WatchedConverter(meters) as converter:
        _register(
            platform,
            [(m.serial, f"iec+tcp://127.0.0.1:{converter.port}?address={m.address}") for m in meters],
        )
        report = await IecCollector(platform.engine, platform.bus, timeout_s=0.5).collect_all()
    assert (report.succeeded, report.failed) == (4, 0)
    spans = sorted(converter.readouts)
    assert len(spans) == 4
    assert all(done <= next_start for (_, done), (next_start, _) in itertools.pairwise(spans))


async def test_converters_are_read_in_parallel(platform: Platform) -> None:
    """Two converters whose meters never answer: each costs its meters' time-outs one after the
    other, and the two converters run side by side."""

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while await reader.read(1024):
            pass
        writer.close()

    one = await asyncio.start_server(silent, "127.0.0.1", 0)
    two = await asyncio.start_server(silent, "127.0.0.1", 0)
    async with one, two:
        rows = [
            (f"M{i}{n}", f"iec+tcp://127.0.0.1:{server.sockets[0].getsockname()[1]}?address={i}{n}")
            for i, server in enumerate((one, two))
            for n in range(2)
        ]
        _register(platform, rows)
        started = time.perf_counter()
        report = await IecCollector(platform.engine, platform.bus, timeout_s=0.4).collect_all()
        elapsed = time.perf_counter() - started
    assert (report.succeeded, report.failed) == (0, 4)
    assert report.errors == {"Iec62056Timeout": 4}
    assert 0.8 <= elapsed < 1.5  # two time-outs in turn per converter, not four in turn


def test_register_values_skip_history_text_and_repeats() -> None:
    readout = parse_readout(
        b"1.8.0(001234.5*kWh)\r\n"
        b"1-0:1.8.0(999999.9*kWh)\r\n"  # the same code again: the first is kept
        b"1.8.0*12(001000.0*kWh)\r\n"  # billing period 12: historic
        b"1.8.0&12(001000.0*kWh)\r\n"  # historic, no OBIS code
        b"C.1.0(12345678)\r\n"
        b"0.9.1(120000)\r\n"
        b"3.8.0(0012.5*kvarh)\r\n"
        b"1.6.0(01.23*kW)(2404301200)\r\n"  # maximum demand and when: the value is the first
        b"0.2.2(00000001*pulses)\r\n"  # a unit not scaled is kept as written
        b"!\r\n"
    )
    assert register_values(readout) == [
        ("1-0:1.8.0", Decimal("1234500.0"), "Wh"),
        ("1-0:3.8.0", Decimal("12500.0"), "varh"),
        ("1-0:1.6.0", Decimal("1230"), "W"),
        ("1-0:0.2.2", Decimal("1"), "pulses"),
    ]


def test_identity_check() -> None:
    with_serial = parse_readout(
        b"/ISK5ME382-1000\r\n\x02C.1.0(00012345)\r\n0.0.0(ABC-1)\r\n!\r\n\x03\x0c", check_bcc=False
    )
    check_identity(with_serial, "12345")  # leading zeros
    check_identity(with_serial, "abc-1")  # 0.0.0, case
    with pytest.raises(IecIdentityMismatch, match="'00012345', 'ABC-1', not '54321'"):
        check_identity(with_serial, "54321")
    bare = parse_readout(b"/LGZ4ZMD4104407.B47\r\n\x021.8.0(1*kWh)\r\n!\r\n\x03\x00", check_bcc=False)
    check_identity(bare, "4104407")  # named by the identification line
    with pytest.raises(IecIdentityMismatch, match="reports no serial"):
        check_identity(bare, "9999")
