"""General Block Transfer: exact bytes, the L+G E450 captures (restart, duplicate) and fuzzing."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from openami.protocols.dlms.errors import DecodeError, EncodeError
from openami.protocols.dlms.gbt import (
    GbtReassembler,
    GeneralBlockTransfer,
    decode_gbt,
    encode_gbt,
    split_into_blocks,
)
from openami.protocols.dlms.hdlc import LLC_COMMAND, LLC_RESPONSE, HdlcStreamParser
from tests.conftest import corpora_dir


def gbt_apdus(name: str) -> list[bytes]:
    """The APDUs of one E450 capture: the LLC header only heads the first HDLC frame of each push."""
    text = (corpora_dir() / "dlms" / "scs" / name).read_text()
    parser = HdlcStreamParser()
    frames = parser.feed(bytes.fromhex("".join(text.split())))
    assert parser.errors == []
    assert all(not f.segmented for f in frames)
    return [f.info[3:] if f.info[:3] in (LLC_COMMAND, LLC_RESPONSE) else f.info for f in frames]


def reassemble(apdus: list[bytes]) -> tuple[list[bytes], list[DecodeError], GbtReassembler]:
    reassembler = GbtReassembler()
    messages: list[bytes] = []
    errors: list[DecodeError] = []
    for apdu in apdus:
        try:
            whole = reassembler.add(decode_gbt(apdu))
        except DecodeError as exc:
            errors.append(exc)
            continue
        if whole is not None:
            messages.append(whole)
    return messages, errors, reassembler


def test_exact_bytes() -> None:
    gbt = GeneralBlockTransfer(
        last_block=False, streaming=True, window=0, block_number=1, block_number_ack=0, data=b"\x0f\x00"
    )
    raw = bytes.fromhex("E04000010000020F00")
    assert encode_gbt(gbt) == raw
    assert decode_gbt(raw) == gbt
    last = GeneralBlockTransfer(True, False, 63, 0x1234, 0xFFFF, bytes(0x80))
    assert encode_gbt(last) == bytes.fromhex("E0BF1234FFFF8180") + bytes(0x80)
    assert decode_gbt(encode_gbt(last)) == last
    big = GeneralBlockTransfer(True, False, 1, 2, 1, bytes(0x100))
    assert encode_gbt(big)[:9] == bytes.fromhex("E08100020001820100")


@pytest.mark.parametrize(
    "raw",
    [
        "",
        "E0400001",
        "E1400001000000",
        "E04000010000",
        "E0400001000002AA",
        "E0400001000001AABB",
        "E040000100008201",
    ],
)
def test_decode_errors(raw: str) -> None:
    with pytest.raises(DecodeError):
        decode_gbt(bytes.fromhex(raw))


@pytest.mark.parametrize(
    "gbt",
    [
        GeneralBlockTransfer(False, False, 64, 1, 0, b""),
        GeneralBlockTransfer(False, False, 1, 0x10000, 0, b""),
        GeneralBlockTransfer(False, False, 1, 1, -1, b""),
    ],
)
def test_encode_rejects(gbt: GeneralBlockTransfer) -> None:
    with pytest.raises(EncodeError):
        encode_gbt(gbt)


def test_split_into_blocks_windows() -> None:
    blocks = [decode_gbt(b) for b in split_into_blocks(bytes(range(10)), 3, window=2)]
    assert [b.block_number for b in blocks] == [1, 2, 3, 4]
    assert [b.data for b in blocks] == [b"\x00\x01\x02", b"\x03\x04\x05", b"\x06\x07\x08", b"\x09"]
    assert [b.streaming for b in blocks] == [True, False, True, False]
    assert [b.last_block for b in blocks] == [False, False, False, True]
    assert {b.window for b in blocks} == {2}
    assert [decode_gbt(b) for b in split_into_blocks(b"", 5)] == [
        GeneralBlockTransfer(True, False, 1, 1, 0, b"")
    ]
    with pytest.raises(EncodeError):
        split_into_blocks(b"x", 0)


# --- the L+G E450 captures ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "first_byte"),
    [
        ("lg_e450__UNENCRYPTED_VALID_DATA1.hex", 0x0F),
        ("lg_e450__UNENCRYPTED_VALID_DATA_CFG2026.hex", 0x0F),
        ("lg_e450__UNENCRYPTED_EXTENDED_REGISTER_DATA.hex", 0x0F),
        ("lg_e450__ENCRYPTED_DATA_NO_PUSHLIST.hex", 0xDB),
    ],
)
def test_e450_reassembles_one_notification(name: str, first_byte: int) -> None:
    apdus = gbt_apdus(name)
    messages, errors, reassembler = reassemble(apdus)
    assert errors == []
    assert reassembler.dropped == 0
    assert len(messages) == 1
    assert messages[0][0] == first_byte
    assert messages[0] == b"".join(decode_gbt(a).data for a in apdus)


def test_e450_restart_drops_the_incomplete_message() -> None:
    apdus = gbt_apdus("lg_e450__UNENCRYPTED_VALID_DATA.hex")
    assert [decode_gbt(a).block_number for a in apdus] == [1, 2, 1, 2, 3, 4]
    messages, errors, reassembler = reassemble(apdus)
    assert errors == []
    assert reassembler.dropped == 1
    assert len(messages) == 1
    assert messages[0][0] == 0x0F
    assert messages[0] == b"".join(decode_gbt(a).data for a in apdus[2:])


def test_e450_duplicated_block_is_rejected() -> None:
    apdus = gbt_apdus("lg_e450__UNENCRYPTED_INVALID_DATA.hex")
    assert [decode_gbt(a).block_number for a in apdus] == [1, 2, 2, 4, 3]
    messages, errors, _ = reassemble(apdus)
    assert messages == []
    assert len(errors) == 3  # the duplicate, then blocks 4 and 3 without a message in progress
    assert "block 2 where block 3" in str(errors[0])


# --- reassembler rules -----------------------------------------------------------------------------


def blocks_of(payload: bytes, size: int) -> list[GeneralBlockTransfer]:
    return [decode_gbt(b) for b in split_into_blocks(payload, size)]


def test_gap_drops_partial_and_next_message_still_works() -> None:
    blocks = blocks_of(bytes(range(40)), 10)
    reassembler = GbtReassembler()
    assert reassembler.add(blocks[0]) is None
    with pytest.raises(DecodeError, match="block 3 where block 2"):
        reassembler.add(blocks[2])
    with pytest.raises(DecodeError, match="block 2 where block 1"):
        reassembler.add(blocks[1])
    assert [reassembler.add(b) for b in blocks] == [None, None, None, bytes(range(40))]
    assert reassembler.dropped == 0


def test_size_bound() -> None:
    reassembler = GbtReassembler(max_size=25)
    blocks = blocks_of(bytes(30), 10)
    reassembler.add(blocks[0])
    reassembler.add(blocks[1])
    with pytest.raises(DecodeError, match="exceeds"):
        reassembler.add(blocks[2])
    assert reassembler.add(blocks_of(bytes(20), 20)[0]) == bytes(20)


@given(st.binary(max_size=2000), st.integers(1, 300), st.integers(1, 63))
def test_split_reassemble_round_trip(payload: bytes, size: int, window: int) -> None:
    reassembler = GbtReassembler()
    outputs = [reassembler.add(decode_gbt(b)) for b in split_into_blocks(payload, size, window=window)]
    assert outputs[-1] == payload
    assert all(o is None for o in outputs[:-1])


@given(
    st.builds(
        GeneralBlockTransfer,
        st.booleans(),
        st.booleans(),
        st.integers(0, 63),
        st.integers(0, 0xFFFF),
        st.integers(0, 0xFFFF),
        st.binary(max_size=400),
    )
)
def test_gbt_round_trip(gbt: GeneralBlockTransfer) -> None:
    assert decode_gbt(encode_gbt(gbt)) == gbt


@settings(max_examples=500)
@given(st.binary(max_size=300))
def test_fuzz_decode_gbt(data: bytes) -> None:
    reassembler = GbtReassembler(max_size=1000)
    with contextlib.suppress(DecodeError):
        reassembler.add(decode_gbt(data))
    with contextlib.suppress(DecodeError):
        reassembler.add(decode_gbt(b"\xe0" + data))


@settings(max_examples=300)
@given(st.binary(min_size=1, max_size=600), st.data())
def test_fuzz_mutated_and_truncated_blocks(payload: bytes, data: st.DataObject) -> None:
    reassembler = GbtReassembler()
    for block in split_into_blocks(payload, data.draw(st.integers(1, 200))):
        mutated = bytearray(block[: data.draw(st.integers(0, len(block)))])
        if mutated and data.draw(st.booleans()):
            mutated[data.draw(st.integers(0, len(mutated) - 1))] = data.draw(st.integers(0, 255))
        with contextlib.suppress(DecodeError):
            reassembler.add(decode_gbt(bytes(mutated)))
