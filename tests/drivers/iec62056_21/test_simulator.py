"""The virtual meter against the sans-IO session, without any line: modes, registers, BCC."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from openami.protocols.iec62056_21 import Identified, ModeCSession, ReadoutReceived, parse_readout, to_json
from openami.protocols.iec62056_21.messages import NAK, split_data_message
from openami.simulator.iec62056_21_meter import BusSession, SimulatedIecMeter

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


def exchange(meter: SimulatedIecMeter, session: ModeCSession) -> list[object]:
    """Run the two sans-IO ends against each other until nothing more is said."""
    side = meter.session()
    events: list[object] = []
    outgoing = session.start()
    while outgoing:
        incoming = side.receive(outgoing)
        outgoing = b""
        for event in session.receive(incoming):
            events.append(event)
            if isinstance(event, Identified) and event.ack:
                outgoing = event.ack
                assert side.baudrate == 300
    return events


@pytest.mark.parametrize(("mode", "rate"), [("A", 300), ("B", 4800), ("C", 4800)])
def test_round_trip_each_mode(mode: str, rate: int) -> None:
    meter = SimulatedIecMeter(mode=mode, max_baudrate=4800 if mode != "A" else 9600)  # type: ignore[arg-type]
    identified, received = exchange(meter, ModeCSession())
    assert isinstance(identified, Identified) and identified.baudrate == rate
    assert (identified.ack is not None) == (mode == "C")
    assert isinstance(received, ReadoutReceived) and received.readout.bcc_checked
    assert {ds.address for ds in received.readout.datasets} >= {"1.8.0", "1.8.1", "1.8.2", "2.8.0", "C.1.0"}


def test_readout_is_realistic_and_grows_with_time() -> None:
    clock = Clock()
    meter = SimulatedIecMeter("12345678", seed=2, now=clock)
    first = parse_readout(meter.data_message())
    doc = to_json(first)
    assert doc["manufacturer"] is None and doc["identification"] is None  # the data message alone
    assert first.timestamp == T0.replace(tzinfo=None)
    values = {ds.address: ds for ds in first.datasets}
    assert values["C.1.0"].value == "12345678"
    assert values["1.8.0"].value == values["1.8.1"].value + values["1.8.2"].value  # type: ignore[operator]
    assert values["1.8.0"].unit == "Wh" and values["16.7.0"].unit == "W"
    assert values["32.7.0"].unit == "V" and 225 < values["32.7.0"].value < 235  # type: ignore[operator]
    assert values["31.7.0"].unit == "A"
    clock.now = T0 + timedelta(hours=10)
    later = {ds.address: ds.value for ds in parse_readout(meter.data_message()).datasets}
    grown = later["1.8.0"] - values["1.8.0"].value  # type: ignore[operator]
    assert grown == Decimal(10 * meter.import_kw * 1000).quantize(Decimal(1))
    assert later["0.9.1"] == "220000"


def test_identification_and_bcc_bytes() -> None:
    meter = SimulatedIecMeter()
    side = meter.session()
    assert side.receive(b"/?!\r\n") == b"/ISK5ME382-1000\r\n"
    message = side.receive(b"\x06050\r\n")
    assert side.baudrate == 9600
    block, end = split_data_message(message)
    assert end == len(message) and block.endswith(b"!\r\n")


def test_meter_ignores_other_addresses_noise_and_refuses_programming() -> None:
    meter = SimulatedIecMeter(address="42")
    side = meter.session()
    assert side.receive(b"/?41!\r\n") == b""
    assert side.receive(b"garbage\r\n" + b"x" * 300) == b""
    assert side.receive(b"/?42!\r\n").startswith(b"/ISK5")
    assert side.receive(b"\x06051\r\n") == bytes([NAK])
    assert side.receive(b"\x06050\r\n") == b""  # the sign-on is over: sign on again first


def test_meter_configuration_errors() -> None:
    with pytest.raises(ValueError, match="mode B"):
        SimulatedIecMeter(mode="B", max_baudrate=300)
    with pytest.raises(ValueError, match="identification"):
        SimulatedIecMeter(ident="a/b")


def test_bus_answers_only_the_addressed_meter() -> None:
    one, two = SimulatedIecMeter("11111111", address="1"), SimulatedIecMeter("22222222", address="2")
    bus = BusSession([one, two])
    assert bus.receive(b"/?!\r\n") == b""  # every meter would answer at once: none does
    assert bus.receive(b"/?3!\r\n") == b""
    assert bus.receive(b"/?2!\r\n") == b"/ISK5ME382-1000\r\n"
    assert parse_readout(bus.receive(b"\x06050\r\n")).find("C.1.0").value == "22222222"  # type: ignore[union-attr]
    assert bus.receive(b"/?1!\r\n").startswith(b"/ISK5")
    assert bus.receive(b"/?2!\r\n").startswith(b"/ISK5")  # the sign-on for 2 ends 1's session
    assert parse_readout(bus.receive(b"\x06050\r\n")).find("C.1.0").value == "22222222"  # type: ignore[union-attr]
    alone = BusSession([one])
    assert alone.receive(b"/?!\r\n").startswith(b"/ISK5")  # alone on its line, /?! is answered
    with pytest.raises(ValueError, match="at least one"):
        BusSession([])
