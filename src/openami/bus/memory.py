"""The in-process message bus: the default when OpenAMI runs as one process.

It mirrors the JetStream semantics of :mod:`openami.bus.nats` so that code tested against it behaves the same
on NATS:

* **Streams.** Every top-level subject token (``readings``, ``events``, ...) is a stream: an in-memory log of
  the messages published on it. A durable created later starts at the beginning of the log (JetStream's
  ``DeliverPolicy.ALL``), so messages published before a service subscribed are not lost.
* **Bounded retention.** The log keeps at most ``max_retained_messages`` messages and
  ``max_retained_bytes`` bytes per stream; the oldest go first. A message removed before every existing
  durable whose filter matches it had received it is counted in :attr:`MemoryBus.dropped` and logged.
* **Durable consumer groups.** Subscriptions with the same durable name on the same stream share one cursor:
  each message goes to the first free member. Different durables each get every message.
* **At-least-once.** A handler that returns acks; one that raises, times out (``ack_wait_s``) or calls
  ``nak`` gets the message again, up to ``max_deliver`` deliveries, after which it is dead.
* **De-duplication.** A ``msg_id`` seen on the same stream within ``duplicate_window_s`` is silently
  dropped, like JetStream's ``Nats-Msg-Id``; the id is delivered in that header by both backends.
* **Back-pressure.** Publishing waits while a durable with active subscribers has ``max_pending``
  unsettled messages, and fails with :class:`BusError` after ``publish_timeout_s`` rather than dropping.

Everything lives in this process: unsettled messages are lost when it exits, which is why deployments with
more than one process use NATS.

The subject helpers (:func:`check_subject`, :func:`check_pattern`, :func:`subject_matches`) are shared with
the NATS backend so both accept exactly the same subjects.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections import OrderedDict, deque
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

from openami.bus.base import BusError, BusStats, Handler, SubscribeOptions
from openami.bus.delivery import run_handler

logger = logging.getLogger(__name__)

MSG_ID_HEADER = "Nats-Msg-Id"
"""Header carrying ``msg_id`` on delivery (the JetStream name, used by both backends)."""

MAX_PAYLOAD = 1024 * 1024
"""Largest message body, the NATS server default, so nothing passes in memory that NATS would refuse."""

_STREAM_TOKEN = re.compile(r"[a-z][a-z0-9_-]*")
_DURABLE = re.compile(r"[A-Za-z0-9_-]{1,128}")
_FORBIDDEN_IN_TOKEN = re.compile(r"[\s*>]")
_DROP_WARNING_INTERVAL_S = 60.0
_MAX_TRACKED_MSG_IDS = 100_000


def _tokens(subject: str, *, wildcards: bool) -> tuple[str, ...]:
    kind = "subject pattern" if wildcards else "subject"
    tokens = tuple(subject.split("."))
    for i, part in enumerate(tokens):
        if wildcards and part == "*":
            continue
        if wildcards and part == ">":
            if i != len(tokens) - 1:
                raise BusError(f"invalid {kind} {subject!r}: '>' must be the last token")
            continue
        if not part or _FORBIDDEN_IN_TOKEN.search(part):
            raise BusError(f"invalid {kind} {subject!r}: empty token, whitespace or misplaced wildcard")
    if not _STREAM_TOKEN.fullmatch(tokens[0]):
        raise BusError(
            f"invalid {kind} {subject!r}: the first token names the stream and must be lower-case "
            "letters, digits, '_' or '-', starting with a letter (no wildcard)"
        )
    return tokens


def check_subject(subject: str) -> tuple[str, ...]:
    """Validate a publish subject (no wildcards, first token a stream name) and return its tokens."""
    return _tokens(subject, wildcards=False)


def check_pattern(pattern: str) -> tuple[str, ...]:
    """Validate a subscription pattern and return its tokens.

    ``*`` and ``>`` are whole tokens only and ``>`` comes last. The first token must be literal: it picks
    the stream, because a JetStream consumer belongs to exactly one stream.
    """
    return _tokens(pattern, wildcards=True)


def check_durable(name: str) -> str:
    """Durable names become JetStream consumer names, which forbid dots, wildcards and whitespace."""
    if not _DURABLE.fullmatch(name):
        raise BusError(f"invalid durable name {name!r}: use 1-128 letters, digits, '_' or '-'")
    return name


def _match(pattern: tuple[str, ...], subject: tuple[str, ...]) -> bool:
    for i, part in enumerate(pattern):
        if part == ">":
            return len(subject) > i
        if i >= len(subject) or (part != "*" and part != subject[i]):
            return False
    return len(pattern) == len(subject)


def subject_matches(pattern: str, subject: str) -> bool:
    """NATS matching: ``*`` is exactly one token, ``>`` one or more trailing tokens (``a.>`` misses ``a``)."""
    return _match(tuple(pattern.split(".")), tuple(subject.split(".")))


@dataclass(eq=False, slots=True)
class _Entry:
    seq: int
    subject: str
    tokens: tuple[str, ...]
    data: bytes
    headers: Mapping[str, str]


class _Stream:
    """The retained log of one top-level token, addressed by sequence number like a JetStream stream."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.consumers: dict[str, _Consumer] = {}
        self.msg_ids: OrderedDict[str, float] = OrderedDict()
        self.bytes = 0
        self._log: list[_Entry] = []
        self._head = 0  # entries before this index were evicted but not yet compacted away
        self._base_seq = 1  # sequence number of self._log[0]

    @property
    def first_seq(self) -> int:
        return self._base_seq + self._head

    @property
    def next_seq(self) -> int:
        return self._base_seq + len(self._log)

    def __len__(self) -> int:
        return len(self._log) - self._head

    def get(self, seq: int) -> _Entry:
        return self._log[seq - self._base_seq]

    def append(
        self, subject: str, tokens: tuple[str, ...], data: bytes, headers: Mapping[str, str]
    ) -> _Entry:
        entry = _Entry(self.next_seq, subject, tokens, data, headers)
        self._log.append(entry)
        self.bytes += len(data)
        return entry

    def evict_oldest(self) -> _Entry:
        entry = self._log[self._head]
        self._head += 1
        self.bytes -= len(entry.data)
        # Compact in bulk so eviction stays O(1) amortised while lookups stay O(1) list indexing.
        if self._head > 4096 and self._head * 2 > len(self._log):
            del self._log[: self._head]
            self._base_seq += self._head
            self._head = 0
        return entry

    def seen(self, msg_id: str, now: float, window_s: float) -> bool:
        """Record ``msg_id``; True if it was already recorded within the window (a duplicate)."""
        while self.msg_ids:
            oldest, at = next(iter(self.msg_ids.items()))
            if at > now - window_s and len(self.msg_ids) < _MAX_TRACKED_MSG_IDS:
                break
            del self.msg_ids[oldest]
        if msg_id in self.msg_ids:
            return True
        self.msg_ids[msg_id] = now
        return False


