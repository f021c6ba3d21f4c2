"""Opening a DLMS session with a target meter: the association its endpoint and secrets call for.

Kept apart from the collector because commands (disconnect, clock, firmware) open sessions the same way:
HLS-GMAC with every APDU glo-ciphered when the meter has keys (the production setting), LLS with its
password, or the public client without security.
"""

from __future__ import annotations

from typing import Final

from openami.drivers.dlms.client import DlmsClient
from openami.drivers.dlms.errors import DlmsAuthFailed, DlmsProtocolError
from openami.hes.dlms_targets import DlmsTarget
from openami.protocols.dlms.acse import Mechanism
from openami.protocols.dlms.association import ClientAssociation
from openami.protocols.dlms.security import SecurityControl

__all__ = ["association_for", "open_client"]

_CIPHERED: Final = SecurityControl(suite=0, authenticated=True, encrypted=True)


def association_for(target: DlmsTarget, client_system_title: bytes) -> ClientAssociation:
    """A fresh association for one session with ``target`` (an association is used once)."""
    endpoint, secrets = target.endpoint, target.secrets
    if endpoint.auth == "none":
        return ClientAssociation(endpoint.client_sap, endpoint.server_sap)
    if secrets is None:
        raise DlmsAuthFailed(f"{target.serial}: no keys in the key vault")
    if endpoint.auth == "lls":
        if secrets.password is None:
            raise DlmsAuthFailed(f"{target.serial}: no LLS password in the key vault")
        return ClientAssociation(
            endpoint.client_sap, endpoint.server_sap, mechanism=Mechanism.LOW, password=secrets.password
        )
    if secrets.encryption_key is None or secrets.authentication_key is None:
        raise DlmsAuthFailed(f"{target.serial}: HLS needs both the EK and the AK in the key vault")
    return ClientAssociation(
        endpoint.client_sap,
        endpoint.server_sap,
        mechanism=Mechanism.HIGH_GMAC,
        system_title=client_system_title,
        encryption_key=secrets.encryption_key,
        authentication_key=secrets.authentication_key,
        security=_CIPHERED,
    )


def open_client(target: DlmsTarget, client_system_title: bytes, timeout_s: float) -> DlmsClient:
    """An unopened client for ``target``: use it as ``async with open_client(...) as client``."""
    endpoint = target.endpoint
    association = association_for(target, client_system_title)
    if endpoint.framing == "hdlc":
        raise DlmsProtocolError(f"{target.serial}: HDLC over TCP is not wired in yet")
    return DlmsClient(endpoint.host, endpoint.port, association, timeout=timeout_s)
