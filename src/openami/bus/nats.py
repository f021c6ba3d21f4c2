"""The NATS JetStream bus, for running OpenAMI as several processes (and surviving their restarts).

Layout on the server:

* One stream per top-level subject token, named ``<stream_prefix>_<TOKEN>`` (``OPENAMI_READINGS`` holds
  ``readings.>``). The streams in :data:`STREAM_TOKENS` are created (or updated) by :meth:`NatsBus.start`;
  a publish or subscribe on another token creates its stream on first use. Streams use file storage,
  limits retention (``max_age_s``) and a 2-minute duplicate window, so a ``msg_id`` travels as
  ``Nats-Msg-Id`` and a retried publish is stored once.
* The streams of :data:`WORK_QUEUE_TOKENS` (``jobs``) are work queues instead: a message is removed
  once a consumer acknowledges it, and the server refuses a second consumer whose filter overlaps
  another's (each lane's pollers share one durable: ``openami.hes.job_worker``), so a dispatch is
  taken by one group only and never replayed to a late durable. A ``jobs`` stream left from an older
  version with limits retention is deleted and created again, because NATS cannot change a stream's
  retention in place; that loses only dispatches, which the scheduler sends again once they are
  stale (``hes_dispatch_stale_s``: the job rows, not the bus, are the truth).
* One durable pull consumer per (stream, durable name) with explicit ack, ``DeliverPolicy.ALL`` (a durable
  created later still receives what was published before) and ``max_deliver``. Every subscription runs a
  fetch loop that pulls at most as many messages as it has free ``max_in_flight`` slots.

``subject_prefix`` (for example ``"t1a2b."``) is prepended to every subject on the wire and stripped on
delivery, so :attr:`Message.subject` is what the publisher used. Together with ``stream_prefix`` it lets
several installations, or test runs, share one server without their streams' subjects overlapping (NATS
refuses overlapping streams).

Handlers run under a timeout of ``ack_wait_s``; the consumer's server-side ack wait is a little longer so
the server redelivers only when this process died, not while a handler is still being cancelled. A failed
delivery is nak'ed with ``retry_delay_s``; on the ``max_deliver``-th failure it is terminated and counted
dead.
"""

from __future__ import annotations

import asyncio
import logging
import math
import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from types import MappingProxyType
from urllib.parse import urlsplit, urlunsplit

import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy, RetentionPolicy, StorageType, StreamConfig

from openami.bus.base import BusError, BusStats, BusUnavailable, Handler, SubscribeOptions
from openami.bus.delivery import run_handler
from openami.bus.memory import MSG_ID_HEADER, check_options, check_pattern, check_subject

logger = logging.getLogger(__name__)

STREAM_TOKENS = ("readings", "events", "commands", "jobs")
"""Top-level subject tokens whose streams are created at start (others are created on first use)."""
WORK_QUEUE_TOKENS = frozenset({"jobs"})
"""Tokens whose streams have work-queue retention: what one consumer acknowledged is gone."""

DUPLICATE_WINDOW_S = 120.0
ACK_WAIT_MARGIN_S = 2.0
"""Added to ``ack_wait_s`` on the server, so our own handler timeout (and nak) always comes first."""

_STREAM_PREFIX = re.compile(r"[A-Za-z0-9_-]+")
_STREAM_CONFIG_CONFLICT = 10058  # JetStream: stream name already in use with a different configuration
_FETCH_ERROR_BACKOFF_S = 1.0
_STATS_INTERVAL_S = 5.0


def _redact(url: str) -> str:
    """The URL without credentials, fit for error messages and logs."""
    parts = urlsplit(url)
    if parts.password is None and parts.username is None:
        return url
    netloc = parts.hostname or ""
    if parts.port:
        netloc += f":{parts.port}"
    return urlunsplit(parts._replace(netloc=netloc))


@contextmanager
def _errors(action: str) -> Iterator[None]:
    """Translate nats-py failures into the bus's own exceptions, naming what was being done."""
    try:
        yield
    except (
        nats.errors.ConnectionClosedError,
        nats.errors.ConnectionReconnectingError,
        nats.errors.NoRespondersError,
        nats.errors.NoServersError,
        nats.errors.StaleConnectionError,
        nats.errors.OutboundBufferLimitError,
        TimeoutError,
        OSError,
    ) as exc:
        raise BusUnavailable(f"{action}: NATS unavailable ({type(exc).__name__}: {exc})") from exc
    except nats.errors.Error as exc:
        raise BusError(f"{action}: {exc}") from exc


