"""The HDLC link of IEC 62056-46 that carries DLMS sessions over serial lines and terminal servers (sans-IO).

Why sans-IO: the same state machine runs over a TCP socket to a terminal server, over a serial line, in
the simulator and in tests. It takes received bytes and returns events, and queues the bytes to send in
:meth:`data_to_send`; the caller owns the socket or tty and bounds every wait with its own time-out.

What it covers (normal response mode, modulo-8 numbering, the DLMS profile of frame format type 3):

- SNRM/UA with parameter negotiation. Parameters are stated from the sender's side: the client's SNRM says
  what it would transmit and receive, the meter's UA what it will. A UA without parameters means the
  defaults (128-byte information fields, window 1).
- I-frames with N(S)/N(R); an APDU longer than the negotiated information field is cut into frames with
  the segmentation bit set on all but the last and joined again on reception. The poll/final bit closes
  each window (1 to 7 frames); the receiver of a closed window that is not the end of the APDU asks for
  more with RR.
- Checkpoint recovery: a poll whose N(R) shows that frames were lost makes the other station send them
  again, so a client may repeat its last frames (:meth:`HdlcClientLink.resend`) after a time-out.
- DISC/UA, DM, FRMR. The client turns DM and FRMR into :class:`LinkRefused` and :class:`FrameRejected`;
  the meter answers what breaks the protocol (N(R) for frames never sent, an information field above the
  negotiated length, a missing LLC header, a response frame sent as a command) with FRMR and then answers
  every frame with FRMR until the next SNRM or DISC, as the standard has it.
- The LLC header opens the first information field of every APDU: E6 E6 00 from the client, E6 E7 00 from
  the meter.

Bounds: the frame parser holds at most one frame, reassembly at most ``max_apdu`` bytes, the frames kept
for retransmission one window. A peer that sends only broken bytes ends in :class:`FrameError`, a meter
that breaks the protocol in a :class:`LinkError`.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from enum import Enum, IntFlag

from openami.protocols.dlms.errors import DlmsError, EncodeError, FrameError
from openami.protocols.dlms.hdlc import (
    LLC_COMMAND,
    LLC_RESPONSE,
    MAX_LENGTH,
    FrameKind,
    HdlcAddress,
    HdlcFrame,
    HdlcParameters,
    HdlcStreamParser,
    SegmentReassembler,
    _encode_control,
    decode_parameters,
    encode_frame,
    encode_parameters,
)

__all__ = [
    "DEFAULT_MAX_APDU",
    "MAX_WINDOW",
    "MIN_INFO_LENGTH",
    "ApduReceived",
    "Connected",
    "Disconnected",
    "FrameRejected",
    "FrmrReason",
    "HdlcClientLink",
    "HdlcServerLink",
    "LinkError",
    "LinkEvent",
    "LinkRefused",
    "LinkState",
    "SequenceError",
]

MIN_INFO_LENGTH = 32
"""Smallest information field either side accepts to negotiate: below it an APDU would take absurdly
many frames (a UA offering 0 would never finish one)."""
MAX_WINDOW = 7
"""Modulo-8 numbering allows at most seven frames unacknowledged."""
DEFAULT_MAX_APDU = 1 << 17
"""Largest APDU reassembled by default: above the 64 KiB an association negotiates, plus ciphering."""
MAX_BROKEN = 16
"""Broken frames or stray byte runs in a row before the link gives up with :class:`FrameError`."""
MAX_RESENDS = 3
"""Times in a row the client repeats frames the meter's N(R) says it lost before giving up."""
_MODULUS = 8
_LLC_SIZE = len(LLC_COMMAND)


class LinkError(DlmsError):
    """The HDLC link broke: the peer answered out of protocol, refused, or rejected a frame."""


class LinkRefused(LinkError):
    """The meter answered DM: it refuses the connection, or holds none for us."""


class SequenceError(LinkError):
    """A frame's N(S) or N(R) does not follow the frames exchanged so far."""


class FrmrReason(IntFlag):
    """The reason bits of an FRMR information field (W, X, Y, Z of ISO/IEC 13239)."""

    INVALID_CONTROL = 0x01
    INFO_NOT_PERMITTED = 0x02
    INFO_TOO_LONG = 0x04
    INVALID_NR = 0x08


