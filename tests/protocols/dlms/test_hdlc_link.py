"""The HDLC link state machine (IEC 62056-46), sans-IO: both stations wired to each other in memory."""

from __future__ import annotations

import contextlib
import random
import time
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from openami.protocols.dlms.errors import DlmsError, EncodeError, FrameError
from openami.protocols.dlms.hdlc import (
    LLC_COMMAND,
    LLC_RESPONSE,
    FrameKind,
    HdlcAddress,
    HdlcFrame,
    HdlcParameters,
    HdlcStreamParser,
    decode_parameters,
    encode_frame,
    encode_parameters,
)
from openami.protocols.dlms.hdlc_link import (
    MAX_BROKEN,
    ApduReceived,
    Connected,
    Disconnected,
    FrameRejected,
    FrmrReason,
    HdlcClientLink,
    HdlcServerLink,
    LinkError,
    LinkEvent,
    LinkRefused,
    LinkState,
    SequenceError,
)

pytestmark = pytest.mark.timeout(30)

SERVER = HdlcAddress(1, 17)
CLIENT = HdlcAddress(1)
SMALL = HdlcParameters(max_info_tx=32, max_info_rx=32, window_tx=1, window_rx=1)
BIG = HdlcParameters(max_info_tx=1024, max_info_rx=1024, window_tx=7, window_rx=7)
APDU_2K = bytes(random.Random(7).randrange(256) for _ in range(2048))

Serve = Callable[[bytes], bytes]


def frames(raw: bytes) -> list[HdlcFrame]:
    parser = HdlcStreamParser()
    decoded = parser.feed(raw)
    assert not parser.errors
    return decoded


def echo(apdu: bytes) -> bytes:
    return b"\xc4" + apdu[::-1]


class Wire:
    """Both stations and the bytes between them; ``drop`` filters frames in flight (to lose some)."""

    def __init__(
        self,
        client: HdlcClientLink,
        server: HdlcServerLink,
        serve: Serve = echo,
        chunk: int | None = None,
    ) -> None:
        self.client, self.server, self.serve, self.chunk = client, server, serve, chunk
        self.client_events: list[LinkEvent] = []
        self.server_events: list[LinkEvent] = []
        self.to_server: list[HdlcFrame] = []
        self.to_client: list[HdlcFrame] = []

    def _feed(self, station: HdlcClientLink | HdlcServerLink, raw: bytes) -> list[LinkEvent]:
        if not self.chunk:
            return station.receive(raw)
        events: list[LinkEvent] = []
        for at in range(0, len(raw), self.chunk):
            events += station.receive(raw[at : at + self.chunk])
        return events

    def pump(self, drop: Callable[[HdlcFrame], bool] = lambda frame: False) -> None:
        """Carry bytes back and forth until both stations are quiet."""
        for _ in range(10_000):
            raw = self.client.data_to_send()
            sent = frames(raw)
            self.to_server += sent
            kept = b"".join(encode_frame(f) for f in sent if not drop(f))
            for event in self._feed(self.server, kept):
                self.server_events.append(event)
                if isinstance(event, ApduReceived):
                    self.server.send(self.serve(event.apdu))
            back = self.server.data_to_send()
            answered = frames(back)
            self.to_client += answered
            self.client_events += self._feed(
                self.client, b"".join(encode_frame(f) for f in answered if not drop(f))
            )
            if not raw and not back:
                return
        raise AssertionError("the stations never went quiet")

    def connect(self) -> Connected:
        self.client.connect()
        self.pump()
        event = self.client_events.pop()
        assert isinstance(event, Connected)
        return event

    def request(self, apdu: bytes) -> bytes:
        self.client.send(apdu)
        self.pump()
        event = self.client_events.pop()
        assert isinstance(event, ApduReceived)
        return event.apdu


def wire(
    proposal: HdlcParameters | None = None, meter: HdlcParameters | None = None, **kwargs: object
) -> Wire:
    return Wire(HdlcClientLink(SERVER, CLIENT, proposal), HdlcServerLink(SERVER, meter), **kwargs)  # type: ignore[arg-type]


# --- negotiation ----------------------------------------------------------------------------------


