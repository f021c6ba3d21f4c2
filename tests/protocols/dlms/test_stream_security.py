"""The stream decoder enforces what the security control byte cannot protect on its own."""

from __future__ import annotations

from openami.protocols.dlms.security import SecurityControl, encrypt
from openami.protocols.dlms.stream import decode_stream

EK = bytes(range(16))
AK = bytes(range(0xD0, 0xE0))
TITLE = bytes.fromhex("4D4D4D0000BC614E")
# DataNotification: invoke id, no date-time, body = structure { visible-string "M1" }
PLAIN = bytes.fromhex("0F00000001" + "00" + "0201" + "0A024D31")


def _ciphered(*, authenticated: bool) -> bytes:
    control = SecurityControl(suite=0, authenticated=authenticated, encrypted=True)
    return encrypt(
        PLAIN,
        security_control=control,
        system_title=TITLE,
        invocation_counter=7,
        encryption_key=EK,
        authentication_key=AK,
        general=True,
    )


def test_authenticated_push_decodes_with_both_keys() -> None:
    result = decode_stream(_ciphered(authenticated=True), encryption_key=EK, authentication_key=AK)
    assert not result.errors
    assert len(result.notifications) == 1


def test_unauthenticated_push_is_refused_when_an_authentication_key_is_configured() -> None:
    stripped = _ciphered(authenticated=False)  # what an attacker gets by clearing the A bit
    refused = decode_stream(stripped, encryption_key=EK, authentication_key=AK)
    assert refused.notifications == []
    assert any("unauthenticated" in error for error in refused.errors)
    accepted = decode_stream(stripped, encryption_key=EK)  # no AK configured: encryption-only is the policy
    assert len(accepted.notifications) == 1
