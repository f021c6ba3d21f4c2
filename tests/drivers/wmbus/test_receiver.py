"""The receiver reader against the simulated receiver over real TCP and a real pty: telegrams, bad and
over-long lines, a dropped line and the reconnect, an unreachable receiver."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator

import pytest

from openami.drivers.wmbus import (
    ReceivedLine,
    WmbusReceiver,
    WmbusReceiverUnreachable,
    WmbusReceiverUrlError,
    parse_receiver_url,
)
from openami.protocols.wmbus import DecryptionError, decode_telegram, parse_link
from openami.protocols.wmbus.ingest import MAX_LINE
from openami.simulator.wmbus_meter import SimulatedReceiver, SimulatedWmbusMeter, format_line

pytestmark = pytest.mark.timeout(30)

KEY = bytes(range(16))
FAST = {"reconnect_min_s": 0.02, "reconnect_max_s": 0.1, "connect_timeout_s": 2.0}
METER = SimulatedWmbusMeter("12345678", "water", key=KEY)


def _good() -> str:
    return format_line(METER.telegram())


class Collector:
    """Iterates a reader in a task; ``next()`` waits (bounded) for the next line."""

    def __init__(self, reader: WmbusReceiver) -> None:
        self.reader = reader
        self.queue: asyncio.Queue[ReceivedLine] = asyncio.Queue()
        self.failure: BaseException | None = None
        self.task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        try:
            async with contextlib.aclosing(self.reader.lines()) as lines:
                async for line in lines:
                    await self.queue.put(line)
        except Exception as exc:
            self.failure = exc

    async def next(self, timeout_s: float = 5.0) -> ReceivedLine:
        async with asyncio.timeout(timeout_s):
            return await self.queue.get()

    async def close(self) -> None:
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)


@pytest.fixture
async def receiver() -> AsyncIterator[SimulatedReceiver]:
    async with SimulatedReceiver() as rx:
        yield rx


async def _collector(url: str, **options: float) -> Collector:
    reader = WmbusReceiver(url, **{**FAST, **options})  # type: ignore[arg-type]
    collector = Collector(reader)
    await reader.wait_connected(5)
    return collector


async def test_tcp_lines_bad_and_overlong(receiver: SimulatedReceiver) -> None:
    port = await receiver.serve_tcp()
    collector = await _collector(f"wmbus+tcp://127.0.0.1:{port}")
    try:
        good = _good()
        receiver.write_line(good)
        receiver.write_line("# a comment the stick prints")
        receiver.write_line("")
        receiver.write_line("zz not a telegram")
        receiver.write_raw(b"A" * (3 * MAX_LINE))  # no newline yet: dropped once it passes the limit
        receiver.write_raw(b"B" * 100 + b"\n")
        receiver.write_line(good)
        first, bad, overlong, last = [await collector.next() for _ in range(4)]
        assert first.telegram is not None and first.error is None and first.text == good
        assert decode_telegram(first.telegram.frame, key=KEY).address.id == "12345678"
        assert bad.telegram is None and bad.error is not None and "not a hex telegram" in bad.error
        assert overlong.error == f"line longer than {MAX_LINE} bytes, dropped" and overlong.text == "A" * 40
        assert last.text == good
        stats = collector.reader.stats
        assert (stats.lines, stats.telegrams, stats.bad_lines, stats.overlong_lines) == (4, 2, 2, 1)
        assert collector.queue.empty()
    finally:
        await collector.close()


async def test_dropped_connection_reconnects_and_forgets_the_half_line(receiver: SimulatedReceiver) -> None:
    port = await receiver.serve_tcp()
    collector = await _collector(f"wmbus+tcp://127.0.0.1:{port}")
    reader = collector.reader
    try:
        receiver.write_line(_good())
        assert (await collector.next()).telegram is not None
        receiver.write_raw(_good()[:30].encode())  # half a line, then the line drops
        await asyncio.sleep(0.05)
        assert receiver.drop_connections() == 1
        while reader.stats.connects < 2 or receiver.clients < 1:
            await asyncio.sleep(0.01)
        good = _good()
        receiver.write_line(good)
        line = await collector.next()
        assert line.text == good and line.telegram is not None  # not glued to the half line
        assert reader.stats.disconnects == 1 and reader.connected
    finally:
        await collector.close()
    assert not reader.connected


async def test_receiver_down_at_first_then_up() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    reader = WmbusReceiver(f"wmbus+tcp://127.0.0.1:{port}", **FAST)  # type: ignore[arg-type]
    collector = Collector(reader)
    try:
        while reader.stats.failed_opens < 2:
            await asyncio.sleep(0.01)
        async with SimulatedReceiver() as rx:
            await rx.serve_tcp(port=port)
            await reader.wait_connected(5)
            rx.write_line(_good())
            assert (await collector.next()).telegram is not None
            assert reader.stats.connects == 1 and reader.stats.failed_opens >= 2
    finally:
        await collector.close()


async def _drain(reader: WmbusReceiver) -> None:
    async with contextlib.aclosing(reader.lines()) as lines:
        async for _ in lines:
            pass


async def test_max_failures_gives_up_with_a_typed_error() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    reader = WmbusReceiver(f"wmbus+tcp://127.0.0.1:{port}", max_failures=3, **FAST)  # type: ignore[arg-type]
    with pytest.raises(WmbusReceiverUnreachable, match="3 failed attempt"):
        await _drain(reader)
    assert reader.stats.failed_opens == 3


async def test_idle_timeout_reconnects(receiver: SimulatedReceiver) -> None:
    port = await receiver.serve_tcp()
    collector = await _collector(f"wmbus+tcp://127.0.0.1:{port}", idle_timeout_s=0.1)
    try:
        while collector.reader.stats.connects < 2:
            await asyncio.sleep(0.01)
        assert "nothing received" in collector.reader.stats.last_error
    finally:
        await collector.close()


async def test_pty_lines_bad_and_overlong(receiver: SimulatedReceiver) -> None:
    path = receiver.open_pty()
    collector = await _collector(f"wmbus+serial://{path}?baud=115200")
    try:
        good = _good()
        receiver.write_line(good)
        receiver.write_line("T1;1;1;no hex here")
        receiver.write_raw(b"C" * (MAX_LINE + 10) + b"\r\n")
        receiver.write_line(good)
        first, bad, overlong, last = [await collector.next() for _ in range(4)]
        assert first.text == good and first.telegram is not None
        assert bad.error is not None and "rtl-wmbus" in bad.error
        assert overlong.error is not None and overlong.error.startswith("line longer")
        assert last.telegram is not None
    finally:
        await collector.close()


async def test_simulated_meters_over_tcp_decode_with_their_keys_only() -> None:
    meters = [
        SimulatedWmbusMeter("11111111", "water", key=KEY, interval_s=0.02, jitter_s=0.01),
        SimulatedWmbusMeter(
            "22222222", "heat", key=KEY[::-1], security_mode=7, interval_s=0.02, jitter_s=0.01
        ),
    ]
    keys = {"11111111": KEY, "22222222": KEY[::-1]}
    async with SimulatedReceiver(meters, line_format="rtl-wmbus") as rx:
        port = await rx.serve_tcp()
        reader = WmbusReceiver(f"wmbus+tcp://127.0.0.1:{port}", **FAST)  # type: ignore[arg-type]
        seen: dict[str, int] = {}
        async with asyncio.timeout(10), contextlib.aclosing(reader.telegrams()) as telegrams:
            async for received in telegrams:
                ident = parse_link(received.frame).address.id
                telegram = decode_telegram(received.frame, key=keys[ident])
                assert telegram.decrypted and telegram.records
                wrong = keys["22222222" if ident == "11111111" else "11111111"]
                with pytest.raises(DecryptionError):
                    decode_telegram(received.frame, key=wrong)
                seen[ident] = seen.get(ident, 0) + 1
                if len(seen) == 2 and min(seen.values()) >= 3:
                    break
    assert reader.stats.bad_lines == 0


@pytest.mark.parametrize(
    ("url", "display"),
    [
        ("wmbus+tcp://10.0.0.5:2001", "wmbus+tcp://10.0.0.5:2001"),
        ("wmbus+tcp://[::1]:4001/", "wmbus+tcp://[::1]:4001"),
        ("wmbus+serial:///dev/ttyUSB0", "wmbus+serial:///dev/ttyUSB0?baud=9600"),
        ("wmbus+serial:///dev/ttyACM0?baud=115200", "wmbus+serial:///dev/ttyACM0?baud=115200"),
    ],
)
def test_urls(url: str, display: str) -> None:
    assert parse_receiver_url(url).display == display


@pytest.mark.parametrize(
    "url",
    [
        "tcp://10.0.0.5:2001",
        "wmbus+tcp://10.0.0.5",
        "wmbus+tcp://10.0.0.5:99999",
        "wmbus+tcp://user:secret@10.0.0.5:2001",
        "wmbus+tcp://10.0.0.5:2001/x",
        "wmbus+serial://host/dev/ttyUSB0",
        "wmbus+serial:///dev/ttyUSB0?baud=12345",
        "wmbus+serial:///dev/ttyUSB0?parity=E",
    ],
)
def test_bad_urls(url: str) -> None:
    with pytest.raises(WmbusReceiverUrlError):
        parse_receiver_url(url)
