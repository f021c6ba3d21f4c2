"""Gateway-link envelopes: round trips, and every way a broker or an attacker could interfere refused."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from openami.protocols.edge import (
    HEADER_LENGTH,
    Compression,
    Direction,
    EdgeLinkError,
    EnvelopeFormatError,
    EnvelopeTooLargeError,
    Kind,
    Opener,
    ReplayError,
    ReplayWindow,
    TamperedEnvelopeError,
    peek,
    seal,
)
from openami.protocols.edge.envelope import WINDOW, _compress, _decompress
from tests.protocols.dlms.fuzzing import assert_value_or_error, truncated_and_mutated

KEY = bytes(range(32))
OTHER = bytes(range(1, 33))
PAYLOAD = b'{"readings": [' + b'["E-1", "1-0:1.8.0", 12345.6], ' * 200 + b"]}"


@pytest.mark.parametrize("compression", list(Compression))
def test_round_trip(compression: Compression) -> None:
    sealed = seal(KEY, "GW-1", Kind.BATCH, 7, PAYLOAD, compression=compression)
    opened = Opener(KEY, "GW-1").open(sealed)
    assert (opened.kind, opened.seq, opened.payload, opened.compression) == (
        Kind.BATCH,
        7,
        PAYLOAD,
        compression,
    )
    if compression is not Compression.NONE:
        assert len(sealed) < len(PAYLOAD) / 5  # repetitive readings compress well


def test_the_broker_sees_no_plaintext() -> None:
    sealed = seal(KEY, "GW-1", Kind.BATCH, 1, PAYLOAD, compression=Compression.NONE)
    assert b"1-0:1.8.0" not in sealed and b"E-1" not in sealed


def test_wrong_key_and_other_gateway_are_refused() -> None:
    sealed = seal(KEY, "GW-1", Kind.BATCH, 1, PAYLOAD)
    with pytest.raises(TamperedEnvelopeError):
        Opener(OTHER, "GW-1").open(sealed)
    with pytest.raises(TamperedEnvelopeError):
        Opener(KEY, "GW-2").open(sealed)  # moved onto another gateway's topic


@pytest.mark.parametrize("position", [3, 4, 5, 12, 13, HEADER_LENGTH, -1])
def test_any_flipped_bit_is_refused(position: int) -> None:
    sealed = bytearray(seal(KEY, "GW-1", Kind.BATCH, 1, PAYLOAD))
    sealed[position] ^= 0x01
    with pytest.raises(EdgeLinkError):
        Opener(KEY, "GW-1").open(bytes(sealed))


def test_reflected_envelope_is_refused() -> None:
    uplink = seal(KEY, "GW-1", Kind.ACK, 1, b"[1]")
    with pytest.raises(TamperedEnvelopeError):
        Opener(KEY, "GW-1", direction=Direction.DOWN).open(uplink)


def test_replays_are_refused_and_out_of_order_accepted_once() -> None:
    opener = Opener(KEY, "GW-1")
    envelopes = {seq: seal(KEY, "GW-1", Kind.BATCH, seq, b"x") for seq in (1, 2, 3, 5)}
    for seq in (1, 3, 5, 2):
        assert opener.open(envelopes[seq]).seq == seq
    for seq in (1, 2, 3, 5):
        with pytest.raises(ReplayError):
            opener.open(envelopes[seq])
    assert opener.open(seal(KEY, "GW-1", Kind.BATCH, 4, b"x")).seq == 4  # never seen, inside the window


def test_window_survives_a_restart_and_refuses_what_fell_out_of_it() -> None:
    window = ReplayWindow()
    opener = Opener(KEY, "GW-1", window=window)
    opener.open(seal(KEY, "GW-1", Kind.BATCH, 10, b"x"))
    restored = Opener(KEY, "GW-1", window=ReplayWindow(window.highest, window.mask))
    with pytest.raises(ReplayError):
        restored.open(seal(KEY, "GW-1", Kind.BATCH, 10, b"x"))
    restored.open(seal(KEY, "GW-1", Kind.BATCH, 10 + WINDOW + 5, b"x"))
    with pytest.raises(ReplayError):
        restored.open(seal(KEY, "GW-1", Kind.BATCH, 11, b"x"))  # older than the window now


def test_accept_only_after_storing() -> None:
    opener = Opener(KEY, "GW-1")
    sealed = seal(KEY, "GW-1", Kind.BATCH, 1, b"x")
    opener.open(sealed, accept=False)
    opener.open(sealed, accept=False)  # not stored yet: may be opened again
    opener.accept(1)
    with pytest.raises(ReplayError):
        opener.open(sealed)


@pytest.mark.parametrize("compression", [Compression.ZLIB, Compression.ZSTD])
def test_decompression_bomb_is_refused(compression: Compression) -> None:
    bomb = seal(KEY, "GW-1", Kind.BATCH, 1, bytes(10_000_000), compression=compression)
    with pytest.raises(EnvelopeTooLargeError):
        Opener(KEY, "GW-1", max_payload=1_000_000).open(bomb)


def test_garbage_and_bad_arguments() -> None:
    for data in (b"", b"OA", b"XX" + bytes(60), b"OA\x02" + bytes(60), b"OA\x01\x03\x01" + bytes(60)):
        with pytest.raises(EnvelopeFormatError):
            peek(data)
    with pytest.raises(ValueError, match="32 bytes"):
        seal(bytes(16), "GW-1", Kind.BATCH, 1, b"x")
    with pytest.raises(ValueError, match="sequence"):
        seal(KEY, "GW-1", Kind.BATCH, -1, b"x")


@pytest.mark.parametrize("compression", [Compression.ZLIB, Compression.ZSTD])
def test_corrupt_or_truncated_compressed_payload_is_a_format_error(compression: Compression) -> None:
    whole = _compress(PAYLOAD, compression)
    for broken in (b"not compressed at all", whole[: len(whole) // 2]):
        with pytest.raises(EnvelopeFormatError):
            _decompress(broken, compression, 1_000_000)


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_fuzzed_envelopes_end_in_a_typed_error(data: st.DataObject) -> None:
    sealed = seal(KEY, "GW-1", Kind.BATCH, 3, PAYLOAD)
    for raw in truncated_and_mutated(sealed, data):
        assert_value_or_error(Opener(KEY, "GW-1").open, EdgeLinkError, raw)


def test_the_window_stays_bounded_after_a_huge_jump_and_old_numbers() -> None:
    window = ReplayWindow()
    window.accept(5)
    window.accept(1_800_000_000_000)  # a gateway whose new archive counts from its creation time
    assert window.mask == 1 and window.mask.bit_length() <= WINDOW
    window.accept(3)  # far older than the window: nothing to remember, seen() refuses it anyway
    assert window.seen(3) and window.mask.bit_length() <= WINDOW
    window.accept(1_800_000_000_000 - 10)
    assert window.seen(1_800_000_000_000 - 10) and not window.seen(1_800_000_000_000 - 11)
