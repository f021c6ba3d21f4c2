"""IEC 62056-21 (formerly IEC 61107): direct local data exchange with legacy electricity meters.

Sans-IO: :mod:`.messages` (request, identification, option select, data message, BCC, baud rate
tables), :mod:`.datasets` (data block lines into OBIS-addressed values in base units), :mod:`.readout`
(:func:`parse_readout`, :func:`to_json`), :mod:`.session` (:class:`ModeCSession`, the HHU's steps) and
:mod:`.programming` (programming mode: P1 password, W1 writes, B0 break).
The async driver is :mod:`openami.drivers.iec62056_21`; a virtual meter is
:mod:`openami.simulator.iec62056_21_meter`.

Bad input raises :class:`DecodeError` (a :class:`ValueError`), of which :class:`BccError` is the
checksum case; every failure here is an :class:`Iec62056Error`.
"""

from openami.protocols.iec62056_21.datasets import DataSet, Value
from openami.protocols.iec62056_21.errors import (
    BccError,
    DecodeError,
    EncodeError,
    Iec62056Error,
    SessionError,
)
from openami.protocols.iec62056_21.messages import (
    MODE_B_BAUDRATES,
    MODE_C_BAUDRATES,
    Identification,
    OptionSelect,
    bcc,
)
from openami.protocols.iec62056_21.readout import Readout, parse_readout, to_json
from openami.protocols.iec62056_21.session import Identified, ModeCSession, ReadoutReceived

__all__ = [
    "MODE_B_BAUDRATES",
    "MODE_C_BAUDRATES",
    "BccError",
    "DataSet",
    "DecodeError",
    "EncodeError",
    "Identification",
    "Identified",
    "Iec62056Error",
    "ModeCSession",
    "OptionSelect",
    "Readout",
    "ReadoutReceived",
    "SessionError",
    "Value",
    "bcc",
    "parse_readout",
    "to_json",
]
