"""Client and server associations talking to each other in memory: bytes handed over by hand."""

from __future__ import annotations

from itertools import count

import pytest

from openami.protocols.dlms.acse import Mechanism
from openami.protocols.dlms.association import (
    MANAGEMENT_CLIENT,
    MANAGEMENT_SERVER,
    PUBLIC_CLIENT,
    AssociationError,
    AuthenticationFailed,
    ClientAssociation,
    NextRequest,
    Reply,
    Request,
    Result,
    ServerAssociation,
)
from openami.protocols.dlms.axdr import Data
from openami.protocols.dlms.errors import ReplayError, SecurityError
from openami.protocols.dlms.obis import Obis
from openami.protocols.dlms.security import SecurityControl
from openami.protocols.dlms.xdlms import (
    CosemAttribute,
    DataAccessResult,
    ExceptionResponse,
    ExceptionServiceError,
    GetRequestNext,
    GetRequestNormal,
    GetResponseNormal,
    XdlmsApdu,
)

EK = bytes(range(16))
AK = bytes(range(16, 32))
CLIENT_TITLE = b"OPENAMI1"
SERVER_TITLE = b"OAM\x00\x00\x00\x00\x01"
PASSWORD = b"12345678"
SC = SecurityControl(suite=0, authenticated=True, encrypted=True)
CHALLENGE_C = b"C" * 16
CHALLENGE_S = b"S" * 16
SERIAL = CosemAttribute(1, Obis(0, 0, 42, 0, 0), 2)


def server(client_sap: int, *, ek: bytes = EK, max_pdu: int = 0xFFFF) -> ServerAssociation:
    return ServerAssociation(
        client_sap,
        system_title=SERVER_TITLE,
        password=PASSWORD,
        encryption_key=ek,
        authentication_key=AK,
        invocation_counter=count(100),
        max_pdu=max_pdu,
    )


def hls_client(
    *, ek: bytes = EK, security: SecurityControl | None = SC, max_pdu: int = 0xFFFF
) -> ClientAssociation:
    return ClientAssociation(
        MANAGEMENT_CLIENT,
        MANAGEMENT_SERVER,
        mechanism=Mechanism.HIGH_GMAC,
        system_title=CLIENT_TITLE,
        encryption_key=ek,
        authentication_key=AK,
        security=security,
        max_pdu=max_pdu,
    )


def associate(client: ClientAssociation, srv: ServerAssociation) -> None:
    pass3 = client.handle_aare(srv.handle_aarq(client.aarq(CHALLENGE_C), CHALLENGE_S))
    if pass3 is not None:
        reply = srv.receive(pass3)
        assert isinstance(reply, Reply)
        client.handle(reply.raw)
    assert client.associated
    assert srv.associated


def serve(srv: ServerAssociation, raw: bytes, answer: XdlmsApdu) -> bytes:
    received = srv.receive(raw)
    assert isinstance(received, Request)
    return srv.respond(answer)


def test_public_client_lowest_security_get() -> None:
    client = ClientAssociation(PUBLIC_CLIENT, MANAGEMENT_SERVER)
    srv = server(PUBLIC_CLIENT)
    associate(client, srv)
    request = GetRequestNormal(client.next_invoke_id(), SERIAL)
    raw = client.request(request)
    received = srv.receive(raw)
    assert isinstance(received, Request)
    assert received.apdu == request
    outcome = client.handle(srv.respond(GetResponseNormal(request.invoke_id, Data.octet_string(b"SIM1"))))
    assert outcome == Result(GetResponseNormal(request.invoke_id, Data.octet_string(b"SIM1")))


