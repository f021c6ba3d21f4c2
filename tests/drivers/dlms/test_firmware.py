"""Firmware upgrade by image transfer over real TCP on loopback, HLS-GMAC with every APDU ciphered."""

from __future__ import annotations

import hashlib
import random
from collections.abc import AsyncIterator

import pytest

from openami.drivers.dlms import DlmsClient
from openami.drivers.dlms.errors import FirmwareUpgradeError
from openami.drivers.dlms.firmware import ACTIVE_FIRMWARE, IMAGE_TRANSFER, FirmwareResult, upgrade_firmware
from openami.protocols.dlms.axdr import Data
from openami.protocols.dlms.xdlms import CosemAttribute
from openami.simulator.dlms_image import INITIAL_FIRMWARE, TransferStatus
from openami.simulator.dlms_meter import MeterKeys, SimulatedMeter
from openami.simulator.dlms_server import DlmsSimulator, build_meters
from tests.drivers.dlms.test_client_simulator import HOST, hls, public

pytestmark = pytest.mark.timeout(30)

IMAGE = random.Random(5).randbytes(20 * 1024 + 77)
NEW = b"OAM-SIM-2.0.0"
BLOCKS = -(-len(IMAGE) // 192)


@pytest.fixture
async def simulator(free_port: int) -> AsyncIterator[DlmsSimulator]:
    async with DlmsSimulator(HOST, build_meters(1, seed=5), free_port) as sim:
        yield sim


async def upgrade(
    sim: DlmsSimulator, *, activate: bool = True, resend_rounds: int = 3, status_polls: int = 30
) -> FirmwareResult:
    meter = sim.meters[0]
    async with DlmsClient(HOST, sim.ports[0], hls(meter)) as client:
        return await upgrade_firmware(
            client,
            IMAGE,
            NEW,
            activate=activate,
            resend_rounds=resend_rounds,
            status_polls=status_polls,
            poll_interval=0,
        )


async def test_image_transfers_verifies_and_activates(simulator: DlmsSimulator) -> None:
    meter = simulator.meters[0]
    seen: list[tuple[int, int]] = []
    async with DlmsClient(HOST, simulator.ports[0], hls(meter)) as client:
        assert await client.get(CosemAttribute(1, ACTIVE_FIRMWARE, 2)) == Data.octet_string(INITIAL_FIRMWARE)
        result = await upgrade_firmware(
            client, IMAGE, NEW, progress=lambda done, total: seen.append((done, total)), poll_interval=0
        )
    assert result.activated
    assert result.active_identifier == NEW
    assert (result.size, result.block_size, result.blocks, result.resent_blocks) == (
        len(IMAGE),
        192,
        BLOCKS,
        0,
    )
    assert result.signature == hashlib.sha256(IMAGE).digest()
    assert seen == [(n, BLOCKS) for n in range(1, BLOCKS + 1)]
    assert meter.image.status is TransferStatus.ACTIVATION_SUCCESSFUL
    async with DlmsClient(HOST, simulator.ports[0], public()) as client:  # a new session sees it too
        assert await client.get(CosemAttribute(1, ACTIVE_FIRMWARE, 2)) == Data.octet_string(NEW)


async def test_lost_blocks_are_sent_again(simulator: DlmsSimulator) -> None:
    meter = simulator.meters[0]
    meter.image.lose_blocks = {0, 17, BLOCKS - 1}
    result = await upgrade(simulator)
    assert result.resent_blocks == 3
    assert meter.image.active_identifier == NEW


async def test_blocks_lost_for_good_stop_the_upgrade(simulator: DlmsSimulator) -> None:
    meter = simulator.meters[0]
    meter.image.lose_blocks = {4}
    with pytest.raises(FirmwareUpgradeError, match="still missing") as caught:
        await upgrade(simulator, resend_rounds=0)
    assert caught.value.stage == "transfer"
    assert meter.image.active_identifier == INITIAL_FIRMWARE


async def test_corrupted_block_fails_the_signature_check(simulator: DlmsSimulator) -> None:
    meter = simulator.meters[0]
    meter.image.corrupt_blocks = {9}
    with pytest.raises(FirmwareUpgradeError, match="signature") as caught:
        await upgrade(simulator)
    assert caught.value.stage == "check"
    assert (
        meter.image.status is TransferStatus.VERIFICATION_SUCCESSFUL
    )  # verified by the meter, not activated
    assert meter.image.active_identifier == INITIAL_FIRMWARE


async def test_transfer_without_activation(simulator: DlmsSimulator) -> None:
    meter = simulator.meters[0]
    result = await upgrade(simulator, activate=False)
    assert not result.activated
    assert result.active_identifier == INITIAL_FIRMWARE
    assert meter.image.status is TransferStatus.VERIFICATION_SUCCESSFUL


async def test_verification_polls_are_bounded(simulator: DlmsSimulator) -> None:
    with pytest.raises(FirmwareUpgradeError, match="still running") as caught:
        await upgrade(simulator, status_polls=1)
    assert caught.value.stage == "verify"


async def test_public_client_is_refused(simulator: DlmsSimulator) -> None:
    meter = simulator.meters[0]
    async with DlmsClient(HOST, simulator.ports[0], public()) as client:
        with pytest.raises(FirmwareUpgradeError) as caught:
            await upgrade_firmware(client, IMAGE, NEW, poll_interval=0)
    assert (caught.value.stage, caught.value.result) == ("initiate", "READ_WRITE_DENIED")
    assert meter.image.status is TransferStatus.NOT_INITIATED


async def test_disabled_transfer_is_refused(simulator: DlmsSimulator) -> None:
    meter = simulator.meters[0]
    async with DlmsClient(HOST, simulator.ports[0], hls(meter)) as client:
        await client.set(CosemAttribute(18, IMAGE_TRANSFER, 5), Data.boolean(False))
        with pytest.raises(FirmwareUpgradeError, match="disabled") as caught:
            await upgrade_firmware(client, IMAGE, NEW, poll_interval=0)
    assert caught.value.stage == "prepare"


async def test_bad_calls_give_typed_errors(simulator: DlmsSimulator) -> None:
    meter = simulator.meters[0]
    unopened = DlmsClient(HOST, simulator.ports[0], hls(meter))
    with pytest.raises(FirmwareUpgradeError, match="no association") as caught:
        await upgrade_firmware(unopened, IMAGE, NEW)
    assert caught.value.stage == "prepare"
    async with DlmsClient(HOST, simulator.ports[0], hls(meter)) as client:
        with pytest.raises(ValueError, match="image"):
            await upgrade_firmware(client, b"", NEW)
        with pytest.raises(ValueError, match="identifier"):
            await upgrade_firmware(client, IMAGE, b"")
        with pytest.raises(FirmwareUpgradeError) as too_long:
            await upgrade_firmware(client, IMAGE, bytes(100), poll_interval=0)  # identifier above 64 bytes
        assert (too_long.value.stage, too_long.value.result) == ("initiate", "OTHER_REASON")


async def test_small_pdu_meter(free_port: int) -> None:
    meter = SimulatedMeter("SIM00000009", b"OAM00009", MeterKeys.demo("SIM00000009"), 9, max_pdu=200)
    async with DlmsSimulator(HOST, [meter], free_port) as sim:
        result = await upgrade(sim)
        assert (result.block_size, result.blocks) == (152, -(-len(IMAGE) // 152))
        assert meter.image.active_identifier == NEW

        meter.image.block_size = 170  # 170 + framing + ciphering is more than 200 bytes
        with pytest.raises(FirmwareUpgradeError, match="PDU size") as caught:
            await upgrade(sim)
        assert caught.value.stage == "prepare"
