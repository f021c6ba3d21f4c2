"""Hypothesis: truncated, mutated and random SML input ends in a file or an SmlError, in bounded time."""

from __future__ import annotations

import contextlib
import time

from hypothesis import given, settings
from hypothesis import strategies as st

from openami.protocols.sml import SmlError, SmlStreamParser, parse_file, to_json
from openami.protocols.sml.encode import file, message
from openami.protocols.sml.transport import MAX_FILE_BYTES
from tests.protocols.dlms.fuzzing import FUZZ_TIME_LIMIT_S
from tests.protocols.sml.test_sml import EBZ_DD3

_START = b"\x1b\x1b\x1b\x1b\x01\x01\x01\x01"


def _inputs() -> st.SearchStrategy[bytes]:
    base = EBZ_DD3
    return st.one_of(
        st.integers(0, len(base)).map(lambda n: base[:n]),
        st.tuples(st.integers(0, len(base) - 1), st.integers(0, 255)).map(
            lambda p: base[: p[0]] + bytes([p[1]]) + base[p[0] + 1 :]
        ),
        # Random content in a sound transport with correct CRCs: exercises the TL decoder and bodies.
        st.binary(max_size=300).map(lambda junk: file(junk)),
        st.binary(max_size=300).map(lambda junk: file(message(b"\x01", 0x0701, [junk]) + junk)),
        st.binary(max_size=400).map(lambda junk: _START + junk),
    )


@settings(max_examples=500, deadline=None)
@given(_inputs(), st.booleans())
def test_fuzz_parse_file_ends_in_value_or_typed_error(data: bytes, check: bool) -> None:
    began = time.perf_counter()
    with contextlib.suppress(SmlError):
        to_json(parse_file(data, check_crc=check))
    assert time.perf_counter() - began < FUZZ_TIME_LIMIT_S


@settings(max_examples=200, deadline=None)
@given(st.lists(_inputs(), max_size=6), st.integers(1, 64))
def test_fuzz_stream_never_raises_and_stays_bounded(pieces: list[bytes], step: int) -> None:
    parser = SmlStreamParser()
    stream = b"".join(pieces)
    began = time.perf_counter()
    for i in range(0, len(stream), step):
        parser.feed(stream[i : i + step])
    assert parser.buffered <= MAX_FILE_BYTES + step
    assert time.perf_counter() - began < FUZZ_TIME_LIMIT_S * 4
