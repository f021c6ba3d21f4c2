"""Envelopes: one payload, compressed, encrypted and authenticated under the gateway's own key.

Wire format (all integers big-endian)::

    0  2  magic "OA"
    2  1  version (1)
    3  1  flags: bits 0-1 compression (0 none, 1 zlib, 2 zstd), bit 7 direction (0 up, 1 down)
    4  1  kind (:class:`Kind`)
    5  8  sequence number, per gateway and direction, never reused
    13 12 nonce (random)
    25 .. AES-256-GCM ciphertext of the (compressed) payload, then the 16-byte tag

The additional authenticated data is the 25-byte header followed by the gateway id, so an envelope
cannot be altered, have its sequence number or kind changed, be reflected back in the other direction
(a gateway's own batch is no acknowledgement), or be moved onto another gateway's topic without the
tag failing. A broker (or anyone on the path) learns sizes and timing, nothing else.

Replays are stopped by a sliding window (:class:`ReplayWindow`, as IPsec does): a sequence number is
accepted once, also out of order within the window, and one older than the window is refused. The
receiver checks the tag first and the window second, so forged envelopes never move the window.
"""

from __future__ import annotations

import os
import zlib
from dataclasses import dataclass
from enum import IntEnum
from typing import Any, Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from openami.protocols.edge.errors import (
    EnvelopeFormatError,
    EnvelopeTooLargeError,
    ReplayError,
    TamperedEnvelopeError,
)

__all__ = [
    "HEADER_LENGTH",
    "KEY_LENGTH",
    "MAX_PAYLOAD_BYTES",
    "Compression",
    "Direction",
    "Envelope",
    "Header",
    "Kind",
    "Opener",
    "ReplayWindow",
    "peek",
    "seal",
]

MAGIC: Final = b"OA"
VERSION: Final = 1
HEADER_LENGTH: Final = 25
KEY_LENGTH: Final = 32
TAG_LENGTH: Final = 16
NONCE_LENGTH: Final = 12
MAX_PAYLOAD_BYTES: Final = 32 * 1024 * 1024
"""Largest payload after decompression: a day of 15-minute data from 1,500 meters is a few MB."""
WINDOW: Final = 4096
"""Sequence numbers below the highest accepted one that may still arrive (out of order) once."""
_MAX_SEQ: Final = 2**64 - 1


class Compression(IntEnum):
    NONE = 0
    ZLIB = 1
    ZSTD = 2


class Direction(IntEnum):
    UP = 0
    """Gateway to head-end."""
    DOWN = 1
    """Head-end to gateway."""


class Kind(IntEnum):
    BATCH = 1
    """Readings and meter events from the gateway's archive."""
    ACK = 2
    """Sequence numbers the receiver has stored (either direction)."""
    HEALTH = 3
    ALARM = 4
    """Alarms and meter events forwarded at once, outside the batch cycle."""
    DISCOVERY = 5
    """New meters found (secondary search, installation telegrams), pending approval."""
    CONFIG = 6
    """Configuration and meter list pushed by the head-end."""
    TIME = 7
    """Time synchronisation request (up) and answer (down)."""
    COMMAND = 8


@dataclass(frozen=True, slots=True)
class Envelope:
    """An opened envelope: what was sealed, and how."""

    kind: Kind
    seq: int
    direction: Direction
    compression: Compression
    payload: bytes


def _check_key(key: bytes) -> AESGCM:
    if len(key) != KEY_LENGTH:
        raise ValueError(f"gateway keys are {KEY_LENGTH} bytes (AES-256), not {len(key)}")
    return AESGCM(key)


def _zstd() -> object:
    try:
        import zstandard
    except ImportError:  # pragma: no cover - a core dependency; only a broken install lacks it
        raise EnvelopeFormatError("zstd compression needs the 'zstandard' package") from None
    return zstandard


def _compress(payload: bytes, compression: Compression) -> bytes:
    if compression is Compression.NONE:
        return payload
    if compression is Compression.ZLIB:
        return zlib.compress(payload, 6)
    zstandard: Any = _zstd()
    return bytes(zstandard.ZstdCompressor(level=6, write_content_size=True).compress(payload))


def _decompress(data: bytes, compression: Compression, limit: int) -> bytes:
    if compression is Compression.NONE:
        out = data
    elif compression is Compression.ZLIB:
        inflater = zlib.decompressobj()
        try:
            out = inflater.decompress(data, limit + 1)
        except zlib.error as exc:
            raise EnvelopeFormatError(f"zlib payload does not inflate: {exc}") from None
        if len(out) <= limit and not inflater.eof:
            raise EnvelopeFormatError("zlib payload is truncated")
    else:
        out = _unzstd(data, limit)
    if len(out) > limit:
        raise EnvelopeTooLargeError(f"payload inflates beyond {limit} bytes")
    return bytes(out)


def _unzstd(data: bytes, limit: int) -> bytes:
    """Our sealer writes the content size into the zstd frame; the size is checked against ``limit``
    before anything is allocated, and a frame that does not declare it is refused."""
    zstandard: Any = _zstd()
    try:
        size = zstandard.frame_content_size(data)
        if size < 0:
            raise EnvelopeFormatError("zstd frame does not declare its content size")
        if size > limit:
            raise EnvelopeTooLargeError(f"payload inflates beyond {limit} bytes")
        out = bytes(zstandard.ZstdDecompressor().decompress(data))
    except zstandard.ZstdError as exc:
        raise EnvelopeFormatError(f"zstd payload does not decompress: {exc}") from None
    if len(out) != size:
        raise EnvelopeFormatError("zstd payload is shorter than it declares")
    return out


