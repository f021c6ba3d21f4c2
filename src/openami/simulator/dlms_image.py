"""Image transfer (interface class 18, 0-0:44.0.0) of a simulated meter: firmware upgrade end to end.

The head-end's upgrade (:func:`openami.drivers.dlms.firmware.upgrade_firmware`) needs a meter that
behaves like one: blocks of a fixed size accepted in any order and more than once, a bit-string of the
blocks received, verification that can take a while (image_verify answers temporary-failure and the
status is polled), and activation that changes the active firmware identifier (1-0:0.2.0, class 1).
The simulator signs a verified image with its SHA-256, which the head-end compares with its own copy.

Every refusal is an :class:`~openami.protocols.dlms.xdlms.ActionResult`, never an exception:
parameters of the wrong shape ``TYPE_UNMATCHED``; a method the transfer's state does not allow
(a block before initiate, activation of an unverified image in progress) ``OBJECT_UNAVAILABLE``, or
``TEMPORARY_FAILURE`` while verification runs; values out of range (size, block number, block length,
transfer disabled) ``OTHER_REASON``. Faults for tests are injected through :attr:`ImageTransfer.lose_blocks`
and :attr:`ImageTransfer.corrupt_blocks`.
"""

from __future__ import annotations

import hashlib
from enum import IntEnum
from typing import Final

from openami.protocols.dlms.axdr import BitString, Data, DataType
from openami.protocols.dlms.obis import Obis
from openami.protocols.dlms.xdlms import ActionResult, CosemAttribute, DataAccessResult, GetResult

__all__ = [
    "ACTIVE_FIRMWARE",
    "IMAGE_CLASS",
    "IMAGE_TRANSFER",
    "INITIAL_FIRMWARE",
    "MAX_IMAGE_SIZE",
    "ImageTransfer",
    "TransferStatus",
    "block_size_for",
]

IMAGE_CLASS: Final = 18
IMAGE_TRANSFER: Final = Obis(0, 0, 44, 0, 0, 255)
ACTIVE_FIRMWARE: Final = Obis(1, 0, 0, 2, 0, 255)
"""Active firmware identifier (Data, class 1): what image_activate changes."""
INITIAL_FIRMWARE: Final = b"OAM-SIM-1.0.0"
MAX_IMAGE_SIZE: Final = 1 << 20
"""Largest image a simulated meter accepts: a transfer holds the image in memory."""
MAX_IDENTIFIER: Final = 64
DEFAULT_BLOCK_SIZE: Final = 192
# An ACTION-Request-Normal carrying a block (tag, choice, invoke, method descriptor, parameter flag,
# structure of a double-long-unsigned and an octet-string with up to 3 length bytes) takes 24 bytes
# beside the block, glo-ciphering (tag, length, SC, IC, GMAC tag) up to 21: the block must leave room.
_REQUEST_OVERHEAD: Final = 48
_MIN_BLOCK = 16
_VERIFY_FROM: Final = 4096
"""Images from this size are verified "in the background": image_verify answers temporary-failure."""
_VERIFY_POLLS: Final = 2
"""Status reads a background verification takes to finish (the simulator's notion of time)."""

_DATA_CLASS = 1
_INITIATE, _BLOCK, _VERIFY, _ACTIVATE = 1, 2, 3, 4


class TransferStatus(IntEnum):
    """image_transfer_status (attribute 6)."""

    NOT_INITIATED = 0
    INITIATED = 1
    VERIFICATION_INITIATED = 2
    VERIFICATION_SUCCESSFUL = 3
    VERIFICATION_FAILED = 4
    ACTIVATION_INITIATED = 5
    ACTIVATION_SUCCESSFUL = 6
    ACTIVATION_FAILED = 7


def block_size_for(max_pdu: int) -> int:
    """The image_block_size a meter receiving at most ``max_pdu`` bytes can offer (at most 192)."""
    return max(_MIN_BLOCK, min(DEFAULT_BLOCK_SIZE, max_pdu - _REQUEST_OVERHEAD))


_OBJECTS: Final = frozenset({(IMAGE_CLASS, IMAGE_TRANSFER), (_DATA_CLASS, ACTIVE_FIRMWARE)})


