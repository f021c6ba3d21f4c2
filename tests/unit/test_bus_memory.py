"""What only the in-process bus has: subject matching, retention, back-pressure and the de-dup window.

Also the backend selection (``make_bus``) and the NATS bus's behaviour before it has a server, which need
no running service.
"""

from __future__ import annotations

import asyncio
import sys
import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from openami.bus.base import BusError, BusUnavailable, Message, SubscribeOptions
from openami.bus.factory import make_bus
from openami.bus.memory import MAX_PAYLOAD, MemoryBus, check_pattern, check_subject, subject_matches
from openami.bus.nats import NatsBus

# --- subject matching ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pattern", "subject", "expected"),
    [
        ("readings.acme", "readings.acme", True),
        ("readings.acme", "readings.other", False),
        ("readings.*", "readings.acme", True),
        ("readings.*", "readings", False),
        ("readings.*", "readings.acme.m1", False),
        ("readings.>", "readings.acme", True),
        ("readings.>", "readings.acme.m1.ch", True),
        ("readings.>", "readings", False),
        ("readings.*.m1", "readings.acme.m1", True),
        ("readings.*.m1", "readings.acme.m2", False),
        ("readings.*.>", "readings.acme", False),
        ("readings.*.>", "readings.acme.m1", True),
        ("readings.acme", "readings.acme.m1", False),
        ("readings.acme.m1", "readings.acme", False),
        ("events.>", "readings.acme", False),
    ],
)
def test_subject_matches(pattern: str, subject: str, expected: bool) -> None:
    assert subject_matches(pattern, subject) is expected


_token = st.text(alphabet="abcxyz019_-", min_size=1, max_size=4)
_subject = st.lists(_token, min_size=1, max_size=6).map(lambda tokens: ["readings", *tokens])


@given(_subject)
def test_a_subject_matches_itself(tokens: list[str]) -> None:
    subject = ".".join(tokens)
    check_subject(subject)
    assert subject_matches(subject, subject)


@given(_subject, st.data())
def test_star_replaces_exactly_one_token(tokens: list[str], data: st.DataObject) -> None:
    i = data.draw(st.integers(min_value=1, max_value=len(tokens) - 1))
    pattern = ".".join([*tokens[:i], "*", *tokens[i + 1 :]])
    check_pattern(pattern)
    assert subject_matches(pattern, ".".join(tokens))
    assert not subject_matches(pattern, ".".join([*tokens, "extra"]))
    assert not subject_matches(pattern, ".".join(tokens[:i]))


@given(_subject, st.data())
def test_gt_matches_one_or_more_trailing_tokens(tokens: list[str], data: st.DataObject) -> None:
    i = data.draw(st.integers(min_value=1, max_value=len(tokens)))
    pattern = ".".join([*tokens[:i], ">"])
    check_pattern(pattern)
    assert subject_matches(pattern, ".".join(tokens)) is (len(tokens) > i)
    assert subject_matches(pattern, ".".join([*tokens, "more"]))


@given(_subject, _subject)
def test_literal_patterns_match_only_equal_subjects(a: list[str], b: list[str]) -> None:
    assert subject_matches(".".join(a), ".".join(b)) is (a == b)


# --- memory bus specifics -----------------------------------------------------------------------------


async def _started(bus: MemoryBus) -> MemoryBus:
    await bus.start()
    return bus


class _Collect:
    def __init__(self) -> None:
        self.data: list[bytes] = []

    async def __call__(self, msg: Message) -> None:
        self.data.append(msg.data)


async def test_retention_keeps_newest_for_a_new_durable() -> None:
    bus = await _started(MemoryBus(max_retained_messages=5))
    for i in range(10):
        await bus.publish("readings.acme", str(i).encode())
    got = _Collect()
    await bus.subscribe("readings.>", got, SubscribeOptions(durable="late"))
    await bus.drain(2)
    assert got.data == [b"5", b"6", b"7", b"8", b"9"]
    assert bus.dropped == 0  # nobody existed to miss them
    await bus.close()


async def test_retention_counts_messages_a_stopped_durable_missed() -> None:
    bus = await _started(MemoryBus(max_retained_messages=5))
    got = _Collect()
    sub = await bus.subscribe("readings.acme", got, SubscribeOptions(durable="ingest"))
    await sub.stop()
    for i in range(10):
        await bus.publish("readings.acme", str(i).encode())
        await bus.publish("readings.other", b"not for ingest")
    assert bus.stats().pending["ingest"] == 2  # the rest fell out of the 5-message log
    assert bus.dropped == 8
    await bus.subscribe("readings.acme", got, SubscribeOptions(durable="ingest"))
    await bus.drain(2)
    assert got.data == [b"8", b"9"]
    await bus.close()