def test_snrm_carries_the_proposal_and_ua_the_meters_view() -> None:
    w = wire(HdlcParameters(max_info_tx=200, max_info_rx=500, window_tx=2, window_rx=4), BIG)
    connected = w.connect()
    (snrm,) = w.to_server
    assert (snrm.kind, snrm.dest, snrm.src, snrm.poll_final) == (FrameKind.SNRM, SERVER, CLIENT, True)
    assert snrm.info == bytes.fromhex("818014 05020 0c8 0602 01f4 070400000002 080400000004".replace(" ", ""))
    (ua,) = w.to_client
    assert ua.kind is FrameKind.UA
    # The meter states the link from its side: it transmits what the client receives.
    assert decode_parameters(ua.info) == HdlcParameters(500, 200, 4, 2)
    assert connected.parameters == HdlcParameters(200, 500, 2, 4)
    assert w.client.negotiated == connected.parameters
    assert w.server.negotiated == HdlcParameters(500, 200, 4, 2)
    assert w.server_events == [Connected(HdlcParameters(500, 200, 4, 2), CLIENT)]
    assert w.client.state is w.server.state is LinkState.CONNECTED


def test_meter_limits_win_over_a_larger_proposal() -> None:
    w = wire(HdlcParameters(2030, 2030, 7, 7), SMALL)
    assert w.connect().parameters == SMALL


def test_ua_without_parameters_means_128_bytes_and_window_1() -> None:
    client = HdlcClientLink(SERVER, CLIENT, BIG)
    client.connect()
    client.data_to_send()
    ua = HdlcFrame(CLIENT, SERVER, FrameKind.UA)
    (event,) = client.receive(encode_frame(ua))
    assert event == Connected(HdlcParameters(128, 128, 1, 1), SERVER)


@pytest.mark.parametrize(
    "offer",
    [HdlcParameters(0, 128, 1, 1), HdlcParameters(128, 16, 1, 1), HdlcParameters(128, 128, 0, 1)],
)
def test_ua_with_unusable_parameters_is_a_link_error(offer: HdlcParameters) -> None:
    client = HdlcClientLink(SERVER, CLIENT)
    client.connect()
    ua = HdlcFrame(CLIENT, SERVER, FrameKind.UA, info=encode_parameters(offer))
    with pytest.raises(LinkError, match="unusable"):
        client.receive(encode_frame(ua))
    assert client.state is LinkState.DISCONNECTED


def test_meter_refuses_an_unusable_proposal_with_dm() -> None:
    w = wire(HdlcParameters(16, 16, 1, 1))
    w.client.connect()
    with pytest.raises(LinkRefused, match="refused"):
        w.pump()
    assert [f.kind for f in w.to_client] == [FrameKind.DM]


def test_window_sizes_above_seven_are_capped() -> None:
    w = wire(HdlcParameters(128, 128, 100, 100), HdlcParameters(128, 128, 100, 100))
    assert w.connect().parameters == HdlcParameters(128, 128, 7, 7)


def test_four_byte_server_address_and_large_frames() -> None:
    server = HdlcAddress(0x3FFF, 0x1234)
    w = Wire(HdlcClientLink(server, CLIENT, HdlcParameters(2030, 2030, 1, 1)), HdlcServerLink(server, BIG))
    w.connect()
    assert w.to_server[0].dest.encode() == bytes([0xFE, 0xFE, 0x48, 0x69])
    assert w.request(APDU_2K) == echo(APDU_2K)
    assert [len(f.info) for f in w.to_server if f.kind is FrameKind.I] == [1024, 1024, 3]


def test_client_address_is_one_byte() -> None:
    with pytest.raises(EncodeError):
        HdlcClientLink(SERVER, HdlcAddress(1, 2))
    with pytest.raises(EncodeError):
        HdlcClientLink(HdlcAddress(1, 0x5000), CLIENT)  # 14 bits at most


# --- I-frames, segmentation, windows --------------------------------------------------------------


