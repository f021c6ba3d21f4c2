"""SML (Smart Message Language 1.03/1.04, BSI TR-03109-1 Anlage IV) as German eHZ meters push it on their
optical interface. Written here from the public specification. Sans-IO.

``transport`` frames a file (escape sequences, padding, CRC-16/X-25) and finds files in a serial stream;
``tl`` decodes the type-length encoded values; ``messages`` turns them into Open/GetList/Close/Attention
responses with per-message CRCs; ``export`` gives values with the scaler applied and the JSON view;
``encode`` writes all of it back (what the simulated meters send). Every parser ends in a value or an
:class:`~openami.protocols.sml.errors.SmlError`, with bounded work.
"""

from openami.protocols.sml.errors import (
    SmlCrcError,
    SmlDecodeError,
    SmlEncodeError,
    SmlError,
    SmlFrameError,
)
from openami.protocols.sml.export import SmlReading, to_json, values
from openami.protocols.sml.messages import (
    AttentionResponse,
    CloseResponse,
    GetListResponse,
    ListEntry,
    OpenResponse,
    SmlFile,
    SmlMessage,
    SmlTime,
    UnknownBody,
    parse_file,
)
from openami.protocols.sml.transport import SmlStreamParser, crc16_x25, unframe

__all__ = [
    "AttentionResponse",
    "CloseResponse",
    "GetListResponse",
    "ListEntry",
    "OpenResponse",
    "SmlCrcError",
    "SmlDecodeError",
    "SmlEncodeError",
    "SmlError",
    "SmlFile",
    "SmlFrameError",
    "SmlMessage",
    "SmlReading",
    "SmlStreamParser",
    "SmlTime",
    "UnknownBody",
    "crc16_x25",
    "parse_file",
    "to_json",
    "unframe",
    "values",
]
