"""DLMS/COSEM pull driver: an asynchronous client over the TCP wrapper, HDLC over TCP or a serial line."""

from openami.drivers.dlms.client import DlmsClient
from openami.drivers.dlms.errors import (
    DlmsAccessError,
    DlmsAuthFailed,
    DlmsDriverError,
    DlmsProtocolError,
    DlmsTimeout,
    DlmsUnreachable,
)
from openami.drivers.dlms.transport import HdlcTransport, Transport, WrapperTransport, open_serial

__all__ = [
    "DlmsAccessError",
    "DlmsAuthFailed",
    "DlmsClient",
    "DlmsDriverError",
    "DlmsProtocolError",
    "DlmsTimeout",
    "DlmsUnreachable",
    "HdlcTransport",
    "Transport",
    "WrapperTransport",
    "open_serial",
]