def test_short_request_and_answer_carry_llc_headers_and_sequence_numbers() -> None:
    w = wire()
    w.connect()
    for round_ in range(10):  # past the modulo-8 wrap
        apdu = bytes([0xC0, 0x01, round_])
        assert w.request(apdu) == echo(apdu)
    requests = [f for f in w.to_server if f.kind is FrameKind.I]
    answers = [f for f in w.to_client if f.kind is FrameKind.I]
    assert [f.send_seq for f in requests] == [n % 8 for n in range(10)]
    assert [f.recv_seq for f in requests] == [n % 8 for n in range(10)]
    assert [f.send_seq for f in answers] == [n % 8 for n in range(10)]
    assert [f.recv_seq for f in answers] == [(n + 1) % 8 for n in range(10)]
    assert all(f.info.startswith(LLC_COMMAND) for f in requests)
    assert all(f.info.startswith(LLC_RESPONSE) for f in answers)
    assert all(f.poll_final and not f.segmented for f in requests + answers)


def test_2k_apdu_segmented_both_ways_with_32_byte_frames() -> None:
    w = wire(SMALL, SMALL)
    w.connect()
    assert w.request(APDU_2K) == echo(APDU_2K)
    assert w.server_events[-1] == ApduReceived(APDU_2K, CLIENT)
    segments = 65  # 2048 bytes and the LLC header in 32-byte frames (the answer is one byte longer)
    for sent in (w.to_server, w.to_client):
        data = [f for f in sent if f.kind is FrameKind.I]
        assert len(data) == segments
        assert all(len(f.info) == 32 for f in data[:-1])
        assert [f.segmented for f in data] == [True] * (segments - 1) + [False]
        assert all(f.poll_final for f in data)  # window 1: every frame is polled
    # Each segment but the last is answered by one RR from the receiving side.
    rr_from_meter = [f for f in w.to_client if f.kind is FrameKind.RR]
    rr_from_client = [f for f in w.to_server if f.kind is FrameKind.RR]
    assert len(rr_from_meter) == len(rr_from_client) == segments - 1
    assert [f.recv_seq for f in rr_from_client[:3]] == [1, 2, 3]


@pytest.mark.parametrize("window", [2, 3, 7])
def test_windows_poll_only_their_last_frame(window: int) -> None:
    params = HdlcParameters(32, 32, window, window)
    w = wire(params, params, chunk=5)
    w.connect()
    assert w.request(APDU_2K) == echo(APDU_2K)
    answers = [f for f in w.to_client if f.kind is FrameKind.I]
    polls = [index for index, f in enumerate(answers) if f.poll_final]
    assert polls[: len(polls) - 1] == [window * n - 1 for n in range(1, len(polls))]
    assert polls[-1] == len(answers) - 1
    rr_from_client = [f for f in w.to_server if f.kind is FrameKind.RR]
    assert len(rr_from_client) == len(polls) - 1
    assert w.request(b"\xc0\x01\x01") == echo(b"\xc0\x01\x01")


def test_bytes_split_anywhere_still_make_frames() -> None:
    w = wire(SMALL, SMALL, chunk=1)
    w.connect()
    assert w.request(APDU_2K) == echo(APDU_2K)


def test_meter_refuses_an_apdu_above_its_reassembly_limit() -> None:
    w = Wire(HdlcClientLink(SERVER, CLIENT, SMALL), HdlcServerLink(SERVER, SMALL, max_apdu=500))
    w.connect()
    w.client.send(APDU_2K)
    with pytest.raises(FrameRejected, match="INFO_TOO_LONG") as caught:
        w.pump()
    assert caught.value.reasons == FrmrReason.INFO_TOO_LONG
    assert w.server.state is LinkState.REJECTED


# --- lost frames ----------------------------------------------------------------------------------


def test_lost_answer_is_sent_again_after_resend() -> None:
    w = wire()
    w.connect()
    w.client.send(b"\xc0\x01\x00")
    w.pump(drop=lambda f: f.kind is FrameKind.I and f.info.startswith(LLC_RESPONSE))
    assert not w.client_events
    w.client.resend()  # what the transport does after a time-out
    w.pump()
    assert w.client_events == [ApduReceived(echo(b"\xc0\x01\x00"), SERVER)]
    assert len(w.server_events) == 2  # the repeated request was not served twice
    assert w.request(b"\xc0\x01\x01") == echo(b"\xc0\x01\x01")


