"""General Block Transfer (GBT, APDU tag 0xE0): one long APDU carried as numbered blocks (sans-IO).

``E0 | block-control | block-number(2) | block-number-ack(2) | block-data (A-XDR octet-string)``.
The block-data length uses the A-XDR length form of :mod:`openami.protocols.dlms.axdr`.
Block-control holds the last-block flag (bit 7), the streaming flag (bit 6: more blocks of this window
follow without waiting for an acknowledgement) and the window size (bits 0-5). Push meters (e.g. L+G
E450) stream their DataNotification this way over unacknowledged HDLC UI frames.
"""

from __future__ import annotations

from dataclasses import dataclass

from openami.protocols.dlms.axdr import decode_length, encode_length
from openami.protocols.dlms.errors import DecodeError, EncodeError

__all__ = [
    "GBT_TAG",
    "GbtReassembler",
    "GeneralBlockTransfer",
    "decode_gbt",
    "encode_gbt",
    "split_into_blocks",
]

GBT_TAG = 0xE0
LAST_BLOCK_BIT = 0x80
STREAMING_BIT = 0x40
WINDOW_MASK = 0x3F
MAX_BLOCK_NUMBER = 0xFFFF


@dataclass(frozen=True, slots=True)
class GeneralBlockTransfer:
    """One GBT APDU. ``block_number_ack`` acknowledges the peer's blocks (0 when nothing to acknowledge)."""

    last_block: bool
    streaming: bool
    window: int
    block_number: int
    block_number_ack: int
    data: bytes


def decode_gbt(apdu: bytes) -> GeneralBlockTransfer:
    """Decode one GBT APDU; the block-data must end exactly where the APDU ends."""
    if len(apdu) < 6 or apdu[0] != GBT_TAG:
        raise DecodeError("not a general-block-transfer APDU (tag 0xE0, at least 6 bytes)", 0)
    control = apdu[1]
    length, start = decode_length(apdu, 6)
    if start + length != len(apdu):
        raise DecodeError(f"GBT block-data length {length} but {len(apdu) - start} bytes follow", 6)
    return GeneralBlockTransfer(
        last_block=bool(control & LAST_BLOCK_BIT),
        streaming=bool(control & STREAMING_BIT),
        window=control & WINDOW_MASK,
        block_number=int.from_bytes(apdu[2:4], "big"),
        block_number_ack=int.from_bytes(apdu[4:6], "big"),
        data=bytes(apdu[start:]),
    )


def encode_gbt(gbt: GeneralBlockTransfer) -> bytes:
    """Encode one GBT APDU; :class:`EncodeError` for fields out of range."""
    if not 0 <= gbt.window <= WINDOW_MASK:
        raise EncodeError(f"GBT window {gbt.window} not in 0-63")
    if not (0 <= gbt.block_number <= MAX_BLOCK_NUMBER and 0 <= gbt.block_number_ack <= MAX_BLOCK_NUMBER):
        raise EncodeError(f"GBT block numbers {gbt.block_number}/{gbt.block_number_ack} not in 0-65535")
    control = (LAST_BLOCK_BIT if gbt.last_block else 0) | (STREAMING_BIT if gbt.streaming else 0) | gbt.window
    return (
        bytes([GBT_TAG, control])
        + gbt.block_number.to_bytes(2, "big")
        + gbt.block_number_ack.to_bytes(2, "big")
        + encode_length(len(gbt.data))
        + gbt.data
    )


def split_into_blocks(apdu: bytes, block_size: int, *, window: int = 1) -> list[bytes]:
    """Encode ``apdu`` as GBT blocks numbered from 1, each carrying at most ``block_size`` bytes.

    Blocks go out in windows of ``window``: every block but the last of a window (and the last block of
    the message) has the streaming flag, telling the receiver not to acknowledge yet.
    """
    if block_size < 1:
        raise EncodeError(f"GBT block size {block_size} must be positive")
    chunks = [apdu[i : i + block_size] for i in range(0, len(apdu), block_size)] or [b""]
    if len(chunks) > MAX_BLOCK_NUMBER:
        raise EncodeError(f"{len(chunks)} GBT blocks exceed the 16-bit block number")
    last = len(chunks)
    return [
        encode_gbt(
            GeneralBlockTransfer(
                last_block=number == last,
                streaming=number != last and number % window != 0,
                window=window,
                block_number=number,
                block_number_ack=0,
                data=chunk,
            )
        )
        for number, chunk in enumerate(chunks, start=1)
    ]


class GbtReassembler:
    """Collect the blocks of one message in order and hand back the whole APDU after the last block.

    Block 1 always starts a new message: a meter that restarts a push abandons the old one, which is
    dropped and counted in :attr:`dropped`. Any other block must be the next number; a duplicate, a gap or
    a block without its predecessors raises :class:`DecodeError` and drops the partial message, since
    pushes are never retransmitted and a message with a hole cannot be decoded.
    """

    def __init__(self, max_size: int = 1 << 20) -> None:
        self.max_size = max_size
        self.dropped = 0
        self._parts: list[bytes] = []
        self._size = 0
        self._next = 0
        """The block number expected next; 0 when no message is in progress."""

    def add(self, gbt: GeneralBlockTransfer) -> bytes | None:
        """The reassembled APDU when ``gbt`` is the last block, else ``None``."""
        if gbt.block_number == 1:
            if self._next:
                self.dropped += 1
            self._reset()
        elif gbt.block_number != self._next:
            expected = self._next or 1
            self._reset()
            raise DecodeError(f"GBT block {gbt.block_number} where block {expected} was expected")
        if self._size + len(gbt.data) > self.max_size:
            self._reset()
            raise DecodeError(f"GBT message exceeds {self.max_size} bytes")
        self._parts.append(gbt.data)
        self._size += len(gbt.data)
        self._next = gbt.block_number + 1
        if not gbt.last_block:
            return None
        whole = b"".join(self._parts)
        self._reset()
        return whole

    def _reset(self) -> None:
        self._parts = []
        self._size = 0
        self._next = 0
