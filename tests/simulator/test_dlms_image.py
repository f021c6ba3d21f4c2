"""Simulated image transfer (class 18), sans-IO: the meter's side of a firmware upgrade."""

from __future__ import annotations

import hashlib
import random

import pytest

from openami.protocols.dlms.axdr import BitString, Data, DataType, encode_data
from openami.protocols.dlms.xdlms import (
    ActionRequestNormal,
    ActionResult,
    CosemAttribute,
    CosemMethod,
    DataAccessResult,
    encode_xdlms,
)
from openami.simulator.dlms_image import (
    ACTIVE_FIRMWARE,
    IMAGE_TRANSFER,
    INITIAL_FIRMWARE,
    MAX_IMAGE_SIZE,
    ImageTransfer,
    TransferStatus,
    block_size_for,
)
from openami.simulator.dlms_meter import MeterKeys, SimulatedMeter

pytestmark = pytest.mark.timeout(30)

IDENT = b"OAM-SIM-2.0.0"
CIPHER_OVERHEAD = 21


def image_of(size: int, seed: int = 1) -> bytes:
    return random.Random(seed).randbytes(size)


def initiate(t: ImageTransfer, size: int, identifier: bytes = IDENT) -> ActionResult:
    return t.action(1, Data.structure(Data.octet_string(identifier), Data.uint32(size)))


def send(t: ImageTransfer, number: int, image: bytes) -> ActionResult:
    block = image[number * t.block_size : (number + 1) * t.block_size]
    return t.action(2, Data.structure(Data.uint32(number), Data.octet_string(block)))


def attr(t: ImageTransfer, attribute: int) -> Data:
    value = t.get(CosemAttribute(18, IMAGE_TRANSFER, attribute))
    assert isinstance(value, Data)
    encode_data(value)
    return value


def test_transfer_in_any_order_verify_and_activate() -> None:
    t = ImageTransfer(block_size=64)
    image = image_of(1000)  # 16 blocks, the last 40 bytes
    assert attr(t, 6) == Data.enum(TransferStatus.NOT_INITIATED)
    assert initiate(t, len(image)) == ActionResult.SUCCESS
    assert t.blocks == 16
    order = list(range(16))
    random.Random(3).shuffle(order)
    for number in order[:10]:
        assert send(t, number, image) == ActionResult.SUCCESS
    assert send(t, order[0], image) == ActionResult.SUCCESS  # a duplicate is fine
    bits = attr(t, 3).value
    assert isinstance(bits, BitString)
    assert bits.length == 16
    assert {n for n, bit in enumerate(bits.bits) if bit == "1"} == set(order[:10])
    assert attr(t, 4) == Data.uint32(min(order[10:]))
    assert attr(t, 7) == Data.array()  # nothing verified yet

    for number in order[10:]:
        send(t, number, image)
    assert attr(t, 4) == Data.uint32(16)
    assert attr(t, 3).value == BitString.from_bits("1" * 16)
    assert t.action(3, Data.int8(0)) == ActionResult.SUCCESS  # small image: verified at once
    assert attr(t, 6) == Data.enum(TransferStatus.VERIFICATION_SUCCESSFUL)
    assert attr(t, 7) == Data.array(
        Data.structure(
            Data.uint32(1000), Data.octet_string(IDENT), Data.octet_string(hashlib.sha256(image).digest())
        )
    )
    assert t.get(CosemAttribute(1, ACTIVE_FIRMWARE, 2)) == Data.octet_string(INITIAL_FIRMWARE)
    assert t.action(4, Data.int8(0)) == ActionResult.SUCCESS
    assert attr(t, 6) == Data.enum(TransferStatus.ACTIVATION_SUCCESSFUL)
    assert t.get(CosemAttribute(1, ACTIVE_FIRMWARE, 2)) == Data.octet_string(IDENT)


