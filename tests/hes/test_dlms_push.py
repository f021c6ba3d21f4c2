"""Meters -> TCP/UDP -> DlmsPushListener -> MemoryBus, over real loopback sockets."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator

import pytest
from sqlalchemy import Engine

from openami.bus.base import SubscribeOptions
from openami.bus.memory import MemoryBus
from openami.hes.dlms_push import DlmsPushListener, push_message_id
from openami.protocols.dlms.security import (
    GeneralCipheringHeader,
    SecurityControl,
    encrypt,
    encrypt_general_ciphering,
)
from openami.protocols.dlms.stream import parse_hex_text
from openami.protocols.dlms.wrapper import WrapperFrame, encode_wrapper
from openami.security.keyvault import KeyVault
from openami.store.schema import meter, tenant
from openami.transports.errors import PortInUseError
from tests.conftest import corpora_dir
from tests.hes.support import Collector, Rejections, until

TITLE = bytes.fromhex("4D4D4D0000BC614E")
EK = bytes.fromhex("000102030405060708090A0B0C0D0E0F")
AK = bytes.fromhex("D0D1D2D3D4D5D6D7D8D9DADBDCDDDEDF")
#: DataNotification, no date-time, body {1-0:1.8.0, 12345}: it names no meter, the key vault does.
PLAIN_PUSH = bytes.fromhex("0F00000001" + "00" + "0202" + "090601000108" + "00FF" + "0600003039")
#: The same value with the meter's id (0-0:96.1.0 = "METER001") in the push.
PUSH_WITH_ID = bytes.fromhex("0F00000002" + "00" + "0204" + "090600006001" + "00FF" + "0908") + (
    b"METER001" + bytes.fromhex("090601000108" + "00FF" + "0600003039")
)


@pytest.fixture
async def bus() -> AsyncIterator[tuple[MemoryBus, Collector]]:
    bus = MemoryBus()
    await bus.start()
    collector = Collector()
    await bus.subscribe("readings.>", collector.handle, SubscribeOptions(durable="test"))
    yield bus, collector
    await bus.close()


async def _send_tcp(port: int, data: bytes) -> None:
    _reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(data)
    await writer.drain()
    writer.close()
    await writer.wait_closed()


def _send_udp(port: int, data: bytes) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.sendto(data, ("127.0.0.1", port))


def _iskra_capture() -> bytes:
    path = corpora_dir() / "dlms" / "scs" / "iskra_am550__UNENCRYPTED_VALID_DATA.hex"
    return parse_hex_text(path.read_text())


async def test_plain_iskra_push_over_tcp(bus: tuple[MemoryBus, Collector], free_port: int) -> None:
    memory_bus, collector = bus
    rejections = Rejections()
    listener = DlmsPushListener(
        "127.0.0.1", free_port, memory_bus, None, default_tenant="demo", on_rejected=rejections
    )
    await listener.start()
    try:
        await _send_tcp(listener.port, _iskra_capture())
        await until(lambda: len(collector.batches) == 1)
    finally:
        await listener.stop()
    batch = collector.batches[0]
    assert (batch.tenant, batch.source) == ("demo", "dlms-push")
    assert {s.meter for s in batch.series} == {"ISK1030775213859"}
    channels = {s.channel: s for s in batch.series}
    assert "1-1:1.8.0" in channels and "1-1:1.7.0" in channels  # the AM550 pushes channel B=1
    assert channels["1-1:1.7.0"].unit == "W"
    assert all(s.kind == "register" and len(s.points) == 1 for s in batch.series)
    assert rejections.items == []
    assert (listener.stats.accepted, listener.stats.rejected) == (1, 0)


async def _make_vault(engine: Engine) -> KeyVault:
    with engine.begin() as conn:
        tenant_id = conn.execute(
            tenant.insert().values(slug="acme", name="Acme").returning(tenant.c.id)
        ).scalar_one()
        meter_id = conn.execute(
            meter.insert()
            .values(tenant_id=tenant_id, serial="LGZ-77", medium="electricity", protocol="dlms")
            .returning(meter.c.id)
        ).scalar_one()
    vault = KeyVault(engine, bytes(range(32)))
    vault.store(tenant_id, system_title=TITLE, meter_id=meter_id, kind="ek", secret=EK)
    vault.store(tenant_id, system_title=TITLE, meter_id=meter_id, kind="ak", secret=AK)
    return vault


def _ciphered(invocation_counter: int, *, authenticated: bool = True) -> bytes:
    apdu = encrypt(
        PLAIN_PUSH,
        security_control=SecurityControl(suite=0, authenticated=authenticated, encrypted=True),
        system_title=TITLE,
        invocation_counter=invocation_counter,
        encryption_key=EK,
        authentication_key=AK if authenticated else None,
        general=True,
    )
    return encode_wrapper(WrapperFrame(1, 1, apdu))


async def test_encrypted_push_over_udp_and_replay(
    bus: tuple[MemoryBus, Collector], engine: Engine, free_port: int
) -> None:
    memory_bus, collector = bus
    rejections = Rejections()
    vault = await _make_vault(engine)
    listener = DlmsPushListener(
        "127.0.0.1", free_port, memory_bus, vault, default_tenant=None, on_rejected=rejections
    )
    await listener.start()
    try:
        frame = _ciphered(7)
        _send_udp(listener.port, frame)
        await until(lambda: len(collector.batches) == 1)
        # The same push again: same invocation counter, refused as a replay.
        _send_udp(listener.port, frame)
        await until(lambda: len(rejections.items) == 1)
        # Without authentication although an AK is stored: refused (a downgrade).
        _send_udp(listener.port, _ciphered(8, authenticated=False))
        await until(lambda: len(rejections.items) == 2)
        # A later counter is accepted.
        _send_udp(listener.port, _ciphered(9))
        await until(lambda: len(collector.batches) == 2)
    finally:
        await listener.stop()
    batch = collector.batches[0]
    assert batch.tenant == "acme"  # learned from the system title
    [series] = batch.series
    assert (series.meter, series.channel, series.unit, series.points[0][1]) == (
        "LGZ-77",
        "1-0:1.8.0",
        "Wh",
        12345.0,
    )
    assert collector.msg_ids[0] == push_message_id(frame[8:])
    replay, downgrade = rejections.items
    assert (
        replay.reason.startswith("replay") and replay.tenant == "acme" and replay.topic.startswith("udp://")
    )
    assert "unauthenticated" in downgrade.reason
    assert listener.stats.replays == 1
    assert (listener.stats.accepted, listener.stats.rejected) == (2, 2)


async def test_general_ciphering_push_finds_its_keys_by_originator(
    bus: tuple[MemoryBus, Collector], engine: Engine, free_port: int
) -> None:
    memory_bus, collector = bus
    rejections = Rejections()
    listener = DlmsPushListener(
        "127.0.0.1",
        free_port,
        memory_bus,
        await _make_vault(engine),
        default_tenant=None,
        on_rejected=rejections,
    )

    def push(counter: int, originator: bytes = TITLE) -> bytes:
        apdu = encrypt_general_ciphering(
            PLAIN_PUSH,
            header=GeneralCipheringHeader(
                transaction_id=counter.to_bytes(4, "big"), originator_system_title=originator
            ),
            security_control=SecurityControl(suite=0, authenticated=True, encrypted=True),
            invocation_counter=counter,
            encryption_key=EK,
            authentication_key=AK,
        )
        return encode_wrapper(WrapperFrame(1, 1, apdu))

    await listener.start()
    try:
        await _send_tcp(listener.port, push(11))
        await until(lambda: len(collector.batches) == 1)
        await _send_tcp(listener.port, push(11))  # the same counter again: a replay
        await _send_tcp(listener.port, push(12, originator=bytes(8)))  # a title nobody registered
        await until(lambda: len(rejections.items) == 2)
    finally:
        await listener.stop()
    [series] = collector.batches[0].series
    assert (collector.batches[0].tenant, series.meter, series.points[0][1]) == ("acme", "LGZ-77", 12345.0)
    reasons = sorted(r.reason for r in rejections.items)
    assert reasons[0].startswith("replay") and "unknown system title 0000000000000000" in reasons[1]


async def test_unknown_system_title_rejected(
    bus: tuple[MemoryBus, Collector], engine: Engine, free_port: int
) -> None:
    memory_bus, _ = bus
    rejections = Rejections()
    listener = DlmsPushListener(
        "127.0.0.1",
        free_port,
        memory_bus,
        KeyVault(engine, bytes(32)),
        default_tenant="demo",
        on_rejected=rejections,
    )
    await listener.start()
    try:
        _send_udp(listener.port, _ciphered(1))
        await until(lambda: len(rejections.items) == 1)
    finally:
        await listener.stop()
    assert "unknown system title" in rejections.items[0].reason


async def test_garbage_over_tcp_rejected_then_next_connection_served(
    bus: tuple[MemoryBus, Collector], free_port: int
) -> None:
    memory_bus, collector = bus
    rejections = Rejections()
    listener = DlmsPushListener(
        "127.0.0.1", free_port, memory_bus, None, default_tenant="demo", on_rejected=rejections
    )
    await listener.start()
    try:
        await _send_tcp(listener.port, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        await until(lambda: len(rejections.items) == 1)
        # A wrapper stream with a broken header after a good frame: the good one passes, then the
        # connection is dropped (the wrapper cannot resynchronise).
        reader, writer = await asyncio.open_connection("127.0.0.1", listener.port)
        writer.write(encode_wrapper(WrapperFrame(1, 1, PUSH_WITH_ID)))
        await writer.drain()
        await until(lambda: len(collector.batches) == 1)
        writer.write(b"\x00\x02garbage!")
        await writer.drain()
        await until(lambda: len(rejections.items) == 2)
        assert await asyncio.wait_for(reader.read(), 5) == b""  # closed by the listener
        writer.close()
        await writer.wait_closed()
        await _send_tcp(listener.port, _iskra_capture())
        await until(lambda: len(collector.batches) == 2)
    finally:
        await listener.stop()
    assert "neither a DLMS wrapper nor an HDLC stream" in rejections.items[0].reason
    assert rejections.items[0].topic.startswith("tcp://127.0.0.1:")
    assert "wrapper version" in rejections.items[1].reason
    assert [b.series[0].meter for b in collector.batches] == ["METER001", "ISK1030775213859"]
    assert (listener.stats.accepted, listener.stats.rejected) == (2, 2)


async def test_port_in_use(bus: tuple[MemoryBus, Collector]) -> None:
    memory_bus, _ = bus
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        listener = DlmsPushListener(
            "127.0.0.1", taken.getsockname()[1], memory_bus, None, default_tenant="demo"
        )
        with pytest.raises(PortInUseError, match="OPENAMI_DLMS_PUSH_PORT"):
            await listener.start()
