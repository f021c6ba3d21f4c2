"""The sans-IO HHU session: what it sends, what it expects, when the baud rate changes."""

from __future__ import annotations

import pytest

from openami.protocols.iec62056_21 import (
    BccError,
    DecodeError,
    Identified,
    ModeCSession,
    ReadoutReceived,
    SessionError,
)
from openami.protocols.iec62056_21.session import SessionState
from tests.protocols.iec62056_21.examples import EMH_ACK, EMH_DATA, EMH_IDENTIFICATION, EMH_REQUEST


def test_published_mode_c_exchange_byte_by_byte() -> None:
    session = ModeCSession(max_baudrate=19200)
    assert session.start() == EMH_REQUEST
    assert session.state is SessionState.AWAIT_IDENTIFICATION
    events = []
    for byte in EMH_REQUEST + EMH_IDENTIFICATION:  # an optical head echoes our request first
        events += session.receive(bytes([byte]))
    [identified] = events
    assert isinstance(identified, Identified)
    assert (identified.ack, identified.baudrate) == (EMH_ACK, 9600)
    assert session.state is SessionState.AWAIT_DATA and session.baudrate == 9600
    events = [e for b in EMH_ACK + EMH_DATA for e in session.receive(bytes([b]))]
    [received] = events
    assert isinstance(received, ReadoutReceived)
    assert received.readout.bcc_checked and len(received.readout.datasets) == 18
    assert received.readout.option is not None and received.readout.option.baud_char == "5"
    assert session.state is SessionState.DONE
    assert session.receive(b"\r\n") == []


@pytest.mark.parametrize(
    ("kwargs", "ack", "rate"),
    [
        ({"max_baudrate": 4800}, b"\x06040\r\n", 4800),
        ({"max_baudrate": 1000}, b"\x06010\r\n", 600),
        ({"max_baudrate": 100}, b"\x06000\r\n", 300),
        ({"switch_baudrate": False}, b"\x06000\r\n", 300),
        ({"switch_baudrate": False, "line_baudrate": 9600}, b"\x06050\r\n", 9600),  # fixed converter
        ({"max_baudrate": 1200, "line_baudrate": 2400}, b"\x06030\r\n", 2400),  # never below the line
    ],
)
def test_mode_c_rate_choice(kwargs: dict[str, int | bool], ack: bytes, rate: int) -> None:
    session = ModeCSession(**kwargs)  # type: ignore[arg-type]
    session.start()
    [event] = session.receive(EMH_IDENTIFICATION)
    assert isinstance(event, Identified) and (event.ack, event.baudrate) == (ack, rate)


def test_line_rate_must_be_a_mode_c_rate() -> None:
    with pytest.raises(SessionError, match="1234"):
        ModeCSession(line_baudrate=1234)
    session = ModeCSession(line_baudrate=9600, switch_baudrate=False)
    session.start()
    assert session.baudrate == 9600


def test_mode_a_and_b_follow_the_meter_and_data_in_the_same_chunk() -> None:
    for line, rate in ((b"/ABCZmeter\r\n", 300), (b"/ABCEmeter\r\n", 9600)):
        session = ModeCSession()
        session.start()
        identified, received = session.receive(line + EMH_DATA)
        assert isinstance(identified, Identified) and identified.ack is None and identified.baudrate == rate
        assert isinstance(received, ReadoutReceived) and len(received.readout.datasets) == 18


def test_addressed_request() -> None:
    assert ModeCSession("0012345").start() == b"/?0012345!\r\n"


def test_failures_are_typed_and_stick_until_restart() -> None:
    session = ModeCSession()
    with pytest.raises(SessionError):
        session.receive(b"x")
    session.start()
    with pytest.raises(SessionError, match="reserved"):
        session.receive(b"/ABC8meter\r\n")
    assert session.state is SessionState.FAILED
    with pytest.raises(SessionError):
        session.receive(b"")
    session.start()
    session.receive(EMH_IDENTIFICATION)
    with pytest.raises(BccError):
        session.receive(EMH_DATA[:-1] + b"0")
    session.start()
    with pytest.raises(DecodeError, match="identification"):
        session.receive(b"garbage\r\n")
    session.start()
    with pytest.raises(DecodeError, match="longer"):
        session.receive(b"/" + b"A" * 200)
    session.start()
    session.receive(EMH_IDENTIFICATION)
    with pytest.raises(DecodeError, match="STX"):
        session.receive(b"1.8.0(1)\r\n")


def test_readout_size_is_bounded() -> None:
    session = ModeCSession(max_readout=100)
    session.start()
    session.receive(EMH_IDENTIFICATION)
    with pytest.raises(DecodeError, match="longer than 100"):
        session.receive(b"\x02" + b"1.8.0(1)\r\n" * 20)