async def _hand_back(raw: Msg) -> None:
    """Return a fetched message unprocessed so another member gets it now rather than after ack_wait."""
    try:
        await raw.nak()
    except (nats.errors.Error, OSError) as exc:
        logger.warning("nak on stop failed (the server will redeliver after ack_wait): %s", exc)


class _NatsMessage:
    """A delivery; settling twice is a no-op so handlers may ack early and still return normally."""

    __slots__ = ("_delivery", "_headers", "_raw", "_sub", "_subject", "settled")

    def __init__(self, sub: _NatsSubscription, raw: Msg, subject: str, delivery: int) -> None:
        self._sub = sub
        self._raw = raw
        self._subject = subject
        self._delivery = delivery
        self._headers: Mapping[str, str] = MappingProxyType(dict(raw.headers or {}))
        self.settled = False

    @property
    def subject(self) -> str:
        return self._subject

    @property
    def data(self) -> bytes:
        return self._raw.data

    @property
    def headers(self) -> Mapping[str, str]:
        return self._headers

    @property
    def delivery(self) -> int:
        return self._delivery

    async def ack(self) -> None:
        if self.settled:
            return
        self.settled = True
        with _errors(f"ack on {self._subject}"):
            await self._raw.ack()
        self._sub.stats.acked += 1

    async def nak(self, delay_s: float = 0.0) -> None:
        """Ask for redelivery, or terminate (dead) once this was the ``max_deliver``-th delivery."""
        if self.settled:
            return
        self.settled = True
        if self._delivery >= self._sub.max_deliver:
            with _errors(f"term on {self._subject}"):
                await self._raw.term()
            self._sub.stats.dead += 1
            logger.warning(
                "dead message on %s: durable %s gave up after %d deliveries",
                self._subject,
                self._sub.durable,
                self._delivery,
            )
            return
        with _errors(f"nak on {self._subject}"):
            await self._raw.nak(delay=delay_s if delay_s > 0 else None)


class _NatsSubscription:
    """One member of a consumer group: a fetch loop feeding at most ``max_in_flight`` handler tasks."""

    def __init__(
        self,
        bus: NatsBus,
        psub: JetStreamContext.PullSubscription,
        stream: str,
        pattern: str,
        handler: Handler,
        options: SubscribeOptions,
    ) -> None:
        self.bus = bus
        self.stats = bus._counters
        self.stream = stream
        self.pattern = pattern
        self.durable = options.durable
        self.max_deliver = options.max_deliver
        self._psub = psub
        self._handler = handler
        self._options = options
        self._tasks: set[asyncio.Task[None]] = set()
        self._stopping = False
        self._runner = asyncio.create_task(self._run(), name=f"bus-nats-{stream}-{options.durable}")

    async def _run(self) -> None:
        limit = self._options.max_in_flight
        while not self._stopping:
            if len(self._tasks) >= limit:
                await asyncio.wait(set(self._tasks), return_when=asyncio.FIRST_COMPLETED)
                continue
            try:
                raws = await self._psub.fetch(limit - len(self._tasks), timeout=self.bus.fetch_timeout_s)
            except TimeoutError:
                continue  # nothing to do right now (nats.errors.TimeoutError is a TimeoutError too)
            except (nats.errors.Error, OSError) as exc:
                if self._stopping:
                    break
                logger.warning("fetch for durable %s on %s failed: %s", self.durable, self.stream, exc)
                await asyncio.sleep(_FETCH_ERROR_BACKOFF_S)
                continue
            for raw in raws:
                if self._stopping:
                    await _hand_back(raw)
                    continue
                task = asyncio.create_task(self._deliver(raw))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)

    async def _deliver(self, raw: Msg) -> None:
        delivery = raw.metadata.num_delivered
        msg = _NatsMessage(self, raw, self.bus._unwire(raw.subject), delivery)
        self.stats.delivered += 1
        if delivery > 1:
            self.stats.redelivered += 1
        try:
            await run_handler(
                self._handler,
                msg,
                durable=self.durable,
                ack_wait_s=self._options.ack_wait_s,
                retry_delay_s=self.bus.retry_delay_s,
            )
        except BusError as exc:
            logger.warning(
                "could not settle %s (the server will redeliver after ack_wait): %s", msg.subject, exc
            )

    async def stop(self) -> None:
        """Stop fetching (within ``fetch_timeout_s``); handlers already running finish and settle first."""
        if self._stopping:
            return
        self._stopping = True
        await asyncio.wait([self._runner])
        if self._tasks:
            await asyncio.wait(set(self._tasks))
        try:
            await self._psub.unsubscribe()
        except (nats.errors.Error, OSError) as exc:
            logger.debug("unsubscribe of durable %s: %s", self.durable, exc)
        self.bus._forget(self)


