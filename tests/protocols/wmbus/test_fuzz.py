"""Truncated and mutated telegrams end in a value or a typed error, quickly."""

from __future__ import annotations

import contextlib
import time

from hypothesis import given, settings
from hypothesis import strategies as st

from openami.protocols.wmbus import FormatCache, WmbusError, decode_telegram
from openami.protocols.wmbus.link import add_crc_format_a
from tests.protocols.dlms.fuzzing import FUZZ_TIME_LIMIT_S, assert_value_or_error, truncated_and_mutated
from tests.protocols.wmbus.builders import KEY, mode5_telegram, mode7_telegram

SEEDS = [mode5_telegram(), mode7_telegram(), add_crc_format_a(mode5_telegram())]


def _decode(data: bytes, key: bytes | None) -> None:
    start = time.perf_counter()
    with contextlib.suppress(WmbusError):
        decode_telegram(data, key=key)
    assert time.perf_counter() - start < FUZZ_TIME_LIMIT_S


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300), st.sampled_from([None, KEY]))
def test_random_bytes(data: bytes, key: bytes | None) -> None:
    _decode(data, key)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(SEEDS), st.integers(0, 400), st.integers(0, 255), st.integers(0, 400), st.booleans())
def test_mutated_and_truncated(seed: bytes, pos: int, value: int, cut: int, fix_length: bool) -> None:
    data = bytearray(seed)
    data[pos % len(data)] = value
    data = data[: max(1, cut % (len(data) + 1))]
    if fix_length and data:
        data[0] = len(data) - 1  # keep L consistent so the deeper layers get exercised
    _decode(bytes(data), KEY)


def _learnt() -> FormatCache:
    from tests.protocols.wmbus.builders import frame
    from tests.protocols.wmbus.test_compact import FULL_APP

    formats = FormatCache()
    decode_telegram(frame(b"\x78" + FULL_APP), formats=formats)
    return formats


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_mutated_compact_frames_and_profiles(data: st.DataObject) -> None:
    """Compact frames rebuilt from a learnt format and profile records: value or typed error, quickly."""
    from tests.protocols.wmbus.builders import frame
    from tests.protocols.wmbus.test_compact import FULL_APP, _compact

    profile = frame(b"\x78" + bytes.fromhex("8D04EE130E3BFE990000520000100000FFFFFF"))
    formats = _learnt()
    for seed in (_compact(FULL_APP), profile):
        for raw in truncated_and_mutated(seed, data):
            assert_value_or_error(lambda d: decode_telegram(d, formats=formats), WmbusError, raw)
