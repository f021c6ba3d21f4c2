"""DLMS/COSEM pull driver: an asynchronous client over TCP and its typed errors."""

from openami.drivers.dlms.client import DlmsClient
from openami.drivers.dlms.errors import (
    DlmsAccessError,
    DlmsAuthFailed,
    DlmsDriverError,
    DlmsProtocolError,
    DlmsTimeout,
    DlmsUnreachable,
)

__all__ = [
    "DlmsAccessError",
    "DlmsAuthFailed",
    "DlmsClient",
    "DlmsDriverError",
    "DlmsProtocolError",
    "DlmsTimeout",
    "DlmsUnreachable",
]