def test_public_client_may_not_authenticate_and_management_client_must() -> None:
    client = ClientAssociation(PUBLIC_CLIENT, MANAGEMENT_SERVER, mechanism=Mechanism.LOW, password=PASSWORD)
    with pytest.raises(AssociationError):
        client.handle_aare(server(PUBLIC_CLIENT).handle_aarq(client.aarq(), CHALLENGE_S))
    client = ClientAssociation(MANAGEMENT_CLIENT, MANAGEMENT_SERVER)
    with pytest.raises(AssociationError):
        client.handle_aare(server(MANAGEMENT_CLIENT).handle_aarq(client.aarq(), CHALLENGE_S))


@pytest.mark.parametrize(("password", "ok"), [(PASSWORD, True), (b"wrong", False)])
def test_lls(password: bytes, ok: bool) -> None:
    client = ClientAssociation(
        MANAGEMENT_CLIENT, MANAGEMENT_SERVER, mechanism=Mechanism.LOW, password=password
    )
    srv = server(MANAGEMENT_CLIENT)
    if ok:
        associate(client, srv)
    else:
        with pytest.raises(AuthenticationFailed):
            associate(client, srv)
        assert not client.associated


def test_hls_gmac_with_ciphering_round_trip() -> None:
    client = hls_client()
    srv = server(MANAGEMENT_CLIENT)
    associate(client, srv)
    assert client.server_system_title == SERVER_TITLE
    request = GetRequestNormal(client.next_invoke_id(), SERIAL)
    raw = client.request(request)
    assert raw[0] == 0xC8  # glo-get-request
    assert b"\x00\x2a" not in raw  # the OBIS code is not readable on the wire
    answer = serve(srv, raw, GetResponseNormal(request.invoke_id, Data.octet_string(b"SIM1")))
    assert answer[0] == 0xCC  # glo-get-response
    outcome = client.handle(answer)
    assert isinstance(outcome, Result)
    assert outcome.apdu == GetResponseNormal(request.invoke_id, Data.octet_string(b"SIM1"))


def test_hls_gmac_without_ciphering() -> None:
    client = hls_client(security=None)
    srv = server(MANAGEMENT_CLIENT)
    associate(client, srv)
    raw = client.request(GetRequestNormal(client.next_invoke_id(), SERIAL))
    assert raw[0] == 0xC0


def test_hls_wrong_keys_with_ciphering_refused_at_aarq() -> None:
    client = hls_client(ek=bytes(16))
    with pytest.raises(AuthenticationFailed):
        associate(client, server(MANAGEMENT_CLIENT))


def test_hls_wrong_keys_without_ciphering_refused_at_pass_3() -> None:
    client = hls_client(ek=bytes(16), security=None)
    srv = server(MANAGEMENT_CLIENT)
    pass3 = client.handle_aare(srv.handle_aarq(client.aarq(CHALLENGE_C), CHALLENGE_S))
    assert pass3 is not None
    reply = srv.receive(pass3)
    assert isinstance(reply, Reply)
    assert not srv.associated
    with pytest.raises(AuthenticationFailed):
        client.handle(reply.raw)


def test_client_rejects_server_that_fails_pass_4() -> None:
    # A server with other keys already refuses pass 3, so the client's own check of f(CtoS) is
    # exercised by altering the proof in pass 4.
    client = hls_client(security=None)
    srv = server(MANAGEMENT_CLIENT)
    pass3 = client.handle_aare(srv.handle_aarq(client.aarq(CHALLENGE_C), CHALLENGE_S))
    assert pass3 is not None
    reply = srv.receive(pass3)
    assert isinstance(reply, Reply)
    tampered = reply.raw[:-1] + bytes([reply.raw[-1] ^ 1])
    with pytest.raises(AuthenticationFailed):
        client.handle(tampered)


def test_replayed_response_rejected() -> None:
    client = hls_client()
    srv = server(MANAGEMENT_CLIENT)
    associate(client, srv)
    first = GetRequestNormal(client.next_invoke_id(), SERIAL)
    answer = serve(srv, client.request(first), GetResponseNormal(first.invoke_id, Data.octet_string(b"A")))
    client.handle(answer)
    client.request(GetRequestNormal(client.next_invoke_id(), SERIAL))
    with pytest.raises(ReplayError):
        client.handle(answer)


