"""Wireless M-Bus (EN 13757-4) and OMS link, transport and security layers, sans-IO.

Bytes in, :class:`WmbusTelegram` out: :func:`decode_telegram` runs the link layer (CRC blocks of frame
formats A/B, or already stripped), the ELL/AFL/TPL headers, mode 5/7 and ELL decryption, and hands the
plain application data to the EN 13757-3 record decoder of :mod:`openami.protocols.mbus`. Every failure is
a :class:`WmbusError`; see :mod:`openami.protocols.wmbus.errors` for which one means what.
"""

from openami.protocols.wmbus.compact import FormatCache
from openami.protocols.wmbus.errors import (
    AuthenticationError,
    DecodeError,
    DecryptionError,
    FormatUnknownError,
    FrameError,
    KeyRequiredError,
    SecurityError,
    UnsupportedCIError,
    UnsupportedSecurityModeError,
    WmbusError,
)
from openami.protocols.wmbus.ingest import IngestedTelegram, LineParser, parse_line
from openami.protocols.wmbus.link import Address, LinkFrame, crc16_en13757, parse_link
from openami.protocols.wmbus.telegram import (
    WmbusTelegram,
    decode_link_frame,
    decode_telegram,
    decode_telegrams,
    to_json,
)

__all__ = [
    "Address",
    "AuthenticationError",
    "DecodeError",
    "DecryptionError",
    "FormatCache",
    "FormatUnknownError",
    "FrameError",
    "IngestedTelegram",
    "KeyRequiredError",
    "LineParser",
    "LinkFrame",
    "SecurityError",
    "UnsupportedCIError",
    "UnsupportedSecurityModeError",
    "WmbusError",
    "WmbusTelegram",
    "crc16_en13757",
    "decode_link_frame",
    "decode_telegram",
    "decode_telegrams",
    "parse_line",
    "parse_link",
    "to_json",
]
