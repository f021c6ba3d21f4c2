"""The time bound of the fuzz tests, and the checks they share."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable

from hypothesis import strategies as st

FUZZ_TIME_LIMIT_S = 2.0
"""Longest one decode of hostile input may take. Real decodes take microseconds, so only a hang or a
runaway (quadratic, exponential) decode trips this. It was 0.5 s until a CI run on a stalled machine
tripped it twice on inputs that decoded at once when replayed: a guard against hangs must not measure
the machine."""


def assert_value_or_error(decode: Callable[[bytes], object], errors: type[Exception], raw: bytes) -> None:
    """``decode(raw)`` ends in a value or one of ``errors`` (anything else propagates), quickly."""
    started = time.perf_counter()
    with contextlib.suppress(errors):
        decode(raw)
    assert time.perf_counter() - started < FUZZ_TIME_LIMIT_S


def truncated_and_mutated(raw: bytes, data: st.DataObject) -> list[bytes]:
    """A truncation of ``raw`` and a copy with one to three bytes overwritten, drawn from ``data``."""
    mutated = bytearray(raw)
    cut = data.draw(st.integers(0, len(raw) - 1))
    for _ in range(data.draw(st.integers(1, 3))):
        mutated[data.draw(st.integers(0, len(raw) - 1))] = data.draw(st.integers(0, 255))
    return [raw[:cut], bytes(mutated)]