class _Consumer:
    """A durable on one stream: the cursor and redelivery queue that all its member subscriptions share."""

    def __init__(self, bus: MemoryBus, stream: _Stream, pattern: str, options: SubscribeOptions) -> None:
        self.bus = bus
        self.stream = stream
        self.durable = options.durable
        self.pattern = pattern
        self.tokens = check_pattern(pattern)
        self.max_deliver = options.max_deliver
        self.ack_wait_s = options.ack_wait_s
        self.members: list[_MemorySubscription] = []
        self.cursor = stream.first_seq
        self.backlog = sum(
            1
            for seq in range(stream.first_seq, stream.next_seq)
            if _match(self.tokens, stream.get(seq).tokens)
        )
        self.ready: deque[tuple[_Entry, int]] = deque()  # (entry, deliveries so far) due for redelivery
        self.in_flight = 0
        self.wakeup = asyncio.Event()
        self._timers: set[asyncio.TimerHandle] = set()

    @property
    def pending(self) -> int:
        """Messages not yet settled: undelivered, waiting for redelivery, or in a handler."""
        return self.backlog + len(self.ready) + len(self._timers) + self.in_flight

    def matches(self, entry: _Entry) -> bool:
        return _match(self.tokens, entry.tokens)

    def offer(self, entry: _Entry) -> None:
        """A new message was appended to the stream."""
        if self.matches(entry):
            self.backlog += 1
            self.wakeup.set()

    def lose(self, entry: _Entry) -> bool:
        """The stream evicted its oldest entry; return True if this durable had not received it yet."""
        if self.cursor > entry.seq:
            return False
        self.cursor = entry.seq + 1
        if self.matches(entry):
            self.backlog -= 1
            return True
        return False

    async def next(self) -> tuple[_Entry, int]:
        """Wait for the next message for a member: due redeliveries first, then the log."""
        while True:
            item = self._take()
            if item is not None:
                self.in_flight += 1
                return item
            self.wakeup.clear()
            await self.wakeup.wait()

    def _take(self) -> tuple[_Entry, int] | None:
        if self.ready:
            return self.ready.popleft()
        while self.backlog:
            entry = self.stream.get(self.cursor)
            self.cursor += 1
            if self.matches(entry):
                self.backlog -= 1
                return entry, 0
        return None

    def ack(self) -> None:
        self.in_flight -= 1
        self.bus._stats.acked += 1
        self.bus._progress()

    def retry(self, entry: _Entry, delivery: int, delay_s: float) -> None:
        """Redeliver after ``delay_s``, or count the message dead once it had ``max_deliver`` deliveries."""
        self.in_flight -= 1
        if delivery >= self.max_deliver:
            self.bus._stats.dead += 1
            logger.warning(
                "dead message on %s: durable %s gave up after %d deliveries",
                entry.subject,
                self.durable,
                delivery,
            )
        elif delay_s > 0:
            timer: asyncio.TimerHandle

            def requeue() -> None:
                self._timers.discard(timer)
                self._requeue(entry, delivery)

            timer = asyncio.get_running_loop().call_later(delay_s, requeue)
            self._timers.add(timer)
        else:
            self._requeue(entry, delivery)
        self.bus._progress()

    def _requeue(self, entry: _Entry, delivery: int) -> None:
        self.ready.append((entry, delivery))
        self.wakeup.set()

    def cancel_timers(self) -> None:
        for timer in self._timers:
            timer.cancel()
        self._timers.clear()


