"""Firmware upgrade over DLMS/COSEM: the image transfer process (interface class 18, 0-0:44.0.0).

The steps are the Blue Book's: check that transfer is enabled and read the block size the meter wants,
initiate with the image's identifier and size, send every block, ask the meter which blocks it holds
and send the missing ones again (a bounded number of rounds), verify, check that what the meter
reports about the image to activate (size, identifier, signature) is what was sent, activate, and read
back the active firmware identifier (1-0:0.2.0). A meter may verify or activate in the background,
answering temporary-failure; its image_transfer_status is then polled a bounded number of times.

The signature check compares the meter's signature with the image's SHA-256, what the simulator and
meters that report a digest give; a meter whose signature is a vendor's digital signature needs it
passed as ``signature``. Only :class:`DlmsClient`'s public services are used. Every refusal of the meter
and every mismatch is a :class:`~openami.drivers.dlms.errors.FirmwareUpgradeError` naming its stage;
a lost connection stays :class:`~openami.drivers.dlms.errors.DlmsUnreachable` (retry later: a transfer
initiated again with the same identifier and size may resume where it stopped).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from enum import IntEnum
from typing import Final

from openami.drivers.dlms.client import DlmsClient
from openami.drivers.dlms.errors import DlmsAccessError, DlmsProtocolError, FirmwareUpgradeError
from openami.protocols.dlms.axdr import BitString, Data, DataType
from openami.protocols.dlms.obis import Obis
from openami.protocols.dlms.xdlms import (
    ActionRequestNormal,
    ActionResult,
    CosemAttribute,
    CosemMethod,
    encode_xdlms,
)

__all__ = [
    "ACTIVE_FIRMWARE",
    "IMAGE_TRANSFER",
    "FirmwareResult",
    "ImageTransferStatus",
    "Progress",
    "upgrade_firmware",
]

IMAGE_TRANSFER: Final = Obis(0, 0, 44, 0, 0, 255)
ACTIVE_FIRMWARE: Final = Obis(1, 0, 0, 2, 0, 255)
"""Active firmware identifier (Data, class 1)."""
_IMAGE_CLASS, _DATA_CLASS = 18, 1
_BLOCK_SIZE, _BLOCKS_STATUS, _FIRST_MISSING, _ENABLED, _STATUS, _TO_ACTIVATE = 2, 3, 4, 5, 6, 7
_INITIATE, _TRANSFER, _VERIFY, _ACTIVATE = 1, 2, 3, 4
_CIPHER_OVERHEAD: Final = 21
"""glo-ciphering around a request (tag, length up to 3 bytes, security control, IC, 12-byte tag)."""
_MAX_SIZE: Final = 0xFFFFFFFF

Progress = Callable[[int, int], object]
"""Called with (blocks the meter holds or was sent, blocks in the image) as the transfer advances."""


class ImageTransferStatus(IntEnum):
    """image_transfer_status (attribute 6)."""

    NOT_INITIATED = 0
    INITIATED = 1
    VERIFICATION_INITIATED = 2
    VERIFICATION_SUCCESSFUL = 3
    VERIFICATION_FAILED = 4
    ACTIVATION_INITIATED = 5
    ACTIVATION_SUCCESSFUL = 6
    ACTIVATION_FAILED = 7


_S = ImageTransferStatus
_BACKGROUND: Final = {
    _VERIFY: ("verify", _S.VERIFICATION_INITIATED, _S.VERIFICATION_SUCCESSFUL, _S.VERIFICATION_FAILED),
    _ACTIVATE: ("activate", _S.ACTIVATION_INITIATED, _S.ACTIVATION_SUCCESSFUL, _S.ACTIVATION_FAILED),
}
"""Per method that may run in the background: its stage, and the statuses running, done and failed."""


@dataclass(frozen=True, slots=True)
class FirmwareResult:
    """What an upgrade did: ``resent_blocks`` counts blocks sent again because the meter lacked them;
    ``active_identifier`` is what the meter runs afterwards (None when it does not say)."""

    identifier: bytes
    size: int
    signature: bytes
    block_size: int
    blocks: int
    resent_blocks: int
    activated: bool
    active_identifier: bytes | None


def _attribute(attribute: int) -> CosemAttribute:
    return CosemAttribute(_IMAGE_CLASS, IMAGE_TRANSFER, attribute)


def _method(method: int) -> CosemMethod:
    return CosemMethod(_IMAGE_CLASS, IMAGE_TRANSFER, method)


def _block_params(number: int, block: bytes) -> Data:
    return Data.structure(Data.uint32(number), Data.octet_string(block))


@contextlib.contextmanager
def _stage(stage: str) -> Iterator[None]:
    """A refusal by the meter becomes a FirmwareUpgradeError of this stage."""
    try:
        yield
    except DlmsAccessError as exc:
        raise FirmwareUpgradeError(f"{stage}: meter refused: {exc}", stage, exc.result) from exc


async def upgrade_firmware(
    client: DlmsClient,
    image: bytes,
    identifier: bytes,
    *,
    progress: Progress | None = None,
    activate: bool = True,
    signature: bytes | None = None,
    resend_rounds: int = 3,
    status_polls: int = 30,
    poll_interval: float = 1.0,
) -> FirmwareResult:
    """Transfer ``image`` to the meter ``client`` is associated with, verify it and (``activate``)
    activate it. Needs the management client: the public client may read but not transfer.

    ``signature`` is what the meter must report for the image (default: its SHA-256). At most
    ``resend_rounds`` rounds re-send missing blocks; background verification or activation is polled
    ``status_polls`` times, ``poll_interval`` seconds apart.
    """
    if not image or len(image) > _MAX_SIZE:
        raise ValueError(f"image must be 1..{_MAX_SIZE} bytes, got {len(image)}")
    if not identifier:
        raise ValueError("image identifier must not be empty")
    if resend_rounds < 0 or status_polls < 0 or poll_interval < 0:
        raise ValueError("resend_rounds, status_polls and poll_interval must not be negative")
    block_size = await _prepare(client)
    blocks = [image[start : start + block_size] for start in range(0, len(image), block_size)]
    total = len(blocks)

    with _stage("initiate"):
        await client.action(
            _method(_INITIATE), Data.structure(Data.octet_string(identifier), Data.uint32(len(image)))
        )
    for number, block in enumerate(blocks):
        await _send(client, number, block)
        if progress is not None:
            progress(number + 1, total)
    resent = await _complete(client, blocks, resend_rounds, progress)

    await _run(client, _VERIFY, polls=status_polls, interval=poll_interval)
    expected = hashlib.sha256(image).digest() if signature is None else signature
    await _check(client, len(image), identifier, expected)

    if activate:
        await _run(client, _ACTIVATE, polls=status_polls, interval=poll_interval)
    active = await _active_identifier(client)
    if activate and active != identifier:
        raise FirmwareUpgradeError(
            f"meter runs firmware {active!r} after activation, not {identifier!r}", "activate"
        )
    return FirmwareResult(identifier, len(image), expected, block_size, total, resent, activate, active)


async def _prepare(client: DlmsClient) -> int:
    """Transfer enabled, and the meter's block size, which must fit the PDU the meter receives."""
    negotiated = client.association.negotiated
    if negotiated is None:
        raise FirmwareUpgradeError("no association with the meter: open the client first", "prepare")
    with _stage("prepare"):
        enabled = await client.get(_attribute(_ENABLED))
        size = await client.get(_attribute(_BLOCK_SIZE))
    if enabled != Data.boolean(True):
        raise FirmwareUpgradeError("image transfer is disabled on the meter", "prepare")
    block_size = size.value
    if isinstance(block_size, bool) or not isinstance(block_size, int) or block_size <= 0:
        raise DlmsProtocolError(f"image_block_size is not a positive integer: {size}")
    request = ActionRequestNormal(0, _method(_TRANSFER), _block_params(_MAX_SIZE, bytes(block_size)))
    needed = len(encode_xdlms(request)) + _CIPHER_OVERHEAD
    if needed > negotiated.server_max_receive_pdu_size:
        raise FirmwareUpgradeError(
            f"a block of {block_size} bytes needs a {needed}-byte request, above the meter's "
            f"max receive PDU size {negotiated.server_max_receive_pdu_size}",
            "prepare",
        )
    return block_size