def test_lost_request_segment_is_sent_again() -> None:
    w = wire(SMALL, SMALL)
    w.connect()
    lost: list[int] = []

    def drop_fourth(frame: HdlcFrame) -> bool:
        if frame.kind is FrameKind.I and frame.info[:3] != LLC_RESPONSE and frame.send_seq == 3 and not lost:
            lost.append(1)
            return True
        return False

    w.client.send(APDU_2K)
    w.pump(drop=drop_fourth)
    assert lost and not w.client_events
    w.client.resend()
    w.pump()
    assert w.client_events == [ApduReceived(echo(APDU_2K), SERVER)]


def test_lost_poll_inside_an_answer_is_recovered() -> None:
    w = wire(SMALL, HdlcParameters(32, 32, 3, 3))
    w.connect()
    dropped: list[HdlcFrame] = []

    def drop_one_answer_frame(frame: HdlcFrame) -> bool:
        if frame.kind is FrameKind.I and frame.info[:3] != LLC_COMMAND and frame.poll_final and not dropped:
            dropped.append(frame)
            return True
        return False

    w.client.send(b"\xc0" + bytes(300))
    w.pump(drop=drop_one_answer_frame)
    assert dropped and not w.client_events
    w.client.resend()  # an RR with the client's N(R): the meter repeats from there
    w.pump()
    assert w.client_events == [ApduReceived(echo(b"\xc0" + bytes(300)), SERVER)]


def test_resend_repeats_snrm_and_disc() -> None:
    client = HdlcClientLink(SERVER, CLIENT)
    client.connect()
    first = client.data_to_send()
    client.resend()
    assert client.data_to_send() == first
    client.state = LinkState.CONNECTED
    client.disconnect()
    disc = client.data_to_send()
    client.resend()
    assert client.data_to_send() == disc
    assert frames(disc)[0].kind is FrameKind.DISC


# --- sequence errors, FRMR, DM, DISC ---------------------------------------------------------------


def connected_client() -> HdlcClientLink:
    client = HdlcClientLink(SERVER, CLIENT)
    client.connect()
    client.receive(encode_frame(HdlcFrame(CLIENT, SERVER, FrameKind.UA)))
    client.data_to_send()
    return client


def answer(send_seq: int, recv_seq: int, info: bytes = LLC_RESPONSE + b"\xc4", **kw: bool) -> bytes:
    return encode_frame(HdlcFrame(CLIENT, SERVER, FrameKind.I, True, send_seq, recv_seq, info=info, **kw))


def test_client_refuses_an_answer_out_of_sequence() -> None:
    client = connected_client()
    client.send(b"\xc0")
    with pytest.raises(SequenceError, match=r"N\(S\)=3, 0 was expected"):
        client.receive(answer(3, 1))


def test_client_refuses_acknowledgement_of_frames_never_sent() -> None:
    client = connected_client()
    client.send(b"\xc0")
    with pytest.raises(SequenceError, match="never sent"):
        client.receive(answer(0, 5))
    client = connected_client()
    with pytest.raises(SequenceError, match="never sent"):
        client.receive(encode_frame(HdlcFrame(CLIENT, SERVER, FrameKind.RR, recv_seq=2)))


def test_client_gives_up_when_the_meter_keeps_losing_a_frame() -> None:
    client = connected_client()
    client.send(b"\xc0")
    client.data_to_send()
    rr_nothing_received = encode_frame(HdlcFrame(CLIENT, SERVER, FrameKind.RR, recv_seq=0))
    for _ in range(3):
        client.receive(rr_nothing_received)
        assert frames(client.data_to_send())[0].send_seq == 0  # sent again
    with pytest.raises(SequenceError, match="lost the same frames"):
        client.receive(rr_nothing_received)


def test_client_refuses_an_answer_without_llc_header() -> None:
    client = connected_client()
    client.send(b"\xc0")
    with pytest.raises(FrameError, match="LLC"):
        client.receive(answer(0, 1, info=b"\xc4\x01\x00"))


