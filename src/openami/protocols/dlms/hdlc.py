"""HDLC frame format type 3 as profiled for DLMS by IEC 62056-46 (sans-IO).

On the wire a frame is
``7E | format(2) | dest(1,2,4) | src(1,2,4) | control(1) | [HCS(2) | info] | FCS(2) | 7E``.
The format field holds the type (0xA), the segmentation bit and an 11-bit length that counts every byte
between the flags. DLMS does not byte-stuff: the length field, not flag hunting, delimits a frame, so a 0x7E
inside the information field is ordinary data. Both check sequences are CRC-16/X.25, sent low byte first.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from enum import Enum

from openami.protocols.crc import crc16_x25
from openami.protocols.dlms.errors import EncodeError, FrameError

__all__ = [
    "FLAG",
    "LLC_COMMAND",
    "LLC_RESPONSE",
    "FrameKind",
    "HdlcAddress",
    "HdlcFrame",
    "HdlcParameters",
    "HdlcStreamParser",
    "SegmentReassembler",
    "crc16_x25",
    "decode_frame",
    "decode_parameters",
    "encode_frame",
    "encode_parameters",
    "strip_llc",
]

FLAG = 0x7E
FORMAT_TYPE_3 = 0xA
SEGMENTATION_BIT = 0x08
MAX_LENGTH = 0x7FF
"""The 11-bit length field: the largest frame is this many bytes plus the two flags."""
MIN_LENGTH = 7
"""format(2) + dest(1) + src(1) + control(1) + FCS(2)."""

LLC_COMMAND = b"\xe6\xe6\x00"
LLC_RESPONSE = b"\xe6\xe7\x00"


def _check(data: bytes | memoryview | bytearray) -> bytes:
    return crc16_x25(data).to_bytes(2, "little")


# --- addresses ------------------------------------------------------------------------------------

_ADDRESS_BITS = {1: 7, 2: 7, 4: 14}
"""Wire size in bytes -> bits per part. One byte carries only the logical (upper) address."""


@dataclass(frozen=True, slots=True)
class HdlcAddress:
    """An HDLC address: the logical device (upper address) and, for servers, the physical device (lower).

    Each address byte carries 7 bits; its LSB set marks the last byte. A client address is one byte, a
    server address one byte (logical only), two (7 + 7 bits) or four (14 + 14 bits). ``size`` keeps the wire
    size a decoded address came in (some servers insist on four bytes even for small values); it is not
    part of equality, and ``None`` means the smallest size that fits.
    """

    logical: int
    physical: int | None = None
    size: int | None = field(default=None, compare=False)

    def encode(self) -> bytes:
        """The wire bytes; :class:`EncodeError` when the values do not fit the requested size."""
        size = self.size or self._smallest_size()
        bits = _ADDRESS_BITS.get(size)
        if bits is None or (size == 1) != (self.physical is None):
            raise EncodeError(f"HDLC address {self} cannot be encoded in {size} bytes")
        parts = (self.logical,) if self.physical is None else (self.logical, self.physical)
        if any(not 0 <= part < (1 << bits) for part in parts):
            raise EncodeError(f"HDLC address {self} out of range for {size} bytes")
        septets = [(part >> shift) & 0x7F for part in parts for shift in range(bits - 7, -1, -7)]
        out = bytearray(septet << 1 for septet in septets)
        out[-1] |= 1
        return bytes(out)

    def _smallest_size(self) -> int:
        if self.physical is None:
            return 1
        return 2 if max(self.logical, self.physical) <= 0x7F else 4

    @classmethod
    def decode(cls, buf: bytes | memoryview | bytearray, offset: int = 0) -> tuple[HdlcAddress, int]:
        """Read one address at ``offset``; returns it and the offset just after it."""
        end = _address_end(buf, offset, len(buf))
        assert end is not None  # with the limit at len(buf) a short buffer raises instead
        size = end - offset
        value = 0
        for byte in buf[offset:end]:
            value = (value << 7) | (byte >> 1)
        if size == 1:
            return cls(value, None, size), end
        bits = _ADDRESS_BITS[size]
        return cls(value >> bits, value & ((1 << bits) - 1), size), end


def _address_end(buf: bytes | memoryview | bytearray, offset: int, limit: int) -> int | None:
    """Where the address at ``offset`` ends; ``None`` while its bytes (before ``limit``) are missing."""
    for end in range(offset + 1, offset + 5):
        if end > limit:
            raise FrameError("HDLC frame ends inside an address", offset)
        if end > len(buf):
            return None
        if buf[end - 1] & 1:
            if end - offset not in _ADDRESS_BITS:
                raise FrameError(f"HDLC address of {end - offset} bytes", offset)
            return end
    raise FrameError("HDLC address longer than 4 bytes", offset)


# --- control field --------------------------------------------------------------------------------


class FrameKind(Enum):
    """The frame types of the DLMS HDLC profile (modulo-8 numbering)."""

    I = "I"  # noqa: E741 - the standard's name for the information frame
    RR = "RR"
    RNR = "RNR"
    SNRM = "SNRM"
    DISC = "DISC"
    UA = "UA"
    DM = "DM"
    FRMR = "FRMR"
    UI = "UI"


@dataclass(frozen=True, slots=True)
class _Control:
    mask: int
    pattern: int
    send_seq: bool
    recv_seq: bool


POLL_FINAL_BIT = 0x10
_CONTROL: dict[FrameKind, _Control] = {
    # I: RRR P SSS 0; S frames: RRR P/F xx01; U frames: fixed bits with P/F in bit 4.
    FrameKind.I: _Control(0x01, 0x00, send_seq=True, recv_seq=True),
    FrameKind.RR: _Control(0x0F, 0x01, send_seq=False, recv_seq=True),
    FrameKind.RNR: _Control(0x0F, 0x05, send_seq=False, recv_seq=True),
    FrameKind.SNRM: _Control(0xEF, 0x83, send_seq=False, recv_seq=False),
    FrameKind.DISC: _Control(0xEF, 0x43, send_seq=False, recv_seq=False),
    FrameKind.UA: _Control(0xEF, 0x63, send_seq=False, recv_seq=False),
    FrameKind.DM: _Control(0xEF, 0x0F, send_seq=False, recv_seq=False),
    FrameKind.FRMR: _Control(0xEF, 0x87, send_seq=False, recv_seq=False),
    FrameKind.UI: _Control(0xEF, 0x03, send_seq=False, recv_seq=False),
}


@dataclass(frozen=True, slots=True)
class HdlcFrame:
    """One HDLC frame; ``send_seq``/``recv_seq`` (0-7) are set exactly for the kinds that carry them."""

    dest: HdlcAddress
    src: HdlcAddress
    kind: FrameKind
    poll_final: bool = True
    send_seq: int | None = None
    recv_seq: int | None = None
    segmented: bool = False
    info: bytes = b""


def _encode_control(frame: HdlcFrame) -> int:
    spec = _CONTROL[frame.kind]
    control = spec.pattern | (POLL_FINAL_BIT if frame.poll_final else 0)
    for present, value, shift, name in (
        (spec.send_seq, frame.send_seq, 1, "send_seq"),
        (spec.recv_seq, frame.recv_seq, 5, "recv_seq"),
    ):
        if not present:
            if value is not None:
                raise EncodeError(f"{frame.kind.name} frames carry no {name}")
            continue
        if value is None or not 0 <= value <= 7:
            raise EncodeError(f"{frame.kind.name} frames need {name} in 0-7, got {value}")
        control |= value << shift
    return control


def _decode_control(control: int, offset: int) -> tuple[FrameKind, bool, int | None, int | None]:
    for kind, spec in _CONTROL.items():
        if control & spec.mask == spec.pattern:
            return (
                kind,
                bool(control & POLL_FINAL_BIT),
                (control >> 1) & 0x07 if spec.send_seq else None,
                control >> 5 if spec.recv_seq else None,
            )
    raise FrameError(f"unsupported HDLC control field 0x{control:02X}", offset)


# --- frames ---------------------------------------------------------------------------------------


def encode_frame(frame: HdlcFrame) -> bytes:
    """The frame with both flags; :class:`EncodeError` when it would exceed the 11-bit length."""
    header = frame.dest.encode() + frame.src.encode() + bytes([_encode_control(frame)])
    length = 2 + len(header) + (2 + len(frame.info) if frame.info else 0) + 2
    if length > MAX_LENGTH:
        raise EncodeError(f"HDLC frame of {length} bytes exceeds {MAX_LENGTH}")
    fmt = (FORMAT_TYPE_3 << 12) | (SEGMENTATION_BIT << 8 if frame.segmented else 0) | length
    body = bytearray(fmt.to_bytes(2, "big") + header)
    if frame.info:
        body += _check(body) + frame.info
    body += _check(body)
    return bytes([FLAG]) + bytes(body) + bytes([FLAG])


@dataclass(frozen=True, slots=True)
class _Header:
    """What the first bytes of a frame say, available before the whole frame has arrived."""

    length: int
    segmented: bool
    dest: HdlcAddress
    src: HdlcAddress
    control: int
    end: int
    """Where the information field (or, without one, the FCS) starts in the buffer."""
    has_info: bool


def _read_header(buf: bytes | bytearray, start: int) -> _Header | None:
    """Check the header of the frame whose opening flag is at ``start``; ``None`` while bytes are missing.

    Checking the format, addresses and HCS before the rest arrives lets the stream parser reject a false
    start (a 0x7E inside garbage) at once instead of waiting for up to 2 KiB that its length claims.
    """
    pos = start + 1
    if len(buf) < pos + 2:
        return None
    fmt = int.from_bytes(buf[pos : pos + 2], "big")
    if fmt >> 12 != FORMAT_TYPE_3:
        raise FrameError(f"HDLC frame format type 0x{fmt >> 12:X}, not 0xA", pos)
    length = fmt & MAX_LENGTH
    if length < MIN_LENGTH:
        raise FrameError(f"HDLC frame length {length} below {MIN_LENGTH}", pos)
    body_end = start + 1 + length - 2  # the FCS starts here
    dest_end = _address_end(buf, pos + 2, body_end)
    src_end = None if dest_end is None else _address_end(buf, dest_end, body_end)
    if src_end is None:
        return None
    if src_end >= body_end:
        raise FrameError("HDLC frame ends before its control field", src_end)
    if len(buf) <= src_end:
        return None
    dest, after_dest = HdlcAddress.decode(buf, pos + 2)
    src, after_src = HdlcAddress.decode(buf, after_dest)
    header_len = after_src + 1 - pos  # format .. control
    if length == header_len + 2:
        return _Header(
            length, bool(fmt >> 8 & SEGMENTATION_BIT), dest, src, buf[after_src], after_src + 1, False
        )
    if length < header_len + 5:
        raise FrameError(f"HDLC frame length {length} does not fit its header", pos)
    hcs_end = after_src + 3
    if len(buf) < hcs_end:
        return None
    if _check(buf[pos : after_src + 1]) != buf[after_src + 1 : hcs_end]:
        raise FrameError("HDLC header check sequence (HCS) mismatch", after_src + 1)
    return _Header(length, bool(fmt >> 8 & SEGMENTATION_BIT), dest, src, buf[after_src], hcs_end, True)


def _finish(buf: bytes | bytearray, start: int, header: _Header) -> HdlcFrame:
    """Check the closing flag and FCS of a complete frame and build it."""
    end = start + 1 + header.length
    if buf[end] != FLAG:
        raise FrameError("HDLC frame not closed by a flag", end)
    if _check(buf[start + 1 : end - 2]) != buf[end - 2 : end]:
        raise FrameError("HDLC frame check sequence (FCS) mismatch", end - 2)
    kind, poll_final, send_seq, recv_seq = _decode_control(header.control, header.end - 1)
    return HdlcFrame(
        dest=header.dest,
        src=header.src,
        kind=kind,
        poll_final=poll_final,
        send_seq=send_seq,
        recv_seq=recv_seq,
        segmented=header.segmented,
        info=bytes(buf[header.end : end - 2]) if header.has_info else b"",
    )


def decode_frame(raw: bytes) -> HdlcFrame:
    """Decode exactly one frame, flags included; anything wrong is a :class:`FrameError`."""
    if len(raw) < MIN_LENGTH + 2 or raw[0] != FLAG:
        raise FrameError("HDLC frame must start with a flag and hold at least 9 bytes", 0)
    header = _read_header(raw, 0)
    if header is None or header.length + 2 != len(raw):
        claimed = "?" if header is None else header.length + 2
        raise FrameError(f"HDLC length field says {claimed} bytes, got {len(raw)}", 1)
    return _finish(raw, 0, header)


class HdlcStreamParser:
    """Split a serial byte stream into frames, skipping whatever is not a valid frame.

    A frame is delimited by its length field; flags only mark where to look. Adjacent frames may share one
    flag or be separated by several. Broken frames and garbage are recorded in :attr:`errors` and the parser
    resynchronises on the next flag, so one bad byte costs at most the frames it touches. The buffer never
    holds more than one maximal frame between calls.
    """

    MAX_ERRORS = 1000
    """Errors kept for inspection; older ones are discarded so a noisy line cannot grow memory."""

    def __init__(self) -> None:
        self._buf = bytearray()
        self.errors: list[FrameError] = []

    def feed(self, data: bytes) -> list[HdlcFrame]:
        """Add bytes; returns the frames completed by them, in order."""
        self._buf += data
        frames = list(self._scan())
        del self.errors[: -self.MAX_ERRORS]
        return frames

    @property
    def buffered(self) -> int:
        """Bytes held for an incomplete frame (never more than one maximal frame plus its flags)."""
        return len(self._buf)

    def _scan(self) -> Iterator[HdlcFrame]:
        buf = self._buf
        pos = 0
        try:
            while pos < len(buf):
                if buf[pos] != FLAG:
                    flag = buf.find(FLAG, pos)
                    self.errors.append(
                        FrameError(f"{(flag if flag >= 0 else len(buf)) - pos} bytes outside a frame")
                    )
                    if flag < 0:
                        pos = len(buf)
                        break
                    pos = flag
                if pos + 1 < len(buf) and buf[pos + 1] == FLAG:
                    pos += 1  # idle flag, or the closing flag of the previous frame before an opening one
                    continue
                try:
                    header = _read_header(buf, pos)
                    if header is None or len(buf) < pos + header.length + 2:
                        break
                    frame = _finish(buf, pos, header)
                except FrameError as exc:
                    self.errors.append(exc)
                    flag = buf.find(FLAG, pos + 1)
                    pos = flag if flag >= 0 else len(buf)
                    continue
                yield frame
                pos += header.length + 1  # keep the closing flag: it may open the next frame
        finally:
            del buf[:pos]


# --- segmentation ---------------------------------------------------------------------------------


class SegmentReassembler:
    """Join the information fields of segmented frames (segmentation bit set on all but the last).

    Segments must come from the same pair of addresses; a frame from another pair, or a total above
    ``max_size``, drops the partial message with a :class:`FrameError`.
    """

    def __init__(self, max_size: int = 1 << 20) -> None:
        self.max_size = max_size
        self._parts: list[bytes] = []
        self._size = 0
        self._peers: tuple[HdlcAddress, HdlcAddress] | None = None

    def add(self, frame: HdlcFrame) -> bytes | None:
        """The whole information field once the last segment is in, else ``None``."""
        peers = (frame.dest, frame.src)
        if self._peers is not None and peers != self._peers:
            self._reset()
            raise FrameError(f"HDLC segment from {frame.src} to {frame.dest} inside another peer's message")
        if self._size + len(frame.info) > self.max_size:
            self._reset()
            raise FrameError(f"segmented HDLC message exceeds {self.max_size} bytes")
        self._parts.append(frame.info)
        self._size += len(frame.info)
        self._peers = peers
        if frame.segmented:
            return None
        whole = b"".join(self._parts)
        self._reset()
        return whole

    def _reset(self) -> None:
        self._parts = []
        self._size = 0
        self._peers = None


def strip_llc(info: bytes) -> bytes:
    """The APDU inside an information field that starts with the LLC header of a command or response."""
    if info[:3] in (LLC_COMMAND, LLC_RESPONSE):
        return info[3:]
    raise FrameError(f"information field does not start with an LLC header: {info[:3].hex()}", 0)


# --- parameter negotiation (SNRM / UA information field) ------------------------------------------

FORMAT_IDENTIFIER = 0x81
GROUP_IDENTIFIER = 0x80
_PARAMETERS = {
    0x05: ("max_info_tx", 2),
    0x06: ("max_info_rx", 2),
    0x07: ("window_tx", 4),
    0x08: ("window_rx", 4),
}
"""Parameter identifier -> field and the size it is sent in (as in the DLMS UA SNRM/UA example)."""


@dataclass(frozen=True)
class HdlcParameters:
    """The negotiable link parameters; the defaults are the ones that apply when SNRM/UA carry none."""

    max_info_tx: int = 128
    max_info_rx: int = 128
    window_tx: int = 1
    window_rx: int = 1


def encode_parameters(p: HdlcParameters) -> bytes:
    """The SNRM/UA information field: maximum lengths in 2 bytes, window sizes in 4."""
    body = bytearray()
    for pid, (name, size) in _PARAMETERS.items():
        value: int = getattr(p, name)
        if not 0 <= value < 1 << (8 * size):
            raise EncodeError(f"HDLC parameter {name}={value} does not fit {size} bytes")
        body += bytes([pid, size]) + value.to_bytes(size, "big")
    return bytes([FORMAT_IDENTIFIER, GROUP_IDENTIFIER, len(body)]) + bytes(body)


def decode_parameters(info: bytes) -> HdlcParameters:
    """Read the negotiated parameters; absent ones keep their defaults and unknown ones are skipped."""
    if not info:
        return HdlcParameters()
    if len(info) < 3 or info[0] != FORMAT_IDENTIFIER or info[1] != GROUP_IDENTIFIER:
        raise FrameError("HDLC parameters must start with 81 80 <length>", 0)
    if info[2] != len(info) - 3:
        raise FrameError(f"HDLC parameter group length {info[2]} but {len(info) - 3} bytes follow", 2)
    values: dict[str, int] = {}
    pos = 3
    while pos < len(info):
        if pos + 2 > len(info):
            raise FrameError("HDLC parameter truncated", pos)
        pid, size = info[pos], info[pos + 1]
        if not 1 <= size <= 4 or pos + 2 + size > len(info):
            raise FrameError(f"HDLC parameter 0x{pid:02X} with bad length {size}", pos + 1)
        if pid in _PARAMETERS:
            values[_PARAMETERS[pid][0]] = int.from_bytes(info[pos + 2 : pos + 2 + size], "big")
        pos += 2 + size
    return HdlcParameters(**values)