def test_large_image_verifies_in_the_background() -> None:
    t = ImageTransfer()
    image = image_of(20 * 1024)
    initiate(t, len(image))
    for number in range(t.blocks):
        send(t, number, image)
    assert t.action(3, Data.int8(0)) == ActionResult.TEMPORARY_FAILURE
    assert t.action(4, Data.int8(0)) == ActionResult.TEMPORARY_FAILURE  # not while verifying
    assert send(t, 0, image) == ActionResult.TEMPORARY_FAILURE
    assert attr(t, 6) == Data.enum(TransferStatus.VERIFICATION_INITIATED)
    assert attr(t, 6) == Data.enum(TransferStatus.VERIFICATION_SUCCESSFUL)
    assert t.signature == hashlib.sha256(image).digest()


def test_methods_before_initiate_are_refused() -> None:
    t = ImageTransfer()
    assert send(t, 0, bytes(192)) == ActionResult.OBJECT_UNAVAILABLE
    assert t.action(3, Data.int8(0)) == ActionResult.OBJECT_UNAVAILABLE
    assert t.action(4, Data.int8(0)) == ActionResult.OBJECT_UNAVAILABLE
    assert t.action(9, Data.int8(0)) == ActionResult.OBJECT_UNAVAILABLE
    assert attr(t, 3).value == BitString(0, b"")
    assert attr(t, 4) == Data.uint32(0)


def test_bad_parameters_give_action_results() -> None:
    t = ImageTransfer(block_size=100)
    assert t.action(1, Data.int8(0)) == ActionResult.TYPE_UNMATCHED
    assert t.action(1, None) == ActionResult.TYPE_UNMATCHED
    assert (
        t.action(1, Data.structure(Data.uint32(5), Data.octet_string(IDENT))) == ActionResult.TYPE_UNMATCHED
    )
    assert initiate(t, 0) == ActionResult.OTHER_REASON
    assert initiate(t, MAX_IMAGE_SIZE + 1) == ActionResult.OTHER_REASON
    assert initiate(t, 10, b"") == ActionResult.OTHER_REASON
    image = image_of(250)
    assert initiate(t, len(image)) == ActionResult.SUCCESS
    assert send(t, 3, image + bytes(100)) == ActionResult.OTHER_REASON  # beyond the size
    assert (
        t.action(2, Data.structure(Data.uint32(0), Data.octet_string(bytes(99)))) == ActionResult.OTHER_REASON
    )
    assert (
        t.action(2, Data.structure(Data.uint32(2), Data.octet_string(bytes(100))))
        == ActionResult.OTHER_REASON
    )
    assert (
        t.action(2, Data.structure(Data.uint8(0), Data.octet_string(bytes(100))))
        == ActionResult.TYPE_UNMATCHED
    )
    assert t.action(3, None) == ActionResult.TYPE_UNMATCHED
    assert t.action(4, Data.octet_string(b"")) == ActionResult.TYPE_UNMATCHED
    assert send(t, 2, image) == ActionResult.SUCCESS  # the 50-byte last block


def test_verification_fails_until_every_block_is_there() -> None:
    t = ImageTransfer(block_size=100)
    image = image_of(250)
    initiate(t, len(image))
    send(t, 0, image)
    send(t, 2, image)
    assert t.action(3, Data.int8(0)) == ActionResult.OTHER_REASON
    assert attr(t, 6) == Data.enum(TransferStatus.VERIFICATION_FAILED)
    assert t.action(4, Data.int8(0)) == ActionResult.OBJECT_UNAVAILABLE
    assert attr(t, 7) == Data.array()
    send(t, 1, image)
    assert t.action(3, Data.int8(0)) == ActionResult.SUCCESS


def test_activate_verifies_an_unverified_image_first() -> None:
    t = ImageTransfer(block_size=100)
    image = image_of(250)
    initiate(t, len(image))
    send(t, 0, image)
    assert t.action(4, Data.int8(0)) == ActionResult.OTHER_REASON
    assert t.status is TransferStatus.ACTIVATION_FAILED
    assert t.active_identifier == INITIAL_FIRMWARE
    initiate(t, len(image))
    for number in range(3):
        send(t, number, image)
    assert t.action(4, Data.int8(0)) == ActionResult.SUCCESS
    assert t.active_identifier == IDENT