async def test_retention_by_bytes() -> None:
    bus = await _started(MemoryBus(max_retained_bytes=MAX_PAYLOAD))
    big = b"x" * (MAX_PAYLOAD // 2)
    for _ in range(3):
        await bus.publish("readings.acme", big)
    got = _Collect()
    await bus.subscribe("readings.>", got, SubscribeOptions(durable="bytes"))
    await bus.drain(2)
    assert len(got.data) == 2
    await bus.close()


async def test_oversized_message_is_refused() -> None:
    bus = await _started(MemoryBus())
    with pytest.raises(BusError, match="limit"):
        await bus.publish("readings.acme", b"x" * (MAX_PAYLOAD + 1))
    await bus.close()


async def test_publish_waits_for_a_full_durable_then_proceeds() -> None:
    bus = await _started(MemoryBus(max_pending=2, publish_timeout_s=5))
    release = asyncio.Event()
    got = _Collect()

    async def blocked(msg: Message) -> None:
        await release.wait()
        await got(msg)

    await bus.subscribe("jobs.>", blocked, SubscribeOptions(durable="busy", max_in_flight=1))
    await bus.publish("jobs.a", b"1")
    await bus.publish("jobs.a", b"2")
    third = asyncio.create_task(bus.publish("jobs.a", b"3"))
    await asyncio.sleep(0.1)
    assert not third.done()  # back-pressure: waiting, not dropping
    release.set()
    await asyncio.wait_for(third, 2)
    await bus.drain(2)
    assert got.data == [b"1", b"2", b"3"]
    await bus.close()


async def test_publish_to_a_stuck_durable_fails_after_timeout() -> None:
    bus = await _started(MemoryBus(max_pending=1, publish_timeout_s=0.1))
    release = asyncio.Event()

    async def stuck(_: Message) -> None:
        await release.wait()

    await bus.subscribe("jobs.>", stuck, SubscribeOptions(durable="stuck"))
    await bus.publish("jobs.a", b"1")
    started = time.monotonic()
    with pytest.raises(BusError, match="stuck"):
        await bus.publish("jobs.a", b"2")
    assert time.monotonic() - started < 1
    await bus.publish("events.a", b"other streams are not held up")
    release.set()
    await bus.close()


async def test_stopped_durable_does_not_hold_publishers_back() -> None:
    bus = await _started(MemoryBus(max_pending=1, publish_timeout_s=0.1))
    sub = await bus.subscribe("jobs.>", _Collect(), SubscribeOptions(durable="gone"))
    await sub.stop()
    for i in range(5):
        await bus.publish("jobs.a", str(i).encode())
    assert bus.stats().pending["gone"] == 5
    await bus.drain(0.5)  # returns at once: nobody is subscribed to wait for
    await bus.close()


async def test_duplicate_window_expires() -> None:
    bus = await _started(MemoryBus(duplicate_window_s=0.05))
    got = _Collect()
    await bus.subscribe("readings.>", got, SubscribeOptions(durable="d"))
    await bus.publish("readings.acme", b"a", msg_id="same")
    await bus.publish("readings.acme", b"b", msg_id="same")
    await asyncio.sleep(0.1)
    await bus.publish("readings.acme", b"c", msg_id="same")
    await bus.drain(2)
    assert got.data == [b"a", b"c"]
    await bus.close()


async def test_msg_ids_are_per_stream() -> None:
    bus = await _started(MemoryBus())
    await bus.publish("readings.acme", b"a", msg_id="x")
    await bus.publish("events.acme", b"b", msg_id="x")
    assert bus.stats().published == 2
    await bus.close()


async def test_cancelled_handler_hands_message_back() -> None:
    bus = await _started(MemoryBus(retry_delay_s=0))
    entered = asyncio.Event()
    deliveries: list[int] = []
    running: list[asyncio.Task[object]] = []

    async def handler(msg: Message) -> None:
        deliveries.append(msg.delivery)
        if msg.delivery == 1:
            task = asyncio.current_task()
            assert task is not None
            running.append(task)
            entered.set()
            await asyncio.sleep(10)

    await bus.subscribe("jobs.>", handler, SubscribeOptions(durable="c"))
    await bus.publish("jobs.a", b"1")
    await asyncio.wait_for(entered.wait(), 2)
    running[0].cancel()  # as event-loop shutdown would
    await bus.drain(2)
    assert deliveries == [1, 2]
    await bus.close()


async def test_unstarted_and_closed_bus_refuse_work() -> None:
    bus = MemoryBus()
    with pytest.raises(BusError, match="start"):
        await bus.publish("readings.acme", b"x")
    await bus.start()
    await bus.close()
    await bus.close()
    with pytest.raises(BusError, match="closed"):
        await bus.subscribe("readings.>", _Collect(), SubscribeOptions(durable="d"))


# --- backend selection and the NATS bus without a server ----------------------------------------------


def test_make_bus_memory() -> None:
    assert isinstance(make_bus("memory"), MemoryBus)


def test_make_bus_nats_does_not_connect() -> None:
    bus = make_bus("nats://user:secret@127.0.0.1:4222")
    assert isinstance(bus, NatsBus)


def test_make_bus_unknown_scheme() -> None:
    with pytest.raises(BusError, match="unknown bus URL"):
        make_bus("redis://localhost")


def test_make_bus_without_nats_py(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "openami.bus.nats", None)
    with pytest.raises(BusError, match=r"openami\[nats\]"):
        make_bus("nats://127.0.0.1:4222")


async def test_nats_unreachable_raises_bus_unavailable(free_port: int) -> None:
    bus = NatsBus(f"nats://user:secret@127.0.0.1:{free_port}", connect_timeout_s=1)
    started = time.monotonic()
    with pytest.raises(BusUnavailable, match=f"127.0.0.1:{free_port}") as caught:
        await bus.start()
    assert time.monotonic() - started < 3
    assert "secret" not in str(caught.value)


async def test_nats_unstarted_refuses_publish() -> None:
    bus = NatsBus("nats://127.0.0.1:4222")
    with pytest.raises(BusError, match="start"):
        await bus.publish("readings.acme", b"x")


def test_nats_prefix_validation() -> None:
    with pytest.raises(BusError):
        NatsBus("nats://127.0.0.1:4222", stream_prefix="bad.prefix")
    assert NatsBus("nats://127.0.0.1:4222", subject_prefix="t1").subject_prefix == "t1."
