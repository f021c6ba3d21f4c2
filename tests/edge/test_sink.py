"""The archive sink under the head-end's own collectors (real sockets to the simulators), pulse inputs
read from counter files, and the clock arithmetic of TIME answers."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from openami.bus.base import Publisher
from openami.bus.messages import MeterEvent, Series
from openami.drivers.modbus.models import SDM630
from openami.drivers.pulse.counter import COUNTER_RESET, PulseInput
from openami.edge.archive import Archive, ArchivedEvent
from openami.edge.pulse import PulseCollector, PulseTarget
from openami.edge.sink import ArchiveSink
from openami.edge.timesync import ClockTracker
from openami.hes import mbus_collector, modbus_collector
from openami.hes.mbus_collector import MbusCollector
from openami.hes.modbus_collector import ModbusCollector
from openami.hes.rounds import publish_read
from openami.hes.targets import MeterRow
from openami.simulator.mbus_meter import MbusBusSimulator, heat_meter
from openami.simulator.modbus_meter import ModbusSimulator, SimulatedModbusMeter

pytestmark = pytest.mark.timeout(30)
T0 = datetime(2026, 12, 2, 5, 15, tzinfo=UTC)


def _row(serial: str, address: str, model: str = "") -> MeterRow:
    return MeterRow(0, "acme", 1, serial, model, address)


async def test_collectors_publish_into_the_archive(tmp_path: Path) -> None:
    archive = Archive(tmp_path / "a.db")
    sink = ArchiveSink(archive)
    publisher: Publisher = sink  # checked by mypy: an ArchiveSink is a Publisher
    assert publisher is sink
    clock = iter([T0, T0 + timedelta(minutes=15), T0 + timedelta(minutes=15)])
    async with MbusBusSimulator([heat_meter(1, "12345678")]) as bus:
        target = mbus_collector.target_from_row(_row("MB-1", f"mbus+tcp://127.0.0.1:{bus.port}?primary=1"))
        collector = MbusCollector(None, sink, now=lambda: next(clock))
        for _ in range(3):  # the third read repeats the second's time: kept once
            report = await collector.collect([target])
            assert report.succeeded == 1
    meters = {1: SimulatedModbusMeter(SDM630, {"1-0:1.8.0": lambda: 1234.5})}
    async with ModbusSimulator("127.0.0.1", 0, meters) as gateway:
        row = _row("SDM-1", f"modbus+tcp://127.0.0.1:{gateway.port}?unit=1", SDM630.model)
        report = await ModbusCollector(None, sink, now=lambda: T0).collect(
            [modbus_collector.target_from_row(row)]
        )
        assert report.readings == len(SDM630.points)
    per_read = len(archive.readings("MB-1")) // 2
    assert per_read > 3 and sink.stats.duplicates == per_read
    energy = [r for r in archive.readings("MB-1") if r.channel == "energy"]
    assert [(r.ts, r.value, r.unit) for r in energy] == [
        (T0, 123456000.0, "Wh"),
        (T0 + timedelta(minutes=15), 123456000.0, "Wh"),
    ]
    sdm = {r.channel: r for r in archive.readings("SDM-1")}
    assert sdm["1-0:1.8.0"].value == pytest.approx(1234.5, rel=1e-6) and sdm["1-0:1.8.0"].kind == "register"
    with pytest.raises(RuntimeError, match="needs the store's engine"):
        await collector.collect_all()


async def test_new_alarms_go_to_the_handler_once(tmp_path: Path) -> None:
    archive = Archive(tmp_path / "a.db")
    forwarded: list[list[ArchivedEvent]] = []
    sink = ArchiveSink(archive, on_alarm=forwarded.append)
    events = [
        MeterEvent(meter="W-1", ts=T0, code="leak", severity="alarm", detail={"litres": 40}),
        MeterEvent(meter="W-1", ts=T0, code="battery_low", severity="warning"),
    ]
    series = [Series(meter="W-1", channel="volume", unit="m3", kind="register", points=[(T0, 12.5, 0)])]
    for _ in range(2):
        await publish_read(sink, "mbus", "acme", "W-1", T0, series, events)
    assert [[e.code for e in batch] for batch in forwarded] == [["leak"]]
    assert forwarded[0][0].detail == {"litres": 40}
    assert (sink.stats.events, sink.stats.alarms, sink.stats.readings) == (2, 1, 1)
    await sink.add_events([ArchivedEvent("W-1", T0, "comm_lost", "alarm", {"failures": 3})])
    assert [e.code for e in forwarded[-1]] == ["comm_lost"]
    with pytest.raises(ValueError, match="takes readings"):
        await sink.publish("events.acme", b"{}")


async def test_pulse_inputs_continue_across_restarts(tmp_path: Path) -> None:
    counter = tmp_path / "count"
    target = PulseTarget("acme", "W-9", counter, PulseInput("W-9", "volume", "m3", 0.01, initial_value=100.0))
    archive = Archive(tmp_path / "a.db")
    times = iter(T0 + timedelta(minutes=15 * i) for i in range(10))

    def collector() -> PulseCollector:
        return PulseCollector(archive, ArchiveSink(archive), now=lambda: next(times))

    counter.write_text("250\n")
    assert (await collector().collect([target])).succeeded == 1
    counter.write_text("300\n")
    restarted = collector()  # a new process: the register continues from the archive's state
    assert (await restarted.collect([target])).succeeded == 1
    counter.write_text("10\n")  # the logger was reset
    await restarted.collect([target])
    counter.write_text("garbage")
    report = await restarted.collect([target])
    assert report.failed == 1 and "does not hold a count" in (report.outcomes[0].error or "")
    values = [(r.value, r.quality) for r in archive.readings("W-9")]
    assert values == [(102.5, 0), (103.0, 0), (pytest.approx(103.1), COUNTER_RESET)]
    exchanged = PulseTarget(
        "acme", "W-9", counter, PulseInput("W-9", "volume", "m3", 0.01, initial_value=5.0)
    )
    counter.write_text("20\n")
    await collector().collect([exchanged])  # a new meter on the input: counting starts from its config
    assert archive.readings("W-9")[-1].value == pytest.approx(5.2)


def test_clock_offset_round_trip_and_drift() -> None:
    tracker = ClockTracker()
    # The head-end is 2.5 s ahead; 40 ms each way; 5 ms of processing at the head-end.
    payload = tracker.request(1000.0, 50.0)
    sample = tracker.answer({**payload, "t2": 1002.54, "t3": 1002.545}, 50.085)
    assert sample is not None
    assert sample.offset_s == pytest.approx(2.5) and sample.round_trip_s == pytest.approx(0.08)
    assert tracker.drift_ppm is None  # one sample
    # The gateway's clock gains 20 ppm: an hour later the offset is 72 ms smaller.
    later = tracker.request(4600.0, 3650.0)
    tracker.answer({**later, "t2": 4602.54 - 0.072, "t3": 4602.545 - 0.072}, 3650.085)
    assert tracker.drift_ppm == pytest.approx(20.0, rel=1e-3)
    assert tracker.offset_s == pytest.approx(2.428)
    # Answers to nothing we asked, and implausible ones, are refused.
    assert tracker.answer({"t1": 1.0, "t2": 2.0, "t3": 3.0}, 4000.0) is None
    again = tracker.request(5000.0, 4000.0)
    assert tracker.answer({**again, "t2": 5000.0, "t3": 4999.0}, 4000.1) is None
    assert tracker.answer({"t1": "x"}, 1.0) is None
    assert tracker.refused == 3