class _MemoryMessage:
    """A delivery; settling twice is a no-op so handlers may ack early and still return normally."""

    __slots__ = ("_consumer", "_delivery", "_entry", "settled")

    def __init__(self, consumer: _Consumer, entry: _Entry, delivery: int) -> None:
        self._consumer = consumer
        self._entry = entry
        self._delivery = delivery
        self.settled = False

    @property
    def subject(self) -> str:
        return self._entry.subject

    @property
    def data(self) -> bytes:
        return self._entry.data

    @property
    def headers(self) -> Mapping[str, str]:
        return self._entry.headers

    @property
    def delivery(self) -> int:
        return self._delivery

    async def ack(self) -> None:
        if not self.settled:
            self.settled = True
            self._consumer.ack()

    async def nak(self, delay_s: float = 0.0) -> None:
        if not self.settled:
            self.settled = True
            self._consumer.retry(self._entry, self._delivery, max(0.0, delay_s))


class _MemorySubscription:
    """One member of a consumer group: a worker running at most ``max_in_flight`` handler calls at once."""

    def __init__(self, bus: MemoryBus, consumer: _Consumer, handler: Handler, max_in_flight: int) -> None:
        self._bus = bus
        self._consumer = consumer
        self._handler = handler
        self._slots = asyncio.Semaphore(max_in_flight)
        self._tasks: set[asyncio.Task[None]] = set()
        self._stopped = False
        consumer.members.append(self)
        self._runner = asyncio.create_task(self._run(), name=f"bus-memory-{consumer.durable}")

    async def _run(self) -> None:
        while True:
            await self._slots.acquire()
            entry, delivered = await self._consumer.next()
            task = asyncio.create_task(self._deliver(entry, delivered + 1))
            self._tasks.add(task)
            task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        self._slots.release()

    async def _deliver(self, entry: _Entry, delivery: int) -> None:
        consumer = self._consumer
        msg = _MemoryMessage(consumer, entry, delivery)
        stats = self._bus._stats
        stats.delivered += 1
        if delivery > 1:
            stats.redelivered += 1
        try:
            await run_handler(
                self._handler,
                msg,
                durable=consumer.durable,
                ack_wait_s=consumer.ack_wait_s,
                retry_delay_s=self._bus.retry_delay_s,
            )
        except BaseException:
            # Cancelled from outside (event loop shutdown): hand the message back instead of leaking it.
            if not msg.settled:
                msg.settled = True
                consumer.retry(entry, delivery, 0.0)
            raise

    async def stop(self) -> None:
        """Stop taking messages; handlers already running finish and settle first."""
        if self._stopped:
            return
        self._stopped = True
        self._runner.cancel()
        await asyncio.wait([self._runner])
        self._consumer.members.remove(self)
        if self._tasks:
            await asyncio.wait(set(self._tasks))
        self._bus._forget(self)