def test_initiate_again_resumes_the_same_image_and_restarts_another() -> None:
    t = ImageTransfer(block_size=100)
    image = image_of(250)
    initiate(t, len(image))
    send(t, 1, image)
    initiate(t, len(image))
    assert attr(t, 3).value == BitString.from_bits("010")
    initiate(t, len(image), b"other")
    assert attr(t, 3).value == BitString.from_bits("000")


def test_lost_and_corrupted_blocks() -> None:
    t = ImageTransfer(block_size=100)
    image = image_of(250)
    t.lose_blocks, t.corrupt_blocks = {1}, {2}
    initiate(t, len(image))
    for number in range(3):
        assert send(t, number, image) == ActionResult.SUCCESS
    assert t.first_missing() == 1
    send(t, 1, image)
    assert t.action(3, Data.int8(0)) == ActionResult.SUCCESS  # the meter cannot tell: the signature can
    assert t.signature != hashlib.sha256(image).digest()
    assert not t.lose_blocks
    assert not t.corrupt_blocks


def test_transfer_can_be_disabled() -> None:
    t = ImageTransfer()
    assert t.set(5, Data.uint8(0)) == DataAccessResult.TYPE_UNMATCHED
    assert t.set(2, Data.uint32(10)) == DataAccessResult.READ_WRITE_DENIED
    assert t.set(5, Data.boolean(False)) == DataAccessResult.SUCCESS
    assert attr(t, 5) == Data.boolean(False)
    assert initiate(t, 10) == ActionResult.OTHER_REASON


@pytest.mark.parametrize("max_pdu", [64, 128, 240, 1024, 0xFFFF])
def test_block_size_fits_the_meters_pdu(max_pdu: int) -> None:
    size = block_size_for(max_pdu)
    assert 16 <= size <= 192
    request = ActionRequestNormal(
        15,
        CosemMethod(18, IMAGE_TRANSFER, 2),
        Data.structure(Data.uint32(0xFFFFFFFF), Data.octet_string(bytes(size))),
    )
    assert len(encode_xdlms(request)) + CIPHER_OVERHEAD <= max(max_pdu, 64)


def test_meter_routes_image_transfer() -> None:
    m = SimulatedMeter("SIM1", b"OAM00001", MeterKeys.demo("SIM1"), 1, max_pdu=256)
    image = image_of(300)
    assert m.get(CosemAttribute(18, IMAGE_TRANSFER, 2), None) == Data.uint32(block_size_for(256))
    assert m.get(CosemAttribute(18, IMAGE_TRANSFER, 1), None) == Data.octet_string(IMAGE_TRANSFER.to_bytes())
    assert m.get(CosemAttribute(1, ACTIVE_FIRMWARE, 2), None) == Data.octet_string(INITIAL_FIRMWARE)
    method = CosemMethod(18, IMAGE_TRANSFER, 1)
    params = Data.structure(Data.octet_string(IDENT), Data.uint32(len(image)))
    assert m.action(ActionRequestNormal(1, method, params)) == ActionResult.SUCCESS
    assert m.set(CosemAttribute(18, IMAGE_TRANSFER, 5), Data.boolean(False)) == DataAccessResult.SUCCESS
    assert m.image.enabled is False
    status = m.get(CosemAttribute(18, IMAGE_TRANSFER, 6), None)
    assert status == Data(DataType.ENUM, TransferStatus.INITIATED)
    assert m.get(CosemAttribute(18, IMAGE_TRANSFER, 9), None) == DataAccessResult.OBJECT_UNDEFINED
    assert m.set(CosemAttribute(1, ACTIVE_FIRMWARE, 2), Data.octet_string(b"x")) == (
        DataAccessResult.READ_WRITE_DENIED
    )