def test_meter_rejects_invalid_nr_with_frmr_until_snrm() -> None:
    w = wire()
    w.connect()
    bad = HdlcFrame(SERVER, CLIENT, FrameKind.I, True, 0, 4, info=LLC_COMMAND + b"\xc0")
    w.server.receive(encode_frame(bad))
    (frmr,) = frames(w.server.data_to_send())
    assert frmr.kind is FrameKind.FRMR
    assert frmr.info == bytes([0x90, 0x00, 0x08])  # rejected control, V(R)/V(S), Z (invalid N(R))
    with pytest.raises(FrameRejected, match="INVALID_NR") as caught:
        w.client.receive(encode_frame(frmr))
    assert caught.value.reasons == FrmrReason.INVALID_NR
    assert w.client.state is LinkState.DISCONNECTED
    # Still rejected: every poll gets the same FRMR until the link is set up again.
    w.server.receive(encode_frame(HdlcFrame(SERVER, CLIENT, FrameKind.RR, recv_seq=0)))
    assert frames(w.server.data_to_send()) == [frmr]
    w.connect()
    assert w.request(b"\xc0\x01") == echo(b"\xc0\x01")


@pytest.mark.parametrize(
    ("frame", "reason"),
    [
        (HdlcFrame(SERVER, CLIENT, FrameKind.I, True, 0, 0, info=LLC_COMMAND + bytes(200)), "INFO_TOO_LONG"),
        (HdlcFrame(SERVER, CLIENT, FrameKind.I, True, 0, 0, info=b"\xc0\x01\x02"), "INFO_NOT_PERMITTED"),
        (HdlcFrame(SERVER, CLIENT, FrameKind.UA), "INVALID_CONTROL"),
        (HdlcFrame(SERVER, CLIENT, FrameKind.FRMR, info=b"\x00\x00\x01"), "INVALID_CONTROL"),
    ],
)
def test_meter_rejects_broken_commands(frame: HdlcFrame, reason: str) -> None:
    w = wire()
    w.connect()
    w.server.receive(encode_frame(frame))
    (frmr,) = frames(w.server.data_to_send())
    with pytest.raises(FrameRejected, match=reason):
        w.client.receive(encode_frame(frmr))


def test_meter_answers_dm_when_not_connected() -> None:
    server = HdlcServerLink(SERVER)
    for frame in (
        HdlcFrame(SERVER, CLIENT, FrameKind.I, True, 0, 0, info=LLC_COMMAND + b"\xc0"),
        HdlcFrame(SERVER, CLIENT, FrameKind.RR, recv_seq=0),
        HdlcFrame(SERVER, CLIENT, FrameKind.DISC),
    ):
        assert server.receive(encode_frame(frame)) == []
        assert [f.kind for f in frames(server.data_to_send())] == [FrameKind.DM]
    client = HdlcClientLink(SERVER, CLIENT)
    client.connect()
    with pytest.raises(LinkRefused, match="refused the connection"):
        client.receive(encode_frame(HdlcFrame(CLIENT, SERVER, FrameKind.DM)))


def test_dm_while_connected_is_refused() -> None:
    client = connected_client()
    with pytest.raises(LinkRefused, match="no connection"):
        client.receive(encode_frame(HdlcFrame(CLIENT, SERVER, FrameKind.DM)))
    assert client.state is LinkState.DISCONNECTED


def test_disc_ends_the_link_on_both_sides() -> None:
    w = wire()
    w.connect()
    w.request(b"\xc0")
    w.client.disconnect()
    w.pump()
    assert w.client_events == [Disconnected(SERVER)]
    assert w.server_events[-1] == Disconnected(CLIENT)
    assert w.client.state is w.server.state is LinkState.DISCONNECTED
    with pytest.raises(LinkError, match="disconnected"):
        w.client.send(b"\xc0")
    w.connect()  # and it comes up again, numbering from 0
    assert w.request(b"\xc0\x02") == echo(b"\xc0\x02")
    assert [f.send_seq for f in w.to_server if f.kind is FrameKind.I][-1] == 0


def test_disc_answered_by_dm_also_disconnects() -> None:
    client = connected_client()
    client.disconnect()
    assert client.receive(encode_frame(HdlcFrame(CLIENT, SERVER, FrameKind.DM))) == [Disconnected(SERVER)]