class MemoryBus:
    """In-process :class:`~openami.bus.base.Bus` with JetStream-like semantics (see the module docstring)."""

    def __init__(
        self,
        *,
        max_retained_messages: int = 1_000_000,
        max_retained_bytes: int = 256 * 1024 * 1024,
        max_pending: int = 10_000,
        duplicate_window_s: float = 120.0,
        retry_delay_s: float = 1.0,
        publish_timeout_s: float = 30.0,
    ) -> None:
        """Create the bus.

        ``retry_delay_s`` spaces redeliveries after a handler failure: failures are usually a dependency
        being down (the database), and retrying at once would spend every delivery in milliseconds.
        ``max_pending`` bounds the unsettled messages per active durable before publishers wait.
        """
        if max_retained_messages < 1 or max_retained_bytes < MAX_PAYLOAD or max_pending < 1:
            raise ValueError("retention must hold at least one maximum-size message and max_pending >= 1")
        self.max_retained_messages = max_retained_messages
        self.max_retained_bytes = max_retained_bytes
        self.max_pending = max_pending
        self.duplicate_window_s = duplicate_window_s
        self.retry_delay_s = retry_delay_s
        self.publish_timeout_s = publish_timeout_s
        self._stats = BusStats()
        self._dropped = 0
        self._last_drop_warning = float("-inf")
        self._streams: dict[str, _Stream] = {}
        self._subscriptions: set[_MemorySubscription] = set()
        self._settled = asyncio.Event()
        self._started = False
        self._closing = False
        self._closed = False

    @property
    def dropped(self) -> int:
        """Messages evicted by retention before a durable that wanted them had received them."""
        return self._dropped

    async def start(self) -> None:
        self._started = True

    def _check_open(self) -> None:
        if self._closed:
            raise BusError("the bus is closed")
        if not self._started:
            raise BusError("the bus is not started: call start() first")

    def _stream(self, token: str) -> _Stream:
        stream = self._streams.get(token)
        if stream is None:
            stream = self._streams[token] = _Stream(token)
        return stream

    def _progress(self) -> None:
        """Wake publishers waiting for room and drain() callers: something was settled."""
        self._settled.set()

    async def _wait_progress(self, timeout_s: float) -> None:
        self._settled.clear()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout_s):  # not wait_for: it can lose a cancellation on 3.11
                await self._settled.wait()

    async def publish(
        self,
        subject: str,
        data: bytes,
        *,
        headers: Mapping[str, str] | None = None,
        msg_id: str | None = None,
    ) -> None:
        """Append to the subject's stream; waits (bounded) while an active durable is too far behind."""
        self._check_open()
        tokens = check_subject(subject)
        if len(data) > MAX_PAYLOAD:
            raise BusError(f"message on {subject} is {len(data)} bytes, above the {MAX_PAYLOAD} byte limit")
        stream = self._stream(tokens[0])
        await self._wait_for_room(stream, subject, tokens)
        self._check_open()
        loop = asyncio.get_running_loop()
        if msg_id is not None and stream.seen(msg_id, loop.time(), self.duplicate_window_s):
            return
        all_headers = dict(headers or {})
        if msg_id is not None:
            all_headers[MSG_ID_HEADER] = msg_id
        entry = stream.append(subject, tokens, bytes(data), MappingProxyType(all_headers))
        self._stats.published += 1
        for consumer in stream.consumers.values():
            consumer.offer(entry)
        self._enforce_retention(stream)

    async def _wait_for_room(self, stream: _Stream, subject: str, tokens: tuple[str, ...]) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.publish_timeout_s
        while True:
            full = [
                c
                for c in stream.consumers.values()
                if c.members and c.pending >= self.max_pending and _match(c.tokens, tokens)
            ]
            if not full:
                return
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise BusError(
                    f"publish to {subject} refused after {self.publish_timeout_s:.0f}s: durable "
                    f"{full[0].durable!r} has {full[0].pending} unsettled messages "
                    f"(max_pending {self.max_pending})"
                )
            await self._wait_progress(remaining)

    def _enforce_retention(self, stream: _Stream) -> None:
        lost = 0
        while len(stream) > self.max_retained_messages or stream.bytes > self.max_retained_bytes:
            entry = stream.evict_oldest()
            # Evaluate every consumer (no short-circuit): each must move its cursor past the entry.
            if any([consumer.lose(entry) for consumer in stream.consumers.values()]):
                lost += 1
        if lost:
            self._dropped += lost
            now = asyncio.get_running_loop().time()
            if now - self._last_drop_warning >= _DROP_WARNING_INTERVAL_S:
                self._last_drop_warning = now
                logger.warning(
                    "stream %s retention exceeded: %d messages dropped before a durable received them "
                    "(%d in total)",
                    stream.name,
                    lost,
                    self._dropped,
                )

    async def subscribe(
        self, subject: str, handler: Handler, options: SubscribeOptions
    ) -> _MemorySubscription:
        """Join (or create) the durable ``options.durable`` on the subject's stream.

        A new durable starts at the oldest retained message; an existing one resumes where it left off, and
        adopts the latest ``max_deliver`` / ``ack_wait_s``. Re-using a durable with another pattern is an
        error: a consumer group has one filter.
        """
        self._check_open()
        tokens = check_pattern(subject)
        check_options(options)
        stream = self._stream(tokens[0])
        consumer = stream.consumers.get(options.durable)
        if consumer is None:
            consumer = stream.consumers[options.durable] = _Consumer(self, stream, subject, options)
        elif consumer.pattern != subject:
            raise BusError(
                f"durable {options.durable!r} already consumes {consumer.pattern!r}; "
                f"it cannot also filter {subject!r}"
            )
        else:
            consumer.max_deliver = options.max_deliver
            consumer.ack_wait_s = options.ack_wait_s
        subscription = _MemorySubscription(self, consumer, handler, options.max_in_flight)
        self._subscriptions.add(subscription)
        return subscription

    def _forget(self, subscription: _MemorySubscription) -> None:
        self._subscriptions.discard(subscription)
        self._progress()

    def _outstanding(self) -> int:
        return sum(c.pending for s in self._streams.values() for c in s.consumers.values() if c.members)

    async def drain(self, timeout_s: float = 10.0) -> None:
        """Wait until the durables that have subscribers have settled everything (acked or dead).

        Messages only a stopped durable wants stay in its backlog and are not waited for. On timeout this
        logs what is still pending and returns.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while (outstanding := self._outstanding()) > 0:
            remaining = deadline - loop.time()
            if remaining <= 0:
                logger.warning(
                    "drain timed out after %.1fs with %d messages unsettled", timeout_s, outstanding
                )
                return
            await self._wait_progress(remaining)

    async def close(self) -> None:
        """Stop every subscription, letting running handlers finish; later publishes raise BusError.

        Publishing keeps working until the handlers are done, since handlers often publish.
        """
        if self._closing:
            return
        self._closing = True
        await asyncio.gather(*(s.stop() for s in list(self._subscriptions)))
        self._closed = True
        for stream in self._streams.values():
            for consumer in stream.consumers.values():
                consumer.cancel_timers()

    def stats(self) -> BusStats:
        """Counters since start; ``pending`` covers every durable, subscribed or not (its backlog)."""
        pending: dict[str, int] = {}
        for stream in self._streams.values():
            for consumer in stream.consumers.values():
                pending[consumer.durable] = pending.get(consumer.durable, 0) + consumer.pending
        s = self._stats
        return BusStats(s.published, s.delivered, s.acked, s.redelivered, s.dead, pending)


def check_options(options: SubscribeOptions) -> None:
    """Shared with the NATS backend: reject settings JetStream would refuse or that could never deliver."""
    check_durable(options.durable)
    if options.max_deliver < 1 or options.max_in_flight < 1 or options.ack_wait_s <= 0:
        raise BusError("SubscribeOptions need max_deliver >= 1, max_in_flight >= 1 and ack_wait_s > 0")
