"""Wired M-Bus (EN 13757-2 link layer, EN 13757-3 application layer), written here from the public
descriptions of the standards. Sans-IO.

``frames`` builds and checks link frames and splits a byte stream; ``dif``/``vif``/``values`` decode the
parts of a data record; ``records`` walks the variable data structure; ``header`` parses the long and
short headers; ``telegram`` puts a frame together (:func:`decode_frame`, :func:`to_json`); ``master``
builds requests and addresses. Nothing here opens a socket or sleeps, and every parser ends in a value or
a typed :class:`~openami.protocols.mbus.errors.MbusError`.

Shared with the wireless M-Bus decoder: :func:`decode_records`, :func:`parse_long_header` and
:func:`record_to_json`.
"""

from openami.protocols.mbus.errors import ApplicationError, DecodeError, EncodeError, FrameError, MbusError
from openami.protocols.mbus.header import LongHeader, ShortHeader, parse_long_header
from openami.protocols.mbus.records import DataRecord, decode_records
from openami.protocols.mbus.telegram import MbusTelegram, decode_frame, record_to_json, to_json

__all__ = [
    "ApplicationError",
    "DataRecord",
    "DecodeError",
    "EncodeError",
    "FrameError",
    "LongHeader",
    "MbusError",
    "MbusTelegram",
    "ShortHeader",
    "decode_frame",
    "decode_records",
    "parse_long_header",
    "record_to_json",
    "to_json",
]