async def _send(client: DlmsClient, number: int, block: bytes) -> None:
    with _stage("transfer"):
        await client.action(_method(_TRANSFER), _block_params(number, block))


async def _complete(client: DlmsClient, blocks: list[bytes], rounds: int, progress: Progress | None) -> int:
    """Re-send what the meter lacks until it holds every block; returns how many were re-sent."""
    total, resent = len(blocks), 0
    for round_number in range(rounds + 1):
        missing = await _missing(client, total)
        if not missing:
            return resent
        if round_number == rounds:
            break
        held = total - len(missing)
        for number in missing:
            await _send(client, number, blocks[number])
            resent += 1
            held += 1
            if progress is not None:
                progress(held, total)
    raise FirmwareUpgradeError(
        f"{len(missing)} of {total} blocks still missing after {rounds} re-send rounds "
        f"(first: block {missing[0]})",
        "transfer",
    )


async def _missing(client: DlmsClient, total: int) -> list[int]:
    """Blocks the meter lacks, from its transferred-blocks bit-string and first-not-transferred number."""
    with _stage("transfer"):
        status = await client.get(_attribute(_BLOCKS_STATUS))
        first = await client.get(_attribute(_FIRST_MISSING))
    if not isinstance(status.value, BitString):
        raise DlmsProtocolError(f"image_transferred_blocks_status is not a bit-string: {status.type.name}")
    if isinstance(first.value, bool) or not isinstance(first.value, int):
        raise DlmsProtocolError(f"image_first_not_transferred_block_number is not a number: {first}")
    bits = status.value.bits.ljust(total, "0")  # bits the meter does not send: blocks it does not hold
    missing = {number for number in range(total) if bits[number] != "1"}
    if first.value < total:
        missing.add(first.value)
    return sorted(missing)