class NatsBus:
    """:class:`~openami.bus.base.Bus` on NATS JetStream (see the module docstring for the layout)."""

    def __init__(
        self,
        url: str,
        stream_prefix: str = "OPENAMI",
        *,
        subject_prefix: str = "",
        max_age_s: float = 7 * 86400,
        retry_delay_s: float = 1.0,
        fetch_timeout_s: float = 1.0,
        connect_timeout_s: float = 3.0,
    ) -> None:
        """Configure the bus; nothing connects until :meth:`start`.

        ``url`` may list several servers separated by commas. ``max_age_s`` bounds how long streams keep
        messages (the readings store, not the bus, is the system of record). ``fetch_timeout_s`` is how long
        an idle fetch waits, and so how long stopping a subscription can take.
        """
        if not _STREAM_PREFIX.fullmatch(stream_prefix):
            raise BusError(f"invalid stream prefix {stream_prefix!r}: use letters, digits, '_' or '-'")
        if subject_prefix and not subject_prefix.endswith("."):
            subject_prefix += "."
        if subject_prefix:
            check_subject(subject_prefix[:-1])
        self.url = url
        self.stream_prefix = stream_prefix
        self.subject_prefix = subject_prefix
        self.max_age_s = max_age_s
        self.retry_delay_s = retry_delay_s
        self.fetch_timeout_s = fetch_timeout_s
        self.connect_timeout_s = connect_timeout_s
        self._counters = BusStats()
        self._servers = [u.strip() for u in url.split(",") if u.strip()]
        self._safe_url = ",".join(_redact(u) for u in self._servers)
        self._nc: Client | None = None
        self._js: JetStreamContext | None = None
        self._streams: set[str] = set()
        self._stream_lock = asyncio.Lock()
        self._subscriptions: set[_NatsSubscription] = set()
        self._pending: dict[str, int] = {}
        self._stats_task: asyncio.Task[None] | None = None
        self._closing = False
        self._closed = False

    def stream_name(self, token: str) -> str:
        return f"{self.stream_prefix}_{token.upper()}"

    def _wire(self, subject: str) -> str:
        return self.subject_prefix + subject

    def _unwire(self, subject: str) -> str:
        return subject[len(self.subject_prefix) :] if subject.startswith(self.subject_prefix) else subject

    async def start(self) -> None:
        """Connect (failing within ``connect_timeout_s`` with :class:`BusUnavailable`) and set up streams.

        Once connected, the client reconnects forever, so a NATS restart does not take services down.
        """
        if self._closed:
            raise BusError("the bus is closed")
        if self._js is not None:
            return
        nc = Client()
        try:
            async with asyncio.timeout(self.connect_timeout_s):  # not wait_for: see openami.bus.memory
                await nc.connect(
                    servers=self._servers,
                    name="openami",
                    connect_timeout=math.ceil(self.connect_timeout_s),  # per attempt; nats-py wants int
                    max_reconnect_attempts=-1,
                    error_cb=self._on_error,
                    disconnected_cb=self._on_disconnected,
                    reconnected_cb=self._on_reconnected,
                )
        except (TimeoutError, OSError, nats.errors.Error) as exc:
            reason = nc.last_error or exc
            await nc.close()
            raise BusUnavailable(
                f"cannot connect to NATS at {self._safe_url} within {self.connect_timeout_s:.0f}s: "
                f"{type(reason).__name__}: {reason}"
            ) from exc
        js = nc.jetstream()
        try:
            with _errors(f"JetStream at {self._safe_url}"):
                await js.account_info()
        except BusError as exc:
            await nc.close()
            raise BusUnavailable(
                f"NATS at {self._safe_url} has no JetStream (start it with -js): {exc}"
            ) from exc
        self._nc, self._js = nc, js
        try:
            for token in STREAM_TOKENS:
                await self._ensure_stream(token)
        except BusError:
            await self._shutdown_connection()
            raise
        self._stats_task = asyncio.create_task(self._refresh_stats_forever(), name="bus-nats-stats")

    async def _on_error(self, exc: Exception) -> None:
        logger.warning("NATS at %s: %s: %s", self._safe_url, type(exc).__name__, exc)

    async def _on_disconnected(self) -> None:
        logger.warning("disconnected from NATS at %s; reconnecting", self._safe_url)

    async def _on_reconnected(self) -> None:
        logger.info("reconnected to NATS at %s", self._safe_url)

    def _require_js(self) -> JetStreamContext:
        if self._closed:
            raise BusError("the bus is closed")
        if self._js is None:
            raise BusError("the bus is not started: call start() first")
        return self._js

    async def _ensure_stream(self, token: str) -> str:
        """Create the token's stream, or bring an existing one to our configuration."""
        name = self.stream_name(token)
        if name in self._streams:
            return name
        js = self._require_js()
        config = StreamConfig(
            name=name,
            subjects=[self._wire(f"{token}.>")],
            storage=StorageType.FILE,
            retention=RetentionPolicy.WORK_QUEUE if token in WORK_QUEUE_TOKENS else RetentionPolicy.LIMITS,
            max_age=self.max_age_s,
            duplicate_window=DUPLICATE_WINDOW_S,
        )
        async with self._stream_lock:
            if name in self._streams:
                return name
            with _errors(f"create stream {name}"):
                try:
                    await js.add_stream(config)
                except nats.js.errors.BadRequestError as exc:
                    if exc.err_code != _STREAM_CONFIG_CONFLICT:
                        raise
                    await self._update_stream(js, config)
            self._streams.add(name)
        return name

    @staticmethod
    async def _update_stream(js: JetStreamContext, config: StreamConfig) -> None:
        """Bring an existing stream to ``config``; one whose retention differs is created again."""
        info = await js.stream_info(config.name or "")
        if info.config.retention == config.retention:
            await js.update_stream(config)
            return
        if config.retention is not RetentionPolicy.WORK_QUEUE:
            raise BusError(
                f"stream {config.name} has {info.config.retention} retention, not {config.retention}: "
                "it holds data, so it is left alone; delete it or use another stream prefix"
            )
        logger.warning(
            "stream %s has %s retention, not %s: deleting and creating it again (%d messages dropped)",
            config.name,
            info.config.retention,
            config.retention,
            info.state.messages,
        )
        await js.delete_stream(config.name or "")
        await js.add_stream(config)

    async def publish(
        self,
        subject: str,
        data: bytes,
        *,
        headers: Mapping[str, str] | None = None,
        msg_id: str | None = None,
    ) -> None:
        """Publish and wait for the stream's acknowledgement (a duplicate ``msg_id`` is acknowledged too)."""
        js = self._require_js()
        tokens = check_subject(subject)
        stream = await self._ensure_stream(tokens[0])
        all_headers = dict(headers or {})
        if msg_id is not None:
            all_headers[MSG_ID_HEADER] = msg_id
        with _errors(f"publish to {subject}"):
            ack = await js.publish(self._wire(subject), data, stream=stream, headers=all_headers or None)
        if not ack.duplicate:
            self._counters.published += 1

    async def subscribe(self, subject: str, handler: Handler, options: SubscribeOptions) -> _NatsSubscription:
        """Join (or create) the durable pull consumer ``options.durable`` on the subject's stream.

        An existing consumer keeps its position and adopts the latest ``max_deliver`` / ``ack_wait_s``. A
        consumer with another filter is refused rather than silently re-pointed: choose a new durable name
        (or delete the old consumer) when a service changes what it consumes.
        """
        js = self._require_js()
        tokens = check_pattern(subject)
        check_options(options)
        stream = await self._ensure_stream(tokens[0])
        for other in self._subscriptions:
            if (other.stream, other.durable) == (stream, options.durable) and other.pattern != subject:
                raise BusError(
                    f"durable {options.durable!r} already consumes {other.pattern!r}; "
                    f"it cannot also filter {subject!r}"
                )
        wire_pattern = self._wire(subject)
        config = ConsumerConfig(
            durable_name=options.durable,
            deliver_policy=DeliverPolicy.ALL,
            ack_policy=AckPolicy.EXPLICIT,
            ack_wait=options.ack_wait_s + ACK_WAIT_MARGIN_S,
            max_deliver=options.max_deliver,
            filter_subject=wire_pattern,
        )
        with _errors(f"subscribe {options.durable} to {subject}"):
            try:
                existing = await js.consumer_info(stream, options.durable)
            except nats.js.errors.NotFoundError:
                existing = None
            if existing is not None and existing.config.filter_subject != wire_pattern:
                raise BusError(
                    f"durable {options.durable!r} on stream {stream} filters "
                    f"{existing.config.filter_subject!r}, not {wire_pattern!r}; delete the consumer or "
                    "use another durable name"
                )
            await js.add_consumer(stream, config)
            psub = await js.pull_subscribe_bind(durable=options.durable, stream=stream)
        subscription = _NatsSubscription(self, psub, stream, subject, handler, options)
        self._subscriptions.add(subscription)
        return subscription

    def _forget(self, subscription: _NatsSubscription) -> None:
        self._subscriptions.discard(subscription)

    async def _refresh_pending(self) -> dict[str, int]:
        """Ask the server how much each consumer with a subscriber here has not settled yet."""
        js = self._require_js()
        pending: dict[str, int] = {}
        for stream, durable in {(s.stream, s.durable) for s in self._subscriptions}:
            with _errors(f"consumer info {stream}/{durable}"):
                info = await js.consumer_info(stream, durable)
            pending[durable] = pending.get(durable, 0) + info.num_pending + info.num_ack_pending
        self._pending = pending
        return pending

    async def _refresh_stats_forever(self) -> None:
        """Keep ``stats().pending`` current for /metrics, which cannot await the server."""
        while True:
            await asyncio.sleep(_STATS_INTERVAL_S)
            try:
                await self._refresh_pending()
            except BusError as exc:
                logger.debug("pending refresh failed: %s", exc)

    async def drain(self, timeout_s: float = 10.0) -> None:
        """Wait until the consumers subscribed here have nothing pending or unacknowledged.

        Consumers without a subscriber in this process are not waited for. On timeout this logs what is
        still pending and returns.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while sum((pending := await self._refresh_pending()).values()) > 0:
            remaining = deadline - loop.time()
            if remaining <= 0:
                logger.warning("drain timed out after %.1fs with messages unsettled: %s", timeout_s, pending)
                return
            await asyncio.sleep(min(0.05, remaining))

    async def close(self) -> None:
        """Stop fetch loops, let running handlers finish and settle, then drain the connection.

        Publishing keeps working until the handlers are done, since handlers often publish.
        """
        if self._closing:
            return
        self._closing = True
        await asyncio.gather(*(s.stop() for s in list(self._subscriptions)))
        self._closed = True
        if self._stats_task is not None:
            self._stats_task.cancel()
            await asyncio.wait([self._stats_task])
        await self._shutdown_connection()

    async def _shutdown_connection(self) -> None:
        nc, self._nc, self._js = self._nc, None, None
        if nc is None:
            return
        try:
            await nc.drain()
        except (nats.errors.Error, OSError) as exc:
            logger.warning("draining the NATS connection failed, closing it: %s", exc)
            await nc.close()

    def stats(self) -> BusStats:
        """Counters of this process since start.

        ``pending`` covers the durables subscribed here, as of the last refresh (every few seconds, and on
        drain): /metrics cannot wait for a server round trip.
        """
        c = self._counters
        return BusStats(c.published, c.delivered, c.acked, c.redelivered, c.dead, dict(self._pending))