class ImageTransfer:
    """The image transfer object and the active firmware identifier of one meter."""

    def __init__(self, block_size: int = DEFAULT_BLOCK_SIZE, active_identifier: bytes = INITIAL_FIRMWARE):
        self.block_size = block_size
        self.enabled = True
        self.status = TransferStatus.NOT_INITIATED
        self.active_identifier = active_identifier
        self.identifier = b""
        self.size = 0
        self.signature = b""
        self.lose_blocks: set[int] = set()
        """Block numbers whose next arrival is acknowledged and dropped (a block lost inside the meter)."""
        self.corrupt_blocks: set[int] = set()
        """Block numbers whose next arrival is stored with its first byte flipped."""
        self._image = bytearray()
        self._received = bytearray()  # one byte per block: 1 when it arrived
        self._polls_left = 0

    @property
    def blocks(self) -> int:
        """How many blocks the initiated image has."""
        return -(-self.size // self.block_size)

    def first_missing(self) -> int:
        """image_first_not_transferred_block_number: ``blocks`` when every block arrived."""
        index = self._received.find(0)
        return self.blocks if index < 0 else index

    # --------------------------------------------------------------------------------- attributes

    def owns(self, attribute: CosemAttribute) -> bool:
        """Whether ``attribute`` belongs to the image transfer or the active firmware identifier."""
        return (attribute.class_id, attribute.obis) in _OBJECTS

    def get(self, attribute: CosemAttribute) -> GetResult | None:
        """The value of an attribute of this object or of 1-0:0.2.0; None: neither of them."""
        key = (attribute.class_id, attribute.obis)
        if key not in _OBJECTS:
            return None
        number = attribute.attribute
        if number == 1:
            return Data.octet_string(attribute.obis.to_bytes())
        if key == (_DATA_CLASS, ACTIVE_FIRMWARE):
            return (
                Data.octet_string(self.active_identifier)
                if number == 2
                else DataAccessResult.OBJECT_UNDEFINED
            )
        if number == 2:
            return Data.uint32(self.block_size)
        if number == 3:
            return Data(DataType.BIT_STRING, BitString.from_bits(self._received_bits()))
        if number == 4:
            return Data.uint32(self.first_missing())
        if number == 5:
            return Data.boolean(self.enabled)
        if number == 6:
            return Data.enum(self._poll_status())
        if number == 7:
            return self._to_activate()
        return DataAccessResult.OBJECT_UNDEFINED

    def set(self, attribute: int, value: Data) -> DataAccessResult:
        """Only image_transfer_enabled (5) is writable."""
        if attribute != 5:
            return DataAccessResult.READ_WRITE_DENIED
        if value.type != DataType.BOOLEAN or not isinstance(value.value, bool):
            return DataAccessResult.TYPE_UNMATCHED
        self.enabled = value.value
        return DataAccessResult.SUCCESS

    def _received_bits(self) -> str:
        return self._received.translate(bytes.maketrans(b"\0\1", b"01")).decode()

    def _poll_status(self) -> TransferStatus:
        """Reading the status is what lets a background verification finish."""
        if self.status is TransferStatus.VERIFICATION_INITIATED:
            self._polls_left -= 1
            if self._polls_left <= 0:
                self._finish_verification()
        return self.status

    def _to_activate(self) -> Data:
        """image_to_activate_info: the verified image, or nothing before verification."""
        if self.status not in (
            TransferStatus.VERIFICATION_SUCCESSFUL,
            TransferStatus.ACTIVATION_INITIATED,
            TransferStatus.ACTIVATION_SUCCESSFUL,
        ):
            return Data.array()
        return Data.array(
            Data.structure(
                Data.uint32(self.size), Data.octet_string(self.identifier), Data.octet_string(self.signature)
            )
        )

    # ------------------------------------------------------------------------------------ methods

    def action(self, method: int, params: Data | None) -> ActionResult:
        handler = {
            _INITIATE: self._initiate,
            _BLOCK: self._block,
            _VERIFY: self._verify,
            _ACTIVATE: self._activate,
        }.get(method)
        if handler is None:
            return ActionResult.OBJECT_UNAVAILABLE
        if not self.enabled:
            return ActionResult.OTHER_REASON
        return handler(params)

    def _initiate(self, params: Data | None) -> ActionResult:
        identifier, size = _structure(params, DataType.OCTET_STRING, DataType.DOUBLE_LONG_UNSIGNED)
        if not isinstance(identifier, bytes) or not isinstance(size, int):
            return ActionResult.TYPE_UNMATCHED
        if not 0 < len(identifier) <= MAX_IDENTIFIER or not 0 < size <= MAX_IMAGE_SIZE:
            return ActionResult.OTHER_REASON
        resumable = self.status in (TransferStatus.INITIATED, TransferStatus.VERIFICATION_FAILED)
        if not (resumable and (identifier, size) == (self.identifier, self.size)):
            self.identifier, self.size = identifier, size
            self._image = bytearray(size)
            self._received = bytearray(self.blocks)
        self.signature = b""
        self.status = TransferStatus.INITIATED
        return ActionResult.SUCCESS

    def _block(self, params: Data | None) -> ActionResult:
        if self.status is TransferStatus.VERIFICATION_INITIATED:
            return ActionResult.TEMPORARY_FAILURE
        if self.status not in (
            TransferStatus.INITIATED,
            TransferStatus.VERIFICATION_SUCCESSFUL,
            TransferStatus.VERIFICATION_FAILED,
        ):
            return ActionResult.OBJECT_UNAVAILABLE
        number, block = _structure(params, DataType.DOUBLE_LONG_UNSIGNED, DataType.OCTET_STRING)
        if not isinstance(number, int) or not isinstance(block, bytes):
            return ActionResult.TYPE_UNMATCHED
        start = number * self.block_size
        if number >= self.blocks or len(block) != min(self.block_size, self.size - start):
            return ActionResult.OTHER_REASON
        self.status, self.signature = TransferStatus.INITIATED, b""
        if number in self.lose_blocks:
            self.lose_blocks.discard(number)
            return ActionResult.SUCCESS
        if number in self.corrupt_blocks:
            self.corrupt_blocks.discard(number)
            block = bytes((block[0] ^ 0xFF,)) + block[1:]
        self._image[start : start + len(block)] = block
        self._received[number] = 1
        return ActionResult.SUCCESS

    def _verify(self, params: Data | None) -> ActionResult:
        if not _is_integer(params):
            return ActionResult.TYPE_UNMATCHED
        if self.status is TransferStatus.VERIFICATION_SUCCESSFUL:
            return ActionResult.SUCCESS
        if self.status is TransferStatus.VERIFICATION_INITIATED:
            return ActionResult.TEMPORARY_FAILURE
        if self.status not in (TransferStatus.INITIATED, TransferStatus.VERIFICATION_FAILED):
            return ActionResult.OBJECT_UNAVAILABLE
        if self.size >= _VERIFY_FROM and self.first_missing() == self.blocks:
            self.status, self._polls_left = TransferStatus.VERIFICATION_INITIATED, _VERIFY_POLLS
            return ActionResult.TEMPORARY_FAILURE
        return ActionResult.SUCCESS if self._finish_verification() else ActionResult.OTHER_REASON

    def _finish_verification(self) -> bool:
        """Every block there and the size right: the image is signed (SHA-256) and may be activated."""
        if self.first_missing() == self.blocks and len(self._image) == self.size:
            self.signature = hashlib.sha256(self._image).digest()
            self.status = TransferStatus.VERIFICATION_SUCCESSFUL
            return True
        self.status = TransferStatus.VERIFICATION_FAILED
        return False

    def _activate(self, params: Data | None) -> ActionResult:
        if not _is_integer(params):
            return ActionResult.TYPE_UNMATCHED
        if self.status is TransferStatus.VERIFICATION_INITIATED:
            return ActionResult.TEMPORARY_FAILURE
        if self.status is TransferStatus.INITIATED and not self._finish_verification():
            # An image not verified yet is verified first; one that fails is not activated.
            self.status = TransferStatus.ACTIVATION_FAILED
            return ActionResult.OTHER_REASON
        if self.status not in (TransferStatus.VERIFICATION_SUCCESSFUL, TransferStatus.ACTIVATION_SUCCESSFUL):
            return ActionResult.OBJECT_UNAVAILABLE
        self.active_identifier = self.identifier
        self.status = TransferStatus.ACTIVATION_SUCCESSFUL
        return ActionResult.SUCCESS


def _is_integer(params: Data | None) -> bool:
    """image_verify and image_activate take an integer (0)."""
    return params is not None and params.type == DataType.INTEGER


def _structure(params: Data | None, first: DataType, second: DataType) -> tuple[object, object]:
    """The two values of a structure with these member types; (None, None) for anything else."""
    if params is None or params.type != DataType.STRUCTURE or not isinstance(params.value, tuple):
        return None, None
    members = params.value
    if len(members) != 2 or (members[0].type, members[1].type) != (first, second):
        return None, None
    return members[0].value, members[1].value