class FrameRejected(LinkError):
    """The meter answered FRMR; ``info`` is its information field, ``reasons`` the bits it set."""

    def __init__(self, info: bytes) -> None:
        self.info = info
        self.reasons = FrmrReason(info[2] & 0x0F) if len(info) >= 3 else FrmrReason(0)
        named = ", ".join(reason.name or "" for reason in FrmrReason if reason in self.reasons)
        control = f"0x{info[0]:02X}" if info else "?"
        super().__init__(f"meter rejected the frame with control {control} (FRMR: {named or 'no reason'})")


class LinkState(Enum):
    DISCONNECTED = "disconnected"
    CONNECTING = "connecting"
    CONNECTED = "connected"
    DISCONNECTING = "disconnecting"
    REJECTED = "rejected"
    """Meter side, after an FRMR: only SNRM or DISC gets the link out of it."""


@dataclass(frozen=True, slots=True)
class Connected:
    """The link is up; ``parameters`` are the negotiated ones, as this station sees them."""

    parameters: HdlcParameters
    peer: HdlcAddress


@dataclass(frozen=True, slots=True)
class Disconnected:
    peer: HdlcAddress


@dataclass(frozen=True, slots=True)
class ApduReceived:
    """A whole APDU, segments joined and LLC header removed; ``peer`` is the station that sent it."""

    apdu: bytes
    peer: HdlcAddress


LinkEvent = Connected | Disconnected | ApduReceived


@dataclass(frozen=True, slots=True)
class _Sent:
    """An I-frame kept until acknowledged, to be sent again if the peer's N(R) says it was lost."""

    send_seq: int
    info: bytes
    segmented: bool


def _max_info(a: HdlcAddress, b: HdlcAddress) -> int:
    """The largest information field the 11-bit length allows between these two addresses."""
    return MAX_LENGTH - 7 - len(a.encode()) - len(b.encode())


class _Station:
    """What both ends share: the outgoing byte queue, sequence numbers, segmentation and reassembly."""

    def __init__(
        self,
        local: HdlcAddress,
        peer: HdlcAddress,
        llc_out: bytes,
        llc_in: bytes,
        parameters: HdlcParameters,
        max_apdu: int,
    ) -> None:
        for address in (local, peer):
            address.encode()  # EncodeError now rather than on the first frame
        self.local = local
        self.peer = peer
        self.parameters = parameters
        self.negotiated = HdlcParameters()
        self.state = LinkState.DISCONNECTED
        self.max_apdu = max_apdu
        self._llc_out, self._llc_in = llc_out, llc_in
        self._parser = HdlcStreamParser()
        self._out = bytearray()
        self._broken = 0
        self._reset()

    def _reset(self) -> None:
        self._vs = self._vr = 0
        self._unacked: deque[_Sent] = deque()
        self._pending: deque[tuple[bytes, bool]] = deque()
        self._inbound = SegmentReassembler(self.max_apdu + _LLC_SIZE)

    def data_to_send(self) -> bytes:
        """The bytes queued since the last call (frames, flags included), to be written in this order."""
        out = bytes(self._out)
        self._out.clear()
        return out

    def _emit(
        self, kind: FrameKind, *, poll: bool = True, dest: HdlcAddress | None = None, info: bytes = b""
    ) -> None:
        recv_seq = self._vr if kind in (FrameKind.RR, FrameKind.RNR) else None
        frame = HdlcFrame(dest or self.peer, self.local, kind, poll, recv_seq=recv_seq, info=info)
        self._out += encode_frame(frame)

    def _frames(self, data: bytes) -> list[HdlcFrame]:
        parser = self._parser
        frames = parser.feed(data)
        if parser.errors:
            self._broken += len(parser.errors)
            last = parser.errors[-1]
            parser.errors.clear()
            if self._broken > MAX_BROKEN:
                raise FrameError(
                    f"{self._broken} broken HDLC frames or stray bytes in a row, last: {last.reason}"
                )
        if frames:
            self._broken = 0
        return frames

    # --- sending -----------------------------------------------------------------------------------

    def _queue(self, apdu: bytes) -> None:
        if len(apdu) > self.max_apdu:
            raise EncodeError(f"APDU of {len(apdu)} bytes above the link's limit {self.max_apdu}")
        info = self._llc_out + apdu
        size = self.negotiated.max_info_tx
        last = len(info) - 1
        self._pending.extend((info[at : at + size], at + size <= last) for at in range(0, len(info), size))

    def _send_window(self) -> None:
        """Send as many queued segments as the window has room for, the poll/final bit on the last one."""
        count = min(self.negotiated.window_tx - len(self._unacked), len(self._pending))
        for index in range(count):
            info, segmented = self._pending.popleft()
            sent = _Sent(self._vs, info, segmented)
            self._unacked.append(sent)
            self._vs = (self._vs + 1) % _MODULUS
            self._emit_i(sent, poll=index == count - 1)

    def _resend_unacked(self) -> None:
        last = len(self._unacked) - 1
        for index, sent in enumerate(self._unacked):
            self._emit_i(sent, poll=index == last)

    def _emit_i(self, sent: _Sent, *, poll: bool) -> None:
        frame = HdlcFrame(
            self.peer, self.local, FrameKind.I, poll, sent.send_seq, self._vr, sent.segmented, sent.info
        )
        self._out += encode_frame(frame)

    def _acknowledge(self, recv_seq: int | None) -> bool:
        """Forget the frames N(R) acknowledges; ``False`` when it acknowledges frames never sent."""
        oldest = self._unacked[0].send_seq if self._unacked else self._vs
        count = ((recv_seq or 0) - oldest) % _MODULUS
        if count > len(self._unacked):
            return False
        for _ in range(count):
            self._unacked.popleft()
        return True

    def _negotiate(self, offer: HdlcParameters) -> HdlcParameters | None:
        """This station's view of the link given the peer's view ``offer``; ``None`` when unusable."""
        own, limit = self.parameters, _max_info(self.local, self.peer)
        result = HdlcParameters(
            max_info_tx=min(own.max_info_tx, offer.max_info_rx, limit),
            max_info_rx=min(own.max_info_rx, offer.max_info_tx, limit),
            window_tx=min(own.window_tx, offer.window_rx, MAX_WINDOW),
            window_rx=min(own.window_rx, offer.window_tx, MAX_WINDOW),
        )
        if min(result.max_info_tx, result.max_info_rx) < MIN_INFO_LENGTH:
            return None
        if min(result.window_tx, result.window_rx) < 1:
            return None
        return result