async def _status(client: DlmsClient, stage: str) -> ImageTransferStatus:
    with _stage(stage):
        value = await client.get(_attribute(_STATUS))
    if isinstance(value.value, int) and 0 <= value.value <= max(ImageTransferStatus):
        return ImageTransferStatus(value.value)
    raise DlmsProtocolError(f"image_transfer_status {value.value!r} is not a known status")


async def _run(client: DlmsClient, method: int, *, polls: int, interval: float) -> None:
    """Invoke verify or activate; on temporary-failure the meter works on it: poll until done."""
    stage, running, done, failed = _BACKGROUND[method]
    try:
        await client.action(_method(method), Data.int8(0))
        return
    except DlmsAccessError as exc:
        if exc.result != ActionResult.TEMPORARY_FAILURE.name:
            raise FirmwareUpgradeError(f"{stage}: meter refused: {exc}", stage, exc.result) from exc
    for _ in range(polls):
        await asyncio.sleep(interval)
        status = await _status(client, stage)
        if status == done:
            return
        if status != running:
            outcome = "failed" if status == failed else f"ended in {status.name}"
            raise FirmwareUpgradeError(f"{stage} {outcome} (image_transfer_status {status.name})", stage)
    raise FirmwareUpgradeError(f"{stage} still running after {polls} status reads", stage)


async def _check(client: DlmsClient, size: int, identifier: bytes, signature: bytes) -> None:
    """The meter's image_to_activate_info must describe exactly the image sent."""
    with _stage("check"):
        info = await client.get(_attribute(_TO_ACTIVATE))
    listed = _images(info)
    if identifier not in listed:
        raise FirmwareUpgradeError(
            f"meter lists no image {identifier!r} to activate (it lists {sorted(listed)!r:.120})", "check"
        )
    meter_size, meter_signature = listed[identifier]
    if meter_size != size:
        raise FirmwareUpgradeError(f"meter holds {meter_size} bytes of the image, {size} were sent", "check")
    if meter_signature != signature:
        raise FirmwareUpgradeError(
            f"image signature {meter_signature.hex()} is not the expected {signature.hex()}", "check"
        )


def _images(info: Data) -> dict[bytes, tuple[int, bytes]]:
    """image_to_activate_info as identifier -> (size, signature)."""
    if info.type != DataType.ARRAY or not isinstance(info.value, tuple):
        raise DlmsProtocolError(f"image_to_activate_info is not an array: {info.type.name}")
    images: dict[bytes, tuple[int, bytes]] = {}
    for entry in info.value:
        fields = entry.value
        if entry.type != DataType.STRUCTURE or not isinstance(fields, tuple) or len(fields) != 3:
            raise DlmsProtocolError(f"image_to_activate_info entry is not a structure of three: {entry}")
        size, identifier, signature = (field.value for field in fields)
        if not isinstance(size, int) or not isinstance(identifier, bytes) or not isinstance(signature, bytes):
            raise DlmsProtocolError(f"image_to_activate_info entry holds {size!r}, {identifier!r}, ...")
        images[identifier] = (size, signature)
    return images


async def _active_identifier(client: DlmsClient) -> bytes | None:
    """The active firmware identifier, None when the meter has no such object."""
    try:
        value = await client.get(CosemAttribute(_DATA_CLASS, ACTIVE_FIRMWARE, 2))
    except DlmsAccessError:
        return None
    if isinstance(value.value, str):
        return value.value.encode("latin-1")
    return value.value if isinstance(value.value, bytes) else None