def test_replayed_request_refused_by_server() -> None:
    client = hls_client()
    srv = server(MANAGEMENT_CLIENT)
    associate(client, srv)
    raw = client.request(GetRequestNormal(client.next_invoke_id(), SERIAL))
    assert isinstance(srv.receive(raw), Request)
    reply = srv.receive(raw)
    assert isinstance(reply, Reply)
    outcome = client.handle(reply.raw)
    assert isinstance(outcome, Result)
    assert isinstance(outcome.apdu, ExceptionResponse)
    assert outcome.apdu.service_error == ExceptionServiceError.INVOCATION_COUNTER_ERROR


def test_plain_response_on_ciphered_association_refused() -> None:
    client = hls_client()
    associate(client, server(MANAGEMENT_CLIENT))
    client.request(GetRequestNormal(client.next_invoke_id(), SERIAL))
    with pytest.raises(SecurityError):
        client.handle(bytes.fromhex("C401C1000904") + b"SIM1")


@pytest.mark.parametrize("security", [SC, None])
def test_long_get_goes_out_in_datablocks(security: SecurityControl | None) -> None:
    client = hls_client(security=security, max_pdu=128)
    srv = server(MANAGEMENT_CLIENT)
    associate(client, srv)
    value = Data.array(*(Data.uint32(i) for i in range(200)))
    request = GetRequestNormal(client.next_invoke_id(), SERIAL)
    raw = serve(srv, client.request(request), GetResponseNormal(request.invoke_id, value))
    blocks = 0
    while True:
        assert len(raw) <= 128
        outcome = client.handle(raw)
        blocks += 1
        if isinstance(outcome, Result):
            break
        assert isinstance(outcome, NextRequest)
        reply = srv.receive(outcome.raw)
        assert isinstance(reply, Reply)
        raw = reply.raw
    assert blocks > 5
    assert outcome.apdu == GetResponseNormal(request.invoke_id, value)


def test_next_block_without_long_get_refused() -> None:
    client = ClientAssociation(PUBLIC_CLIENT, MANAGEMENT_SERVER)
    srv = server(PUBLIC_CLIENT)
    associate(client, srv)
    reply = srv.receive(client.request(GetRequestNext(client.next_invoke_id(), 1)))
    assert isinstance(reply, Reply)
    outcome = client.handle(reply.raw)
    assert isinstance(outcome, Result)
    assert outcome.apdu == GetResponseNormal(1, DataAccessResult.NO_LONG_GET_IN_PROGRESS)


def test_refused_get_is_not_split() -> None:
    client = ClientAssociation(PUBLIC_CLIENT, MANAGEMENT_SERVER, max_pdu=64)
    srv = server(PUBLIC_CLIENT)
    associate(client, srv)
    answer = serve(
        srv,
        client.request(GetRequestNormal(client.next_invoke_id(), SERIAL)),
        GetResponseNormal(1, DataAccessResult.OBJECT_UNDEFINED),
    )
    assert client.handle(answer) == Result(GetResponseNormal(1, DataAccessResult.OBJECT_UNDEFINED))


def test_release() -> None:
    client = ClientAssociation(PUBLIC_CLIENT, MANAGEMENT_SERVER)
    srv = server(PUBLIC_CLIENT)
    associate(client, srv)
    reply = srv.receive(client.release())
    assert isinstance(reply, Reply)
    client.handle_rlre(reply.raw)
    assert srv.released
    assert not client.associated
    with pytest.raises(AssociationError):
        client.request(GetRequestNormal(1, SERIAL))


def test_request_before_association_refused() -> None:
    client = ClientAssociation(PUBLIC_CLIENT, MANAGEMENT_SERVER)
    with pytest.raises(AssociationError):
        client.request(GetRequestNormal(1, SERIAL))