class HdlcClientLink(_Station):
    """The client (primary station): it connects, sends requests and polls for the answers.

    ``parameters`` is what the client proposes in its SNRM (its own view); ``negotiated`` holds the result
    once :class:`Connected` has come. Frames from or to other stations (a multi-drop line, an echo) are
    ignored; a meter at another address therefore never answers and the caller's time-out ends the wait.
    """

    def __init__(
        self,
        server: HdlcAddress,
        client: HdlcAddress,
        parameters: HdlcParameters | None = None,
        *,
        max_apdu: int = DEFAULT_MAX_APDU,
    ) -> None:
        if client.physical is not None:
            raise EncodeError(f"an HDLC client address is one byte (logical only), got {client}")
        super().__init__(client, server, LLC_COMMAND, LLC_RESPONSE, parameters or HdlcParameters(), max_apdu)
        self._resends = 0

    def connect(self) -> None:
        """Queue SNRM with the proposed parameters; :class:`Connected` follows the meter's UA."""
        self._reset()
        self.state = LinkState.CONNECTING
        self._emit(FrameKind.SNRM, info=encode_parameters(self.parameters))

    def send(self, apdu: bytes) -> None:
        """Queue one request APDU; :class:`ApduReceived` carries the meter's answer."""
        if self.state is not LinkState.CONNECTED:
            raise LinkError(f"cannot send an APDU while the link is {self.state.value}")
        if self._pending:
            raise LinkError("the previous APDU is still being sent")
        self._resends = 0
        self._queue(apdu)
        self._send_window()

    def disconnect(self) -> None:
        """Queue DISC; :class:`Disconnected` follows the meter's UA or DM."""
        if self.state is LinkState.DISCONNECTED:
            return
        self.state = LinkState.DISCONNECTING
        self._emit(FrameKind.DISC)

    def resend(self) -> None:
        """After a time-out: repeat the last command, so a lost frame in either direction is recovered.

        Unacknowledged I-frames go again (a meter that had them discards them as out of sequence and
        repeats its answer); otherwise an RR polls for the answer from where it stopped.
        """
        if self.state is LinkState.CONNECTING:
            self._emit(FrameKind.SNRM, info=encode_parameters(self.parameters))
        elif self.state is LinkState.DISCONNECTING:
            self._emit(FrameKind.DISC)
        elif self.state is LinkState.CONNECTED:
            if self._unacked:
                self._resend_unacked()
            else:
                self._emit(FrameKind.RR)

    def receive(self, data: bytes) -> list[LinkEvent]:
        """Feed received bytes; returns what they completed. Protocol breaches raise :class:`LinkError`."""
        events: list[LinkEvent] = []
        for frame in self._frames(data):
            if frame.dest != self.local or frame.src != self.peer:
                continue
            event = self._handle(frame)
            if event is not None:
                events.append(event)
        return events

    def _handle(self, frame: HdlcFrame) -> LinkEvent | None:
        kind, state = frame.kind, self.state
        if kind is FrameKind.UA:
            if state is LinkState.CONNECTING:
                negotiated = self._negotiate(decode_parameters(frame.info))
                if negotiated is None:
                    self.state = LinkState.DISCONNECTED
                    raise LinkError(f"meter negotiated unusable HDLC parameters: {frame.info.hex()}")
                self.negotiated, self.state = negotiated, LinkState.CONNECTED
                return Connected(negotiated, frame.src)
            if state is LinkState.DISCONNECTING:
                self.state = LinkState.DISCONNECTED
                return Disconnected(frame.src)
            raise LinkError(f"unexpected UA while the link is {state.value}")
        if kind is FrameKind.DM:
            self.state = LinkState.DISCONNECTED
            if state is LinkState.DISCONNECTING:
                return Disconnected(frame.src)
            if state is LinkState.CONNECTING:
                raise LinkRefused(f"meter {frame.src} refused the connection (DM)")
            raise LinkRefused(f"meter {frame.src} holds no connection for us (DM while {state.value})")
        if kind is FrameKind.FRMR:
            self.state = LinkState.DISCONNECTED
            raise FrameRejected(frame.info)
        if kind is FrameKind.UI:
            return None
        if state is not LinkState.CONNECTED:
            raise LinkError(f"{kind.name} frame while the link is {state.value}")
        if kind in (FrameKind.RR, FrameKind.RNR):
            if not self._acknowledge(frame.recv_seq):
                raise SequenceError(f"meter acknowledged frames never sent (N(R)={frame.recv_seq})")
            if kind is FrameKind.RR and frame.poll_final:
                self._continue()
            return None
        if kind is FrameKind.I:
            return self._take(frame)
        raise LinkError(f"meter sent the command {kind.name}")

    def _continue(self) -> None:
        """The meter answered a window with RR: repeat what it lost, or send the next window."""
        if self._unacked:
            self._resends += 1
            if self._resends > MAX_RESENDS:
                raise SequenceError(f"meter lost the same frames {self._resends} times")
            self._resend_unacked()
        elif self._pending:
            self._resends = 0
            self._send_window()

    def _take(self, frame: HdlcFrame) -> ApduReceived | None:
        if not self._acknowledge(frame.recv_seq):
            raise SequenceError(f"meter acknowledged frames never sent (N(R)={frame.recv_seq})")
        if frame.send_seq != self._vr:
            raise SequenceError(f"meter sent N(S)={frame.send_seq}, {self._vr} was expected")
        self._vr = (self._vr + 1) % _MODULUS
        whole = self._inbound.add(frame)
        if whole is None:
            if frame.poll_final:
                self._emit(FrameKind.RR)  # end of a window inside the APDU: ask for the next one
            return None
        if whole[:_LLC_SIZE] != self._llc_in:
            raise FrameError(f"answer does not start with the LLC header E6 E7 00: {whole[:3].hex()}", 0)
        self._unacked.clear()  # an answer means the whole request arrived
        return ApduReceived(whole[_LLC_SIZE:], frame.src)


