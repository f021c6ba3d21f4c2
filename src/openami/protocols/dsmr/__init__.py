"""DSMR P1 (Dutch/Belgian/Luxembourg/Hungarian consumer port) telegrams, from the public DSMR P1 companion
standards (v2.2, v3, v4.x, v5) and Fluvius e-MUCS. Sans-IO.

``telegram`` frames and parses one telegram (``/`` header, COSEM lines, ``!`` and CRC-16/ARC); ``values``
turns the parenthesised fields into numbers in base units, aware timestamps and text; ``stream`` finds
telegrams in a serial byte stream; ``export`` gives the JSON view and platform readings. Every parser ends
in a value or a :class:`~openami.protocols.dsmr.errors.DsmrError`, within a bounded amount of work.
"""

from openami.protocols.dsmr.errors import CrcError, DsmrError, TelegramError
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
    "CosemObject",
    "CrcError",
    "DsmrError",
    "DsmrStreamParser",
    "DsmrTelegram",
    "DsmrValue",
    "MbusDevice",
    "PowerFailure",
    "TelegramError",
    "crc16_arc",
    "parse_telegram",
    "readings",
    "to_json",
]