def test_unexpected_frames_at_the_client() -> None:
    client = HdlcClientLink(SERVER, CLIENT)
    with pytest.raises(LinkError, match="unexpected UA"):
        client.receive(encode_frame(HdlcFrame(CLIENT, SERVER, FrameKind.UA)))
    with pytest.raises(LinkError, match="I frame while the link is disconnected"):
        client.receive(answer(0, 0))
    client = connected_client()
    with pytest.raises(LinkError, match="command SNRM"):
        client.receive(encode_frame(HdlcFrame(CLIENT, SERVER, FrameKind.SNRM)))
    assert client.receive(encode_frame(HdlcFrame(CLIENT, SERVER, FrameKind.UI, info=b"x"))) == []


def test_frames_for_other_stations_are_ignored() -> None:
    w = wire()
    other = HdlcClientLink(HdlcAddress(1, 18), CLIENT)
    other.connect()
    assert w.server.receive(other.data_to_send()) == []
    assert w.server.data_to_send() == b""  # a meter stays silent for another address
    w.connect()
    stranger = HdlcFrame(HdlcAddress(16), SERVER, FrameKind.I, True, 0, 0, info=LLC_RESPONSE + b"\xc4")
    assert w.client.receive(encode_frame(stranger)) == []


def test_new_snrm_resets_a_connected_link() -> None:
    w = wire()
    w.connect()
    w.request(b"\xc0\x01")
    w.connect()
    assert isinstance(w.server_events[-1], Connected)
    assert w.request(b"\xc0\x03") == echo(b"\xc0\x03")


# --- hostile input --------------------------------------------------------------------------------


def test_a_flood_of_broken_frames_ends_in_frame_error() -> None:
    good = HdlcFrame(CLIENT, SERVER, FrameKind.UA)
    broken = bytearray(encode_frame(good))
    broken[-2] ^= 0xFF  # FCS
    client = HdlcClientLink(SERVER, CLIENT)
    client.connect()
    server = HdlcServerLink(SERVER)
    for station in (client, server):
        for _ in range(MAX_BROKEN):
            station.receive(bytes(broken))
        with pytest.raises(FrameError, match="broken HDLC frames"):
            station.receive(bytes(broken))


def test_a_good_frame_resets_the_broken_count() -> None:
    server = HdlcServerLink(SERVER)
    snrm = encode_frame(HdlcFrame(SERVER, CLIENT, FrameKind.SNRM))
    for _ in range(5):
        for _ in range(MAX_BROKEN - 1):
            server.receive(b"\x00garbage\x7e")
        server.receive(snrm)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(max_size=80), max_size=12), st.booleans())
def test_random_bytes_end_in_events_or_typed_errors(chunks: list[bytes], with_snrm: bool) -> None:
    began = time.monotonic()
    w = wire(SMALL, SMALL)
    if with_snrm:
        w.connect()
        w.client.send(b"\xc0\x01")
        w.client.data_to_send()
    for station in (w.client, w.server):
        for chunk in chunks:
            try:
                station.receive(chunk)
            except DlmsError:
                break
        assert len(station.data_to_send()) < 10_000
    assert time.monotonic() - began < 2


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_mutated_frames_end_in_events_or_typed_errors(data: st.DataObject) -> None:
    """Valid-looking frames with random kinds, sequence numbers and contents (checksums right)."""
    w = wire(SMALL, SMALL)
    w.connect()
    kinds = st.sampled_from(list(FrameKind))
    for _ in range(data.draw(st.integers(1, 12))):
        kind = data.draw(kinds)
        seq = st.integers(0, 7)
        frame = HdlcFrame(
            dest=data.draw(st.sampled_from([SERVER, CLIENT])),
            src=data.draw(st.sampled_from([SERVER, CLIENT])),
            kind=kind,
            poll_final=data.draw(st.booleans()),
            send_seq=data.draw(seq) if kind is FrameKind.I else None,
            recv_seq=data.draw(seq) if kind in (FrameKind.I, FrameKind.RR, FrameKind.RNR) else None,
            segmented=data.draw(st.booleans()),
            info=data.draw(st.binary(max_size=40)),
        )
        for station in (w.client, w.server):
            with contextlib.suppress(DlmsError):
                station.receive(encode_frame(frame))
            station.data_to_send()
