"""EN 13757-2 frames: exact bytes, round trips, the stream splitter, and fuzzing of the whole decoder."""

from __future__ import annotations

import contextlib
import random
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from openami.protocols.mbus import MbusError, decode_frame
from openami.protocols.mbus.errors import EncodeError, FrameError
from openami.protocols.mbus.frames import (
    MAX_FRAME,
    FrameKind,
    FrameStreamParser,
    MbusFrame,
    encode_frame,
    parse_frame,
)
from openami.protocols.mbus.master import req_ud2, snd_nke
from openami.simulator.mbus_meter import heat_meter, water_meter
from tests.protocols.dlms.fuzzing import FUZZ_TIME_LIMIT_S

RSP = encode_frame(
    MbusFrame(
        FrameKind.LONG,
        0x08,
        2,
        0x72,
        bytes.fromhex("78563412244001075500000003131531 00DA023B13018B6004371802 02FD170000"),
    )
)
"""A long-header RSP_UD: volume (24-bit), a maximum with storage, a 6-digit BCD with a DIFE."""


def test_exact_requests() -> None:
    assert snd_nke(1) == bytes.fromhex("1040014116")
    assert req_ud2(1, fcb=True) == bytes.fromhex("107b017c16")
    assert req_ud2(0xFD, fcb=False) == bytes.fromhex("105bfd5816")
    assert parse_frame(b"\xe5") == MbusFrame(FrameKind.ACK)


def test_control_frame() -> None:
    raw = encode_frame(MbusFrame(FrameKind.CONTROL, 0x53, 0xFE, 0x50))
    assert raw == bytes.fromhex("6803036853fe50a116")
    assert parse_frame(raw).kind is FrameKind.CONTROL


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (bytes.fromhex("1040014216"), "checksum"),
        (bytes.fromhex("1040014117"), "stop byte"),
        (bytes.fromhex("6803046853fe50a116"), "length fields differ"),
        (bytes.fromhex("6803036953fe50a116"), "second start"),
        (bytes.fromhex("6803036853fe50a216"), "checksum"),
        (bytes.fromhex("6802026853fe16"), "below 3"),
        (bytes.fromhex("1040"), "incomplete"),
        (bytes.fromhex("104001411600"), "after the frame"),
        (b"\x00", "no frame starts"),
    ],
)
def test_frame_errors(raw: bytes, reason: str) -> None:
    with pytest.raises(FrameError, match=reason):
        parse_frame(raw)


def test_encode_refuses_bad_fields() -> None:
    with pytest.raises(EncodeError):
        encode_frame(MbusFrame(FrameKind.LONG, 0x08, 1, 0x72, bytes(253)))
    with pytest.raises(EncodeError):
        encode_frame(MbusFrame(FrameKind.SHORT, 0x40, 256))
    with pytest.raises(EncodeError):
        encode_frame(MbusFrame(FrameKind.LONG, 0x08, 1, None, b"x"))


@st.composite
def frames(draw: st.DrawFn) -> MbusFrame:
    kind = draw(st.sampled_from(list(FrameKind)))
    byte = st.integers(0, 255)
    if kind is FrameKind.ACK:
        return MbusFrame(kind)
    if kind is FrameKind.SHORT:
        return MbusFrame(kind, draw(byte), draw(byte))
    data = draw(st.binary(min_size=1, max_size=252)) if kind is FrameKind.LONG else b""
    return MbusFrame(kind, draw(byte), draw(byte), draw(byte), data)


@given(frames())
def test_frame_round_trip(frame: MbusFrame) -> None:
    raw = encode_frame(frame)
    assert parse_frame(raw) == frame
    assert encode_frame(parse_frame(raw)) == raw


@given(st.lists(frames(), max_size=6), st.lists(st.integers(1, 300), max_size=20))
def test_stream_round_trip_any_split(items: list[MbusFrame], cuts: list[int]) -> None:
    stream = b"".join(encode_frame(f) for f in items)
    parser = FrameStreamParser()
    out: list[MbusFrame] = []
    pos = 0
    for cut in cuts:
        out += parser.feed(stream[pos : pos + cut])
        pos += cut
    out += parser.feed(stream[pos:])
    assert out == items
    assert parser.errors == []


def test_stream_resynchronises_after_garbage() -> None:
    parser = FrameStreamParser()
    noise = bytes([0x00, 0x68, 0x05, 0x07, 0x99, 0x10, 0x40, 0x01, 0x00])  # false starts
    out = parser.feed(noise + RSP + b"\x55\x55" + snd_nke(3))
    assert [f.kind for f in out] == [FrameKind.LONG, FrameKind.SHORT]
    assert parser.errors and all(isinstance(e, FrameError) for e in parser.errors)


def _valid_telegrams() -> list[bytes]:
    return [RSP, heat_meter(1, "12345678").respond_ud2(True), water_meter(2, "12345699").respond_ud2(True)]


def _decode_bounded(data: bytes) -> None:
    start = time.perf_counter()
    with contextlib.suppress(MbusError):
        decode_frame(data)
    assert time.perf_counter() - start < FUZZ_TIME_LIMIT_S


@settings(max_examples=300)
@given(st.binary(max_size=600))
def test_fuzz_random_bytes(data: bytes) -> None:
    _decode_bounded(data)
    parser = FrameStreamParser()
    parser.feed(data)
    assert parser.buffered <= MAX_FRAME


@settings(max_examples=400)
@given(st.sampled_from(range(3)), st.data())
def test_fuzz_mutated_and_truncated(which: int, data: st.DataObject) -> None:
    raw = bytearray(_valid_telegrams()[which])
    for _ in range(data.draw(st.integers(0, 4))):
        raw[data.draw(st.integers(0, len(raw) - 1))] = data.draw(st.integers(0, 255))
    raw = raw[: data.draw(st.integers(0, len(raw)))]
    _decode_bounded(bytes(raw))


@settings(max_examples=400)
@given(st.sampled_from(range(3)), st.data())
def test_fuzz_mutated_body_with_valid_checksum(which: int, data: st.DataObject) -> None:
    """Mutations re-framed with a correct checksum reach the application layer, not just the CS check."""
    frame = parse_frame(_valid_telegrams()[which])
    body = bytearray(frame.data)
    for _ in range(data.draw(st.integers(1, 6))):
        body[data.draw(st.integers(0, len(body) - 1))] = data.draw(st.integers(0, 255))
    body = body[: data.draw(st.integers(0, len(body)))]
    ci = data.draw(st.sampled_from([0x72, 0x7A, 0x78, 0x73, 0x70, frame.ci or 0x72]))
    _decode_bounded(encode_frame(MbusFrame(FrameKind.LONG, 0x08, 1, ci, bytes(body))))


def test_fuzz_stream_within_time_bound() -> None:
    rng = random.Random(13757)
    valid = b"".join(_valid_telegrams())
    chunks = [rng.randbytes(rng.randrange(1, 2000)) if rng.random() < 0.7 else valid for _ in range(400)]
    chunks += [b"\x68\xff\xff\x68" * 3000, b"\x10" * 20000]
    start = time.perf_counter()
    parser = FrameStreamParser()
    found = [f for chunk in chunks for f in parser.feed(chunk) if f.kind is FrameKind.LONG]
    assert time.perf_counter() - start < 10
    assert len(found) >= 3 * sum(1 for c in chunks if c == valid)
    assert parser.buffered <= MAX_FRAME
