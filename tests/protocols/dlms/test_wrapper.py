"""IEC 62056-47 wrapper: exact bytes, stream splitting and the no-resync rule."""

from __future__ import annotations

import contextlib
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from openami.protocols.dlms.errors import EncodeError, FrameError
from openami.protocols.dlms.wrapper import (
    HEADER_SIZE,
    WrapperFrame,
    WrapperStreamParser,
    decode_wrapper,
    encode_wrapper,
)

AARQ = bytes.fromhex("601DA109060760857405080101BE10040E01000000065F1F040000301DFFFF")
# Public client wPort 0x10 to the management logical device wPort 0x01; 31 APDU bytes.
WRAPPED_AARQ = bytes.fromhex("000100100001001F") + AARQ


def test_exact_bytes() -> None:
    frame = WrapperFrame(source=0x10, destination=0x01, apdu=AARQ)
    assert encode_wrapper(frame) == WRAPPED_AARQ
    assert decode_wrapper(WRAPPED_AARQ) == frame
    assert encode_wrapper(WrapperFrame(0xFFFF, 0, b"")) == bytes.fromhex("0001FFFF00000000")


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (WRAPPED_AARQ[:7], "shorter"),
        (b"\x00\x02" + WRAPPED_AARQ[2:], "version"),
        (WRAPPED_AARQ[:-1], "length"),
        (WRAPPED_AARQ + b"\x00", "length"),
    ],
)
def test_decode_errors(raw: bytes, reason: str) -> None:
    with pytest.raises(FrameError, match=reason):
        decode_wrapper(raw)


def test_decode_respects_max_length() -> None:
    with pytest.raises(FrameError, match="limit"):
        decode_wrapper(WRAPPED_AARQ, max_length=30)


@pytest.mark.parametrize(
    "frame", [WrapperFrame(0x10000, 1, b""), WrapperFrame(1, -1, b""), WrapperFrame(1, 1, bytes(0x10000))]
)
def test_encode_rejects(frame: WrapperFrame) -> None:
    with pytest.raises(EncodeError):
        encode_wrapper(frame)


def test_stream_split_and_joined() -> None:
    other = encode_wrapper(WrapperFrame(1, 0x10, b"\x61\x00"))
    stream = WRAPPED_AARQ + other + WRAPPED_AARQ
    parser = WrapperStreamParser()
    assert parser.feed(stream[:3]) == []
    assert parser.feed(stream[3 : HEADER_SIZE + 5]) == []
    out = parser.feed(stream[HEADER_SIZE + 5 : len(WRAPPED_AARQ) + 9])
    assert out == [decode_wrapper(WRAPPED_AARQ)]
    assert parser.feed(stream[len(WRAPPED_AARQ) + 9 :]) == [
        decode_wrapper(other),
        decode_wrapper(WRAPPED_AARQ),
    ]
    assert parser.feed(b"") == []


def test_bad_version_poisons_until_reset() -> None:
    parser = WrapperStreamParser()
    with pytest.raises(FrameError, match="version"):
        parser.feed(WRAPPED_AARQ + b"\x00\x02\x00\x10\x00\x01\x00\x00")
    with pytest.raises(FrameError, match="reset"):
        parser.feed(WRAPPED_AARQ)
    parser.reset()
    assert parser.feed(WRAPPED_AARQ) == [decode_wrapper(WRAPPED_AARQ)]


def test_length_above_max() -> None:
    parser = WrapperStreamParser(max_length=16)
    with pytest.raises(FrameError, match="limit"):
        parser.feed(WRAPPED_AARQ[:HEADER_SIZE])
    parser.reset()
    assert parser.feed(encode_wrapper(WrapperFrame(1, 2, bytes(16)))) == [WrapperFrame(1, 2, bytes(16))]


frames = st.builds(WrapperFrame, st.integers(0, 0xFFFF), st.integers(0, 0xFFFF), st.binary(max_size=600))


@given(frames)
def test_round_trip(frame: WrapperFrame) -> None:
    assert decode_wrapper(encode_wrapper(frame)) == frame


@given(st.lists(frames, max_size=6), st.lists(st.integers(1, 700), max_size=12))
def test_stream_round_trip_any_split(items: list[WrapperFrame], cuts: list[int]) -> None:
    stream = b"".join(encode_wrapper(f) for f in items)
    parser = WrapperStreamParser()
    out: list[WrapperFrame] = []
    pos = 0
    for cut in cuts:
        out += parser.feed(stream[pos : pos + cut])
        pos += cut
    out += parser.feed(stream[pos:])
    assert out == items


@settings(max_examples=300)
@given(st.lists(st.binary(max_size=500), max_size=8), st.integers(0, 0xFFFF))
def test_fuzz_never_raises_other_errors(chunks: list[bytes], max_length: int) -> None:
    parser = WrapperStreamParser(max_length=max_length)
    for chunk in chunks:
        with contextlib.suppress(FrameError):
            parser.feed(chunk)
        with contextlib.suppress(FrameError):
            decode_wrapper(chunk, max_length)


def test_fuzz_large_stream_within_time_bound() -> None:
    frame = encode_wrapper(WrapperFrame(1, 0x10, bytes(1000)))
    parser = WrapperStreamParser()
    start = time.perf_counter()
    found = sum(len(parser.feed(frame[i : i + 7])) for _ in range(200) for i in range(0, len(frame), 7))
    assert found == 200
    assert time.perf_counter() - start < 10