def _header(kind: Kind, seq: int, direction: Direction, compression: Compression, nonce: bytes) -> bytes:
    flags = int(compression) | (int(direction) << 7)
    return MAGIC + bytes([VERSION, flags, int(kind)]) + seq.to_bytes(8, "big") + nonce


def seal(
    key: bytes,
    gateway: str,
    kind: Kind,
    seq: int,
    payload: bytes,
    *,
    direction: Direction = Direction.UP,
    compression: Compression = Compression.ZLIB,
    nonce: bytes | None = None,
) -> bytes:
    """The envelope of ``payload``. ``nonce`` is for tests; leave it out (12 random bytes)."""
    aead = _check_key(key)
    if not 0 <= seq <= _MAX_SEQ:
        raise ValueError("sequence numbers are 0 .. 2**64-1")
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise ValueError(f"payload of {len(payload)} bytes exceeds {MAX_PAYLOAD_BYTES}")
    nonce = os.urandom(NONCE_LENGTH) if nonce is None else nonce
    if len(nonce) != NONCE_LENGTH:
        raise ValueError(f"nonces are {NONCE_LENGTH} bytes")
    header = _header(kind, seq, direction, compression, nonce)
    body = aead.encrypt(nonce, _compress(payload, compression), header + gateway.encode())
    return header + body


@dataclass(frozen=True, slots=True)
class Header:
    kind: Kind
    seq: int
    direction: Direction
    compression: Compression
    nonce: bytes


def peek(data: bytes) -> Header:
    """The header of an envelope, unauthenticated (for routing and logs only; trust only :class:`Opener`)."""
    if len(data) < HEADER_LENGTH + TAG_LENGTH:
        raise EnvelopeFormatError(f"{len(data)} bytes is shorter than an envelope")
    if data[:2] != MAGIC:
        raise EnvelopeFormatError("not an OpenAMI gateway envelope (magic)")
    if data[2] != VERSION:
        raise EnvelopeFormatError(f"envelope version {data[2]} is not supported")
    flags = data[3]
    try:
        compression = Compression(flags & 0x03)
        kind = Kind(data[4])
    except ValueError as exc:
        raise EnvelopeFormatError(f"envelope header: {exc}") from None
    if flags & 0x7C:
        raise EnvelopeFormatError(f"reserved envelope flags {flags:#04x}")
    return Header(kind, int.from_bytes(data[5:13], "big"), Direction(flags >> 7), compression, data[13:25])


@dataclass(slots=True)
class ReplayWindow:
    """The sequence numbers already accepted: the highest, and a bit per number below it in the window.

    Plain data, so the receiver can persist it (two integers) and restore it after a restart.
    """

    highest: int = -1
    mask: int = 0
    """Bit ``i`` set: ``highest - i`` was accepted (bit 0 is ``highest`` itself)."""

    def seen(self, seq: int) -> bool:
        if seq > self.highest:
            return False
        offset = self.highest - seq
        return offset >= WINDOW or bool(self.mask >> offset & 1)

    def accept(self, seq: int) -> None:
        """Mark ``seq`` accepted. A jump of a whole window or more (a gateway starting a new archive)
        starts the mask afresh; a number older than the window changes nothing (:meth:`seen` refuses
        it anyway), so the mask never grows past :data:`WINDOW` bits."""
        if seq > self.highest:
            shift = seq - self.highest
            if self.highest < 0 or shift >= WINDOW:
                self.mask = 1
            else:
                self.mask = ((self.mask << shift) | 1) & ((1 << WINDOW) - 1)
            self.highest = seq
        elif self.highest - seq < WINDOW:
            self.mask |= 1 << (self.highest - seq)


class Opener:
    """Opens one gateway's envelopes of one direction, refusing forgeries and replays.

    ``window`` is the replay state to continue from (persist it after each accepted envelope);
    ``max_payload`` bounds decompression.
    """

    def __init__(
        self,
        key: bytes,
        gateway: str,
        *,
        direction: Direction = Direction.UP,
        window: ReplayWindow | None = None,
        max_payload: int = MAX_PAYLOAD_BYTES,
    ) -> None:
        self._aead = _check_key(key)
        self.gateway = gateway
        self.direction = direction
        self.window = window or ReplayWindow()
        self.max_payload = max_payload

    def open(self, data: bytes, *, accept: bool = True) -> Envelope:
        """Authenticate, check the window, decompress. ``accept=False`` leaves the window unchanged (to
        accept only once the payload is stored: :meth:`accept`)."""
        header = peek(data)
        if header.direction is not self.direction:
            raise TamperedEnvelopeError(
                f"envelope travels {header.direction.name}, not {self.direction.name}"
            )
        aad = data[:HEADER_LENGTH] + self.gateway.encode()
        try:
            plain = self._aead.decrypt(header.nonce, data[HEADER_LENGTH:], aad)
        except InvalidTag:
            raise TamperedEnvelopeError(f"envelope {header.seq} does not verify for {self.gateway}") from None
        if self.window.seen(header.seq):
            raise ReplayError(header.seq, self.window.highest)
        payload = _decompress(plain, header.compression, self.max_payload)
        if accept:
            self.window.accept(header.seq)
        return Envelope(header.kind, header.seq, header.direction, header.compression, payload)

    def accept(self, seq: int) -> None:
        """Mark ``seq`` accepted (after :meth:`open` with ``accept=False`` and the payload is stored)."""
        self.window.accept(seq)