class HdlcServerLink(_Station):
    """The meter (secondary station) at ``address``: it answers only when polled and only its address.

    ``parameters`` are the meter's own limits (its view); each SNRM is answered with the lower of those
    and the client's proposal. After :class:`ApduReceived` the caller queues the answer with :meth:`send`.
    A new SNRM from any client resets the link (and should reset the caller's associations).
    """

    def __init__(
        self,
        address: HdlcAddress,
        parameters: HdlcParameters | None = None,
        *,
        max_apdu: int = DEFAULT_MAX_APDU,
    ) -> None:
        super().__init__(
            address, HdlcAddress(0), LLC_RESPONSE, LLC_COMMAND, parameters or HdlcParameters(), max_apdu
        )
        self._frmr = b""

    def send(self, apdu: bytes) -> None:
        """Queue the answer to the APDU just received and send its first window."""
        if self.state is not LinkState.CONNECTED:
            raise LinkError(f"cannot send an APDU while the link is {self.state.value}")
        self._queue(apdu)
        self._send_window()

    def receive(self, data: bytes) -> list[LinkEvent]:
        """Feed received bytes; returns the events they completed. Only a flood of broken bytes raises."""
        events: list[LinkEvent] = []
        for frame in self._frames(data):
            if frame.dest != self.local:
                continue  # another station's frame: a meter stays silent
            event = self._handle(frame)
            if event is not None:
                events.append(event)
        return events

    def _handle(self, frame: HdlcFrame) -> LinkEvent | None:
        kind = frame.kind
        if kind is FrameKind.SNRM:
            return self._accept(frame)
        if kind is FrameKind.DISC:
            if self.state is not LinkState.DISCONNECTED and frame.src == self.peer:
                self._emit(FrameKind.UA)
                self.state = LinkState.DISCONNECTED
                self._reset()
                return Disconnected(frame.src)
            self._emit(FrameKind.DM, dest=frame.src)
            return None
        if self.state is LinkState.DISCONNECTED or frame.src != self.peer:
            if frame.poll_final:
                self._emit(FrameKind.DM, dest=frame.src)
            return None
        if self.state is LinkState.REJECTED:
            if frame.poll_final:
                self._emit(FrameKind.FRMR, info=self._frmr)
            return None
        if kind is FrameKind.UI:
            return None
        if kind not in (FrameKind.I, FrameKind.RR, FrameKind.RNR):
            return self._reject(frame, FrmrReason.INVALID_CONTROL)  # a response sent as a command
        if len(frame.info) > self.negotiated.max_info_rx:
            return self._reject(frame, FrmrReason.INFO_TOO_LONG)
        if not self._acknowledge(frame.recv_seq):
            return self._reject(frame, FrmrReason.INVALID_NR)
        if kind is FrameKind.I and frame.send_seq == self._vr:
            return self._take(frame)
        # RR, RNR, or an I-frame out of sequence (a repeat after a lost answer): discarded, but a poll
        # is answered from where the client's N(R) says it stands.
        if frame.poll_final:
            self._answer_poll()
        return None

    def _accept(self, frame: HdlcFrame) -> LinkEvent | None:
        self.peer, self.local = frame.src, frame.dest  # answer in the address sizes the client used
        try:
            negotiated = (
                None if frame.src.physical is not None else self._negotiate(decode_parameters(frame.info))
            )
        except FrameError:
            negotiated = None
        if negotiated is None:
            self.state = LinkState.DISCONNECTED
            self._emit(FrameKind.DM)
            return None
        self._reset()
        self.negotiated, self.state = negotiated, LinkState.CONNECTED
        self._emit(FrameKind.UA, info=encode_parameters(negotiated))
        return Connected(negotiated, frame.src)

    def _take(self, frame: HdlcFrame) -> LinkEvent | None:
        self._unacked.clear()  # a new request: the client has all it wanted of the previous answer
        self._pending.clear()
        self._vr = (self._vr + 1) % _MODULUS
        try:
            whole = self._inbound.add(frame)
        except FrameError:
            return self._reject(frame, FrmrReason.INFO_TOO_LONG)
        if whole is None:
            if frame.poll_final:
                self._emit(FrameKind.RR)  # ready for the next window of this request
            return None
        if whole[:_LLC_SIZE] != self._llc_in:
            return self._reject(frame, FrmrReason.INFO_NOT_PERMITTED)
        return ApduReceived(whole[_LLC_SIZE:], frame.src)

    def _answer_poll(self) -> None:
        if self._unacked:
            self._resend_unacked()
        elif self._pending:
            self._send_window()
        else:
            self._emit(FrameKind.RR)

    def _reject(self, frame: HdlcFrame, reason: FrmrReason) -> LinkEvent | None:
        """Enter the frame-reject condition: FRMR now (if polled) and to every poll until SNRM or DISC."""
        control = _encode_control(frame)
        self._frmr = bytes([control, self._vr << 5 | self._vs << 1, int(reason)])
        self.state = LinkState.REJECTED
        self._pending.clear()
        self._unacked.clear()
        if frame.poll_final:
            self._emit(FrameKind.FRMR, info=self._frmr)
        return None
