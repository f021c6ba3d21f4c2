"""Hostile input: truncated, mutated or random bytes end in a value or a typed error, quickly."""

from __future__ import annotations

import contextlib
import time

from hypothesis import given, settings
from hypothesis import strategies as st

from openami.protocols.iec62056_21 import Iec62056Error, ModeCSession, parse_readout
from openami.protocols.iec62056_21.errors import DecodeError
from tests.protocols.dlms.fuzzing import FUZZ_TIME_LIMIT_S
from tests.protocols.iec62056_21.examples import EMH_CAPTURE, EMH_READOUT, ZMD_TEXT

SEEDS = [EMH_READOUT, EMH_CAPTURE, ZMD_TEXT]


def _parse_bounded(data: bytes) -> None:
    start = time.perf_counter()
    with contextlib.suppress(DecodeError):
        parse_readout(data)
    with contextlib.suppress(DecodeError):
        parse_readout(data, check_bcc=False)
    assert time.perf_counter() - start < FUZZ_TIME_LIMIT_S


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(SEEDS), st.integers(0, 2000))
def test_truncated(seed: bytes, cut: int) -> None:
    _parse_bounded(seed[: cut % (len(seed) + 1)])


@settings(max_examples=500, deadline=None)
@given(st.sampled_from(SEEDS), st.lists(st.tuples(st.integers(0, 2000), st.integers(0, 255)), max_size=6))
def test_mutated(seed: bytes, edits: list[tuple[int, int]]) -> None:
    data = bytearray(seed)
    for position, value in edits:
        data[position % len(data)] = value
    _parse_bounded(bytes(data))


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=600))
def test_random(data: bytes) -> None:
    _parse_bounded(data)


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from(SEEDS),
    st.lists(st.integers(1, 50), max_size=40),
    st.integers(0, 2000),
    st.integers(0, 255),
)
def test_session_any_split_and_mutation(seed: bytes, cuts: list[int], position: int, value: int) -> None:
    data = bytearray(seed)
    data[position % len(data)] = value
    session = ModeCSession()
    session.start()
    start = time.perf_counter()
    pos = 0
    try:
        for cut in [*cuts, len(data)]:
            session.receive(bytes(data[pos : pos + cut]))
            pos += cut
    except Iec62056Error:
        pass
    assert time.perf_counter() - start < FUZZ_TIME_LIMIT_S


def test_large_input_within_time_bound() -> None:
    block = b"\x02" + b"1.8.0(0001234.567*kWh)1.8.1(1*kWh)(2*kWh)\r\n" * 5000 + b"!\r\n\x03"
    start = time.perf_counter()
    readout = parse_readout(block + b"\x00", check_bcc=False)
    assert len(readout.datasets) == 10000
    with contextlib.suppress(DecodeError):
        parse_readout(b"(" * 200_000)
    assert time.perf_counter() - start < 10 * FUZZ_TIME_LIMIT_S
