"""DSMR P1 (Dutch/Belgian/Luxembourg/Hungarian consumer port) telegrams, from the public DSMR P1 companion
standards (v2.2, v3, v4.x, v5) and Fluvius e-MUCS. Sans-IO.

``telegram`` frames and parses one telegram (``/`` header, COSEM lines, ``!`` and CRC-16/ARC); ``values``
turns the parenthesised fields into numbers in base units, aware timestamps and text; ``stream`` finds
telegrams in a serial byte stream; ``export`` gives the JSON view and platform readings; ``encrypted``
opens the AES-GCM frames of Luxembourg and Austrian meters (E-MeterP1). Every parser ends in a value or a
:class:`~openami.protocols.dsmr.errors.DsmrError`, within a bounded amount of work.
"""

from openami.protocols.dsmr.encrypted import (
    EncryptedP1StreamParser,
    P1Keys,
    decrypt_frame,
    encrypt_telegram,
    parse_encrypted_telegram,
)
from openami.protocols.dsmr.errors import (
    AuthenticationError,
    CrcError,
    DecryptionError,
    DsmrError,
    EncryptedFrameError,
    TelegramError,
    TruncatedFrameError,
    WrongKeyError,
)
from openami.protocols.dsmr.export import readings, to_json
from openami.protocols.dsmr.stream import DsmrStreamParser
from openami.protocols.dsmr.telegram import (
    CosemObject,
    DsmrTelegram,
    DsmrValue,
    MbusDevice,
    PowerFailure,
    crc16_arc,
    parse_telegram,
)

__all__ = [
    "AuthenticationError",
    "CosemObject",
    "CrcError",
    "DecryptionError",
    "DsmrError",
    "DsmrStreamParser",
    "DsmrTelegram",
    "DsmrValue",
    "EncryptedFrameError",
    "EncryptedP1StreamParser",
    "MbusDevice",
    "P1Keys",
    "PowerFailure",
    "TelegramError",
    "TruncatedFrameError",
    "WrongKeyError",
    "crc16_arc",
    "decrypt_frame",
    "encrypt_telegram",
    "parse_encrypted_telegram",
    "parse_telegram",
    "readings",
    "to_json",
]
