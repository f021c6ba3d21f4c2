"""The head-end side of the gateway link: OpenAMI gateways' sealed envelopes in, readings on the bus,
acknowledgements, time answers and configuration back (``docs/drivers/gateway-link.md``).

:class:`GatewayLinkListener` subscribes to ``{prefix}/+/gw/+/link/up`` at QoS 1. On an external broker it
speaks MQTT 5 and subscribes through the shared subscription ``$share/<group>/...``, so several
head-end workers split the envelopes between them; on the embedded amqtt broker (MQTT 3.1.1 only) it
subscribes plainly. A broker that refuses MQTT 5 at CONNECT ("unsupported protocol version") is
retried with MQTT 3.1.1 and a plain subscription, with a warning.

For each envelope: tenant and gateway come from the topic (the broker's ACLs bind a gateway's
credentials to its own topic); the gateway's key and replay window come from ``gateway_link``
(:mod:`openami.hes.gateway_link_store`); the envelope is opened with an
:class:`~openami.protocols.edge.Opener` (tag first, then the window). By kind:

BATCH
    published as one :class:`~openami.bus.messages.ReadingBatch` (source ``gateway``) on
    ``readings.<tenant>`` with message id ``gw:{tenant}:{gateway}:{seq}`` (``#i`` per part when it has
    to be split), then its number is accepted into the window (persisted), then an ACK goes down.
    A number already accepted (a resend after a lost ACK, a broker redelivery, or a captured envelope
    replayed) is acknowledged again and not published again, logged at INFO on the security logger.
    A payload that does not parse is refused in the ACK (the gateway does not send it again),
    kept as a dead letter and *not* accepted, so a resend gets the same answer. Series, points or
    events that do not validate are dropped and kept as a dead letter, the rest is published.
HEALTH
    stored as the gateway's last health report; the mesh ``routes`` it may carry are recorded by
    :func:`openami.hes.topology.record_reported_routes` (not kept in the stored health), what could
    not be used is kept as a dead letter. When it reports a ``config_version`` below the last one
    pushed, that CONFIG is sent again (at most once per ``config_resend_s``), and a CONFIG that could
    not be published yet goes out now: CONFIG is delivered until the gateway reports it.
ALARM
    events published at once, like a batch without readings (no ACK: alarms are not resent).
DISCOVERY
    filed as pending devices.
TIME
    answered at once with ``{"t1", "t2", "t3"}`` (receive and send time, epoch seconds).
COMMAND
    the result of a command sent to the gateway (:mod:`openami.hes.gateway_commands`): recorded on the
    command and acknowledged (an ACK with ``"commands": [command_id]``); a result for a command that is
    not this gateway's is never applied, logged on the security logger and kept as a dead letter.
    COMMAND envelopes go down from :class:`~openami.hes.gateway_commands.CommandDelivery`, which this
    listener runs: due commands every ``command_poll_s``, unanswered ones again after
    ``command_resend_s`` and after each HEALTH.

An envelope that fails (unknown gateway, no key, wrong key, altered, moved onto another gateway's
topic, reflected, older than the window, not an envelope) is rejected: logged as a security warning on
``openami.security.gateway_link`` with tenant, gateway, sequence number (unauthenticated, from the
header) and reason, counted, and handed to ``on_rejected`` (dead letter, the first 64 KiB as received).
Nothing is ever acknowledged that is not on the bus; a bus or database outage costs no data: nothing is
acknowledged and the gateway sends again.

One gateway's envelopes are handled in arrival order, one at a time; different gateways concurrently,
up to ``max_concurrency``. The database work runs in threads.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import logging
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    field_validator,
)
from sqlalchemy import Engine
from sqlalchemy.exc import OperationalError, SQLAlchemyError

from openami.bus.base import Bus, BusError
from openami.bus.messages import (
    DEVICE_ID_PATTERN,
    TENANT_SLUG_PATTERN,
    MeterEvent,
    Point,
    ReadingBatch,
    Series,
    readings_subject,
)
from openami.hes.gateway_commands import (
    DEFAULT_POLL_S,
    DEFAULT_RESEND_S,
    CommandDelivery,
    Recorded,
    UnusableResult,
    parse_result,
    record_result,
)
from openami.hes.gateway_link_store import (
    MAX_STORED_SEQ,
    DiscoveredDevice,
    GatewayLinkStore,
    LinkState,
    UnknownGateway,
    reported_config_version,
)
from openami.hes.rejected import RejectedHandler, hand_over
from openami.hes.topology import record_reported_routes
from openami.hes.uplinks import MAX_BUS_MESSAGE_BYTES, split_batch
from openami.protocols.edge import (
    Compression,
    Direction,
    EdgeLinkError,
    Envelope,
    Kind,
    Opener,
    ReplayError,
    peek,
    seal,
)
from openami.protocols.edge.envelope import MAX_PAYLOAD_BYTES, WINDOW
from openami.security.audit import AuditLog
from openami.security.keyvault import KeyVault, KeyVaultError
from openami.store.errors import StoreError
from openami.transports.errors import ConnectError
from openami.transports.mqtt_subscriber import MqttSubscriber

__all__ = [
    "DEFAULT_CONFIG_RESEND_S",
    "DEFAULT_SHARED_GROUP",
    "QOS",
    "ConfigPush",
    "GatewayLinkListener",
    "LinkListenerStats",
    "ParsedBatch",
    "UnusablePayload",
    "link_filter",
    "link_topics",
    "parse_batch",
    "parse_discovery",
    "parse_link_topic",
    "send_config",
]

log = logging.getLogger(__name__)
security_log = logging.getLogger("openami.security.gateway_link")

QOS: Final = 1
DEFAULT_SHARED_GROUP: Final = "openami-hes"
DEFAULT_CONFIG_RESEND_S: Final = 300.0
"""A CONFIG the gateway does not report is sent again at most this often (per gateway)."""
SOURCE: Final = "gateway"
"""``ReadingBatch.source`` of everything that came over the gateway link."""
MAX_SMALL_PAYLOAD: Final = 64 * 1024
"""HEALTH, DISCOVERY and TIME payloads larger than this are refused; envelopes larger than this are
opened in a thread rather than on the event loop."""
MAX_HEALTH_PAYLOAD: Final = 16 * MAX_SMALL_PAYLOAD
"""HEALTH payloads may be larger: their ``routes`` name every meter the gateway reaches."""
_PUBLISH_TIMEOUT_S: Final = 30.0
_TENANT = re.compile(TENANT_SLUG_PATTERN)
_GATEWAY = re.compile(DEVICE_ID_PATTERN)
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def link_topics(prefix: str, tenant: str, gateway: str) -> tuple[str, str]:
    """(up, down) topics of one gateway."""
    base = f"{prefix}/{tenant}/gw/{gateway}/link"
    return f"{base}/up", f"{base}/down"


def link_filter(prefix: str, shared_group: str | None = None) -> str:
    """The subscription receiving every gateway's uplink envelopes (shared when ``shared_group``)."""
    topic_filter = f"{prefix}/+/gw/+/link/up"
    return f"$share/{shared_group}/{topic_filter}" if shared_group else topic_filter


def parse_link_topic(prefix: str, topic: str) -> tuple[str, str]:
    """``(tenant, gateway)`` of an uplink topic; ValueError when it is not one or an id is malformed."""
    rest = topic.removeprefix(f"{prefix}/")
    parts = rest.split("/")
    if rest == topic or len(parts) != 5 or parts[1] != "gw" or parts[3:] != ["link", "up"]:
        raise ValueError(f"topic {topic[:200]!r} is not {prefix}/<tenant>/gw/<gateway>/link/up")
    tenant, gateway = parts[0], parts[2]
    if not _TENANT.match(tenant):
        raise ValueError(f"tenant {tenant[:80]!r} in the topic must match {TENANT_SLUG_PATTERN}")
    if not _GATEWAY.match(gateway):
        raise ValueError(f"gateway {gateway[:80]!r} in the topic must match {DEVICE_ID_PATTERN}")
    return tenant, gateway


@dataclass
class LinkListenerStats:
    """Counters for /metrics. Every received envelope ends up accepted, duplicate, refused (authentic
    but unusable), rejected (not authentic, or no such gateway) or failed (bus or database down, or
    given up by the drain at a stop or a broker loss: not acknowledged, the gateway sends it again)."""

    received: int = 0
    accepted: int = 0
    duplicates: int = 0
    refused: int = 0
    rejected: int = 0
    failed: int = 0
    readings: int = 0
    events: int = 0
    acks_sent: int = 0
    time_answers: int = 0
    configs_sent: int = 0
    configs_resent: int = 0
    command_results: int = 0
    command_results_foreign: int = 0
    downlinks_failed: int = 0

    def outcomes(self) -> dict[str, float]:
        return {
            "received": self.received,
            "accepted": self.accepted,
            "duplicates": self.duplicates,
            "refused": self.refused,
            "rejected": self.rejected,
            "failed": self.failed,
        }


class _Rejected(Exception):
    """An envelope that is not accepted as authentic (or has no link); ``security``: worth an alert."""

    def __init__(self, reason: str, *, security: bool = True) -> None:
        super().__init__(reason)
        self.reason = reason
        self.security = security


# -- payloads ----------------------------------------------------------------------------------------


class _Payload(BaseModel):
    model_config = ConfigDict(extra="ignore")  # newer gateways may add fields


class _BatchPayload(_Payload):
    series: list[Series] = Field(default_factory=list)
    events: list[MeterEvent] = Field(default_factory=list)


def _no_control(value: str) -> str:
    if _CONTROL.search(value):
        raise ValueError("control characters are not allowed")
    return value


class _Device(_Payload):
    protocol: str = Field(min_length=1, max_length=32)
    id: str = Field(min_length=1, max_length=64)
    address: str = Field("", max_length=255)
    manufacturer: str = Field("", max_length=120)
    medium: str | None = Field(None, max_length=16)
    seen: AwareDatetime | None = None

    @field_validator("protocol", "id", "address", "manufacturer", "medium")
    @classmethod
    def _clean(cls, value: str | None) -> str | None:
        return value if value is None else _no_control(value)


class _TimeRequest(_Payload):
    t1: float = Field(allow_inf_nan=False)


_POINT: TypeAdapter[Point] = TypeAdapter(Point)


@dataclass
class ParsedBatch:
    series: list[Series]
    events: list[MeterEvent]
    problems: list[str]
    """What was dropped (kept as a dead letter); the rest is used."""


class UnusablePayload(Exception):
    """An authentic payload that cannot be used at all (refused)."""


def _short(exc: ValidationError) -> str:
    first = exc.errors(include_url=False, include_input=False)[0]
    where = ".".join(str(part) for part in first["loc"])
    return f"{where}: {first['msg']}" if where else first["msg"]


def _json_object(payload: bytes) -> dict[str, Any]:
    try:
        body = json.loads(payload)
    except (UnicodeDecodeError, ValueError) as exc:
        raise UnusablePayload(f"payload is not JSON: {exc}") from None
    if not isinstance(body, dict):
        raise UnusablePayload("payload is not a JSON object")
    return body


def parse_batch(payload: bytes) -> ParsedBatch:
    """A BATCH (or ALARM) payload as series and events. Whatever does not validate is dropped item by
    item (a series keeps its valid points) and named in ``problems``; :class:`UnusablePayload` when the
    payload is no batch at all or nothing in it is usable."""
    try:
        whole = _BatchPayload.model_validate_json(payload)  # the fast path: one pass, no dicts
    except ValidationError:
        parsed = _salvage(_json_object(payload))
    else:
        parsed = ParsedBatch(whole.series, whole.events, [])
    parsed = _without_control_characters(parsed)
    if not parsed.series and not parsed.events and parsed.problems:
        raise UnusablePayload("nothing in the batch is valid: " + "; ".join(parsed.problems[:5]))
    return parsed


def _salvage(body: dict[str, Any]) -> ParsedBatch:
    raw_series, raw_events = body.get("series", []), body.get("events", [])
    if not isinstance(raw_series, list) or not isinstance(raw_events, list):
        raise UnusablePayload("'series' and 'events' must be lists")
    parsed = ParsedBatch([], [], [])
    for index, item in enumerate(raw_series):
        _salvage_series(index, item, parsed)
    for index, item in enumerate(raw_events):
        try:
            parsed.events.append(MeterEvent.model_validate(item))
        except ValidationError as exc:
            parsed.problems.append(f"events[{index}] dropped: {_short(exc)}")
    return parsed


def _without_control_characters(parsed: ParsedBatch) -> ParsedBatch:
    """Names with control characters (PostgreSQL cannot store NUL) are dropped, not sent on to fail the
    ingest over and over."""
    series, events = [], []
    for item in parsed.series:
        if any(_CONTROL.search(text) for text in (item.meter, item.channel, item.unit)):
            parsed.problems.append(
                f"series {item.meter[:64]!r}/{item.channel[:64]!r} dropped: control characters"
            )
        else:
            series.append(item)
    for ev in parsed.events:
        texts = [
            ev.meter,
            ev.code,
            *(k for k in ev.detail),
            *(v for v in ev.detail.values() if isinstance(v, str)),
        ]
        if any(_CONTROL.search(text) for text in texts):
            parsed.problems.append(f"event {ev.code[:64]!r} of {ev.meter[:64]!r} dropped: control characters")
        else:
            events.append(ev)
    return ParsedBatch(series, events, parsed.problems)


def _salvage_series(index: int, item: Any, parsed: ParsedBatch) -> None:
    try:
        parsed.series.append(Series.model_validate(item))
        return
    except ValidationError as exc:
        reason = _short(exc)
    points = item.get("points") if isinstance(item, dict) else None
    if isinstance(points, list):
        good = []
        for point in points:
            with contextlib.suppress(ValidationError):
                good.append(_POINT.validate_python(point))
        if good:
            try:
                series = Series.model_validate({**item, "points": good})
            except ValidationError:
                pass
            else:
                parsed.series.append(series)
                parsed.problems.append(f"series[{index}]: {len(points) - len(good)} points dropped: {reason}")
                return
    parsed.problems.append(f"series[{index}] dropped: {reason}")


def parse_discovery(payload: bytes) -> tuple[list[DiscoveredDevice], list[str]]:
    body = _json_object(payload)
    raw = body.get("devices")
    if not isinstance(raw, list):
        raise UnusablePayload("'devices' must be a list")
    devices: dict[tuple[str, str], DiscoveredDevice] = {}
    problems = []
    for index, item in enumerate(raw):
        try:
            device = _Device.model_validate(item)
        except ValidationError as exc:
            problems.append(f"devices[{index}] dropped: {_short(exc)}")
            continue
        devices[device.protocol, device.id] = DiscoveredDevice(
            device.protocol, device.id, device.address, device.manufacturer, device.medium
        )
    if not devices and problems:
        raise UnusablePayload("no valid device: " + "; ".join(problems[:5]))
    return list(devices.values()), problems


def _dumps(body: dict[str, Any]) -> bytes:
    return json.dumps(body, separators=(",", ":")).encode()


def _sealed_down(state: LinkState, kind: Kind, seq: int, payload: bytes) -> bytes:
    compression = Compression.NONE if len(payload) < 512 else Compression.ZLIB
    return seal(
        state.key, state.gateway, kind, seq, payload, direction=Direction.DOWN, compression=compression
    )


Publish = Callable[[str, bytes], Awaitable[None]]
"""``publish(topic, envelope)`` at QoS 1; :class:`ConnectError` when the broker does not take it."""


@dataclass(frozen=True, slots=True)
class ConfigPush:
    """A pushed CONFIG: its version, and whether it went to the broker now (False: pending, sent at
    the gateway's next HEALTH by whichever head-end worker has the link)."""

    version: int
    delivered: bool


async def send_config(
    store: GatewayLinkStore,
    state: LinkState,
    prefix: str,
    publish: Publish,
    now: datetime,
    *,
    reported: int | None = None,
    resend_after_s: float | None = None,
) -> int | None:
    """Send the gateway's last pushed CONFIG if it is due (:meth:`GatewayLinkStore.claim_config`):
    sealed under a fresh downlink number and published; the version sent, or None when nothing was
    due. When the broker does not take it, it goes back to pending and :class:`ConnectError` is raised.
    Shared by the listener and the CLI, which publishes on a connection of its own."""
    claimed = await asyncio.to_thread(
        store.claim_config, state, now, reported=reported, resend_after_s=resend_after_s
    )
    if claimed is None:
        return None
    envelope = _sealed_down(state, Kind.CONFIG, claimed.seq, _dumps(claimed.body))
    _, down = link_topics(prefix, state.tenant, state.gateway)
    try:
        await publish(down, envelope)
    except ConnectError:
        await asyncio.to_thread(store.unclaim_config, state, claimed)
        raise
    return claimed.version


# -- the listener ------------------------------------------------------------------------------------


class GatewayLinkListener:
    """Takes gateways' envelopes off the broker and answers them (module docstring).

    ``mqtt5``: speak MQTT 5 (and use ``shared_group``, when set, as a shared subscription); False for
    MQTT 3.1.1 brokers such as the embedded one, where the subscription is plain. ``clock`` gives the
    head-end's time for TIME answers (epoch seconds). ``config_resend_s``: how long a CONFIG the
    gateway's HEALTH does not report waits before it is sent again.
    """

    def __init__(
        self,
        mqtt_url: str,
        prefix: str,
        bus: Bus,
        engine: Engine,
        vault: KeyVault,
        *,
        shared_group: str | None = DEFAULT_SHARED_GROUP,
        mqtt5: bool = True,
        on_rejected: RejectedHandler | None = None,
        max_concurrency: int = 8,
        max_pending: int = 1000,
        reconnect_min_s: float = 0.5,
        reconnect_max_s: float = 30.0,
        connect_timeout_s: float = 10.0,
        drain_timeout_s: float = 10.0,
        max_bus_message_bytes: int = MAX_BUS_MESSAGE_BYTES,
        max_payload_bytes: int = MAX_PAYLOAD_BYTES,
        config_resend_s: float = DEFAULT_CONFIG_RESEND_S,
        command_poll_s: float = DEFAULT_POLL_S,
        command_resend_s: float = DEFAULT_RESEND_S,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if max_concurrency < 1 or max_pending < 1:
            raise ValueError("max_concurrency and max_pending must be at least 1")
        if config_resend_s < 0:
            raise ValueError("config_resend_s must not be negative")
        self._config_resend_s = config_resend_s
        self.url = mqtt_url
        self.prefix = prefix
        self._bus = bus
        self._store = GatewayLinkStore(engine, vault)
        self._engine = engine
        self._shared_group = shared_group or None
        self._on_rejected = on_rejected
        self._slots = asyncio.Semaphore(max_concurrency)
        self._room = asyncio.Semaphore(max_pending)
        self._drain_timeout_s = drain_timeout_s
        self._max_bus_message_bytes = max_bus_message_bytes
        self._max_payload_bytes = max_payload_bytes
        self._clock = clock
        self._queues: dict[str, collections.deque[tuple[str, bytes, float]]] = {}
        self._workers: set[asyncio.Task[None]] = set()
        self._subscriber = MqttSubscriber(
            mqtt_url,
            lambda mqtt5: [(link_filter(prefix, self._shared_group if mqtt5 else None), QOS)],
            self._dispatch,
            name="gateway link",
            mqtt5=mqtt5,
            on_disconnect=self._drain,  # what was taken is answered on this connection if it lives
            reconnect_min_s=reconnect_min_s,
            reconnect_max_s=reconnect_max_s,
            connect_timeout_s=connect_timeout_s,
        )
        self.stats = LinkListenerStats()
        self._audit = AuditLog()
        self.commands = CommandDelivery(
            engine,
            self._store,
            lambda state, body: self._send_down(state, Kind.COMMAND, lambda: body),
            lambda: self._subscriber.can_publish,
            poll_s=command_poll_s,
            resend_s=command_resend_s,
            clock=clock,
        )

    # -- life cycle ------------------------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        """Subscribed right now (False while reconnecting)."""
        return self._subscriber.connected

    @property
    def mqtt_version(self) -> str:
        """The protocol in use: ``5`` or ``3.1.1`` (after a fallback, 3.1.1)."""
        return self._subscriber.mqtt_version

    @property
    def topic_filter(self) -> str:
        """What is subscribed: shared on MQTT 5 with a group, plain otherwise."""
        return self._subscriber.filters[0][0]

    async def start(self) -> None:
        """Connect and subscribe; :class:`ConnectError` if that fails within the connect timeout."""
        await self._subscriber.start()
        self.commands.start()

    async def stop(self) -> None:
        """Stop taking envelopes; those taken are handled (and answered) first, within the drain timeout."""
        await self.commands.stop()
        await self._subscriber.stop()

    # -- ordering: one queue and worker per gateway (topic) ---------------------------------------------

    async def _dispatch(self, topic: str, data: bytes) -> None:
        arrived = self._clock()
        self.stats.received += 1
        await self._room.acquire()  # bounded: beyond max_pending the broker's messages wait
        queue = self._queues.get(topic)
        if queue is None:
            queue = self._queues[topic] = collections.deque()
            worker = asyncio.create_task(self._work(topic, queue), name=f"gateway-link {topic[:80]}")
            self._workers.add(worker)
            worker.add_done_callback(self._workers.discard)
        queue.append((topic, data, arrived))

    async def _work(self, key: str, queue: collections.deque[tuple[str, bytes, float]]) -> None:
        try:
            while queue:
                topic, data, arrived = queue[0]
                try:
                    async with self._slots:
                        await self._handle(topic, data, arrived)
                except asyncio.CancelledError:
                    # Given up by the drain (a stop, or a broker lost while an answer awaited its
                    # PUBACK): not acknowledged, so the gateway sends it again. Counted, so every
                    # received envelope still ends in exactly one outcome.
                    self.stats.failed += 1
                    raise
                finally:
                    queue.popleft()
                    self._room.release()
        finally:
            if self._queues.get(key) is queue:
                del self._queues[key]
            self.stats.failed += len(queue)  # cancelled with envelopes left: never handled, sent again
            for _ in range(len(queue)):  # ... and give their room back
                self._room.release()
            queue.clear()

    async def _drain(self) -> None:
        workers = set(self._workers)
        if not workers:
            return
        _, late = await asyncio.wait(workers, timeout=self._drain_timeout_s)
        for worker in late:
            worker.cancel()
        if late:
            log.warning("gateway link: %d gateways' envelopes left unhandled at shutdown", len(late))
            await asyncio.gather(*late, return_exceptions=True)

    # -- one envelope ------------------------------------------------------------------------------------

    async def _handle(self, topic: str, data: bytes, arrived: float) -> None:
        tenant: str | None = None
        gateway: str | None = None
        try:
            try:
                tenant, gateway = parse_link_topic(self.prefix, topic)
            except ValueError as exc:
                raise _Rejected(str(exc)) from None
            await self._handle_envelope(tenant, gateway, topic, data, arrived)
        except _Rejected as exc:
            await self._reject(topic, tenant, gateway, data, arrived, exc)
        except (BusError, OperationalError) as exc:
            self.stats.failed += 1
            log.warning(
                "gateway link: envelope on %r not handled, not acknowledged (the gateway sends it again): %s",
                topic,
                exc,
            )
        except Exception as exc:
            # A bug must cost one envelope (kept as a dead letter), never the listener.
            log.exception("gateway link: failed to handle an envelope on %r", topic)
            await self._reject(
                topic,
                tenant,
                gateway,
                data,
                arrived,
                _Rejected(f"internal error: {type(exc).__name__}", security=False),
            )

    async def _reject(
        self, topic: str, tenant: str | None, gateway: str | None, data: bytes, arrived: float, exc: _Rejected
    ) -> None:
        try:
            seq: int | None = peek(data).seq
        except EdgeLinkError:
            seq = None
        (security_log.warning if exc.security else log.error)(
            "gateway link: rejected envelope from gateway %s of tenant %s (seq %s, %d bytes): %s",
            gateway,
            tenant,
            seq,
            len(data),
            exc.reason,
            extra={"tenant": tenant, "gateway": gateway, "seq": seq, "reason": exc.reason},
        )
        when = datetime.fromtimestamp(arrived, UTC)
        await hand_over(self._on_rejected, topic, tenant, f"gateway link: {exc.reason}", data, when)
        self.stats.rejected += 1  # counters move last: when one moves, everything of it is done

    async def _handle_envelope(
        self, tenant: str, gateway: str, topic: str, data: bytes, arrived: float
    ) -> None:
        try:
            peek(data)  # bytes that are no envelope at all cost no database read
            state = await asyncio.to_thread(self._store.load, tenant, gateway)
        except EdgeLinkError as exc:
            raise _Rejected(f"{type(exc).__name__}: {exc}") from None
        except UnknownGateway as exc:
            raise _Rejected(exc.reason) from None
        opener = Opener(
            state.key,
            gateway,
            direction=Direction.UP,
            window=state.window,
            max_payload=self._max_payload_bytes,
        )
        try:
            if len(data) > MAX_SMALL_PAYLOAD:  # inflating a big batch: not on the event loop
                envelope = await asyncio.to_thread(opener.open, data, accept=False)
            else:
                envelope = opener.open(data, accept=False)
        except ReplayError as exc:
            if exc.highest - exc.seq >= WINDOW:
                raise _Rejected(
                    f"sequence {exc.seq} is older than the replay window (highest {exc.highest})"
                ) from None
            await self._duplicate(state, peek(data).kind, exc.seq, arrived)
            return
        except EdgeLinkError as exc:
            raise _Rejected(f"{type(exc).__name__}: {exc}") from None
        if envelope.seq > MAX_STORED_SEQ:
            raise _Rejected(f"sequence {envelope.seq} is beyond 2**63-1, which this head-end cannot store")
        handler = self._HANDLERS.get(envelope.kind)
        if handler is None:
            await self._unusable(
                state, envelope, topic, arrived, f"{envelope.kind.name} is not an uplink kind"
            )
            return
        await handler(self, state, envelope, topic, arrived)

    async def _duplicate(self, state: LinkState, kind: Kind, seq: int, arrived: float) -> None:
        """An authentic envelope whose number was accepted before: a BATCH is acknowledged again.

        Logged on the security logger, at INFO: a resend after a lost ACK and a broker redelivery are
        normal, but so is what a captured envelope replayed looks like, and only the count over time
        tells them apart."""
        security_log.info(
            "gateway link: %s %d from gateway %s of tenant %s already accepted: not stored again "
            "(a resend or a replay)",
            kind.name,
            seq,
            state.gateway,
            state.tenant,
            extra={"tenant": state.tenant, "gateway": state.gateway, "seq": seq, "kind": kind.name},
        )
        await asyncio.to_thread(self._store.touch, state, datetime.fromtimestamp(arrived, UTC))
        if kind is Kind.BATCH:
            await self._acknowledge(state, acked=[seq])
        self.stats.duplicates += 1

    async def _unusable(
        self, state: LinkState, envelope: Envelope, topic: str, arrived: float, reason: str
    ) -> None:
        """Authentic but unusable, of a kind that is never resent: accepted (so it is not replayed),
        counted as refused and kept as a dead letter with its opened payload."""
        log.warning(
            "gateway %s/%s: %s %d refused: %s",
            state.tenant,
            state.gateway,
            envelope.kind.name,
            envelope.seq,
            reason,
        )
        await asyncio.to_thread(self._store.accept, state, envelope.seq, datetime.fromtimestamp(arrived, UTC))
        await self._dead_letter(state, envelope, topic, arrived, reason)
        self.stats.refused += 1

    async def _dead_letter(
        self, state: LinkState, envelope: Envelope, topic: str, arrived: float, reason: str
    ) -> None:
        when = datetime.fromtimestamp(arrived, UTC)
        detail = f"gateway link {envelope.kind.name} {envelope.seq} (payload opened): {reason}"
        await hand_over(self._on_rejected, topic, state.tenant, detail[:4000], envelope.payload, when)

    # -- kinds -----------------------------------------------------------------------------------------

    async def _on_batch(self, state: LinkState, envelope: Envelope, topic: str, arrived: float) -> None:
        try:
            parsed = await asyncio.to_thread(parse_batch, envelope.payload)
        except UnusablePayload as exc:
            reason = str(exc)[:500]
            log.warning(
                "gateway %s/%s: batch %d refused: %s", state.tenant, state.gateway, envelope.seq, reason
            )
            await self._dead_letter(state, envelope, topic, arrived, reason)
            await asyncio.to_thread(self._store.touch, state, datetime.fromtimestamp(arrived, UTC))
            await self._acknowledge(state, refused={envelope.seq: reason})
            self.stats.refused += 1
            return
        await self._publish(state, envelope.seq, parsed, arrived)
        await asyncio.to_thread(self._store.accept, state, envelope.seq, datetime.fromtimestamp(arrived, UTC))
        if parsed.problems:
            await self._dead_letter(
                state, envelope, topic, arrived, "partly used: " + "; ".join(parsed.problems[:20])
            )
        await self._acknowledge(state, acked=[envelope.seq])
        self.stats.accepted += 1

    async def _on_alarm(self, state: LinkState, envelope: Envelope, topic: str, arrived: float) -> None:
        try:
            parsed = await asyncio.to_thread(parse_batch, envelope.payload)
        except UnusablePayload as exc:
            await self._unusable(state, envelope, topic, arrived, str(exc)[:500])
            return
        await self._publish(state, envelope.seq, parsed, arrived)
        await asyncio.to_thread(self._store.accept, state, envelope.seq, datetime.fromtimestamp(arrived, UTC))
        if parsed.problems:
            await self._dead_letter(
                state, envelope, topic, arrived, "partly used: " + "; ".join(parsed.problems[:20])
            )
        self.stats.accepted += 1

    async def _on_health(self, state: LinkState, envelope: Envelope, topic: str, arrived: float) -> None:
        try:
            if len(envelope.payload) > MAX_HEALTH_PAYLOAD:
                raise UnusablePayload(f"a health report of {len(envelope.payload)} bytes is too large")
            body = _json_object(envelope.payload)
        except UnusablePayload as exc:
            await self._unusable(state, envelope, topic, arrived, str(exc))
            return
        routes = body.pop("routes", None)
        await asyncio.to_thread(
            self._store.accept, state, envelope.seq, datetime.fromtimestamp(arrived, UTC), health=body
        )
        if routes is not None:
            await self._record_routes(state, envelope, topic, arrived, routes)
        await self._resend_config(state, reported_config_version(body), arrived)
        await self.commands.after_health(state)
        self.stats.accepted += 1

    async def _resend_config(self, state: LinkState, reported: int | None, arrived: float) -> None:
        """After a HEALTH: the last pushed CONFIG again if the gateway reports a lower version (at most
        once per ``config_resend_s``) or it never reached the broker. A failure costs this attempt only
        (logged): the health is stored, and the next HEALTH tries again."""
        if not self._subscriber.can_publish:
            return
        try:
            version = await send_config(
                self._store,
                state,
                self.prefix,
                self._publish_down,
                datetime.fromtimestamp(arrived, UTC),
                reported=reported,
                resend_after_s=self._config_resend_s,
            )
        except (ConnectError, KeyVaultError, StoreError, SQLAlchemyError, ValueError) as exc:
            self.stats.downlinks_failed += 1
            log.warning("gateway %s/%s: configuration not sent again: %s", state.tenant, state.gateway, exc)
            return
        if version is not None:
            self.stats.configs_resent += 1
            log.info(
                "gateway %s/%s: configuration version %d sent again (the gateway reports %s)",
                state.tenant,
                state.gateway,
                version,
                reported,
            )

    async def _record_routes(
        self, state: LinkState, envelope: Envelope, topic: str, arrived: float, routes: Any
    ) -> None:
        """The mesh routes of a HEALTH (``docs/concepts/topology.md``). What is unusable (a malformed
        entry, an unknown meter, a meter registered elsewhere) is kept as a dead letter whose payload is
        the list of problems, not the whole report (a gateway repeats it every few minutes). The health
        itself is stored already: a failure here costs these routes only (the next HEALTH has them)."""
        when = datetime.fromtimestamp(arrived, UTC)
        try:
            recorded = await asyncio.to_thread(
                record_reported_routes, self._engine, state.tenant_id, state.comm_device_id, routes, when
            )
        except (StoreError, SQLAlchemyError) as exc:
            log.warning("gateway %s/%s: routes not recorded: %s", state.tenant, state.gateway, exc)
            return
        if problems := recorded.problems:
            detail = f"gateway link HEALTH {envelope.seq}: {len(problems)} routes not used: "
            detail += "; ".join(problems[:20])
            listing = "\n".join(problems).encode()
            await hand_over(self._on_rejected, topic, state.tenant, detail[:4000], listing, when)

    async def _on_discovery(self, state: LinkState, envelope: Envelope, topic: str, arrived: float) -> None:
        try:
            if len(envelope.payload) > MAX_SMALL_PAYLOAD * 16:
                raise UnusablePayload(f"a discovery report of {len(envelope.payload)} bytes is too large")
            devices, problems = parse_discovery(envelope.payload)
        except UnusablePayload as exc:
            await self._unusable(state, envelope, topic, arrived, str(exc))
            return
        await asyncio.to_thread(
            self._store.accept, state, envelope.seq, datetime.fromtimestamp(arrived, UTC), discovered=devices
        )
        if problems:
            await self._dead_letter(
                state, envelope, topic, arrived, "partly used: " + "; ".join(problems[:20])
            )
        self.stats.accepted += 1

    async def _on_time(self, state: LinkState, envelope: Envelope, topic: str, arrived: float) -> None:
        try:
            if len(envelope.payload) > MAX_SMALL_PAYLOAD:
                raise UnusablePayload("a time request is a few bytes")
            request = _TimeRequest.model_validate(_json_object(envelope.payload))
        except (UnusablePayload, ValidationError) as exc:
            reason = _short(exc) if isinstance(exc, ValidationError) else str(exc)
            await self._unusable(state, envelope, topic, arrived, reason)
            return
        await asyncio.to_thread(self._store.accept, state, envelope.seq, datetime.fromtimestamp(arrived, UTC))
        t1 = request.t1
        if await self._send_down(state, Kind.TIME, lambda: {"t1": t1, "t2": arrived, "t3": self._clock()}):
            self.stats.time_answers += 1
        self.stats.accepted += 1

    async def _on_command(self, state: LinkState, envelope: Envelope, topic: str, arrived: float) -> None:
        """A command's result (module docstring): recorded, then its number accepted, then acknowledged;
        a crash between the steps makes the gateway send it again, which records nothing twice."""
        try:
            result = parse_result(envelope.payload)
        except UnusableResult as exc:
            await self._unusable(state, envelope, topic, arrived, str(exc))
            return
        when = datetime.fromtimestamp(arrived, UTC)
        recorded = await asyncio.to_thread(record_result, self._engine, self._audit, state, result, when)
        await asyncio.to_thread(self._store.accept, state, envelope.seq, when)
        if recorded is Recorded.FOREIGN:
            reason = f"result for command {result.command_id}, which is not this gateway's"
            await self._dead_letter(state, envelope, topic, arrived, reason)
            self.stats.command_results_foreign += 1
            self.stats.refused += 1
            return
        await self._acknowledge(state, commands=[result.command_id])
        self.stats.command_results += recorded is Recorded.RECORDED
        self.stats.accepted += 1

    _HANDLERS: Final = {
        Kind.BATCH: _on_batch,
        Kind.ALARM: _on_alarm,
        Kind.HEALTH: _on_health,
        Kind.DISCOVERY: _on_discovery,
        Kind.TIME: _on_time,
        Kind.COMMAND: _on_command,
    }

    async def _publish(self, state: LinkState, seq: int, parsed: ParsedBatch, arrived: float) -> None:
        if not parsed.series and not parsed.events:
            return
        batch = ReadingBatch(
            tenant=state.tenant,
            source=SOURCE,
            gateway=state.gateway,
            received_at=datetime.fromtimestamp(arrived, UTC),
            series=parsed.series,
            events=parsed.events,
        )
        parts = await asyncio.to_thread(split_batch, batch, self._max_bus_message_bytes)
        base = f"gw:{state.tenant}:{state.gateway}:{seq}"
        for index, part in enumerate(parts):
            msg_id = base if len(parts) == 1 else f"{base}#{index}"
            await self._bus.publish(readings_subject(state.tenant), part, msg_id=msg_id)
        self.stats.readings += batch.reading_count
        self.stats.events += len(batch.events)

    # -- downlink --------------------------------------------------------------------------------------

    async def _acknowledge(
        self,
        state: LinkState,
        *,
        acked: list[int] | None = None,
        refused: dict[int, str] | None = None,
        commands: list[int] | None = None,
    ) -> None:
        body: dict[str, Any] = {
            "acked": acked or [],
            "refused": {str(seq): reason for seq, reason in (refused or {}).items()},
        }
        if commands:
            body["commands"] = commands  # command results stored: the gateway stops sending them
        if await self._send_down(state, Kind.ACK, lambda: body):
            self.stats.acks_sent += 1

    async def _send_down(
        self, state: LinkState, kind: Kind, body: Callable[[], dict[str, Any]], seq: int | None = None
    ) -> bool:
        """Seal and publish one downlink envelope under a fresh number; False (logged) when it could not
        go out (the gateway then sends its envelope again, or asks again)."""
        if not self._subscriber.can_publish:
            self.stats.downlinks_failed += 1
            log.info("gateway %s/%s: %s not sent: not connected", state.tenant, state.gateway, kind.name)
            return False
        if seq is None:
            seq = await asyncio.to_thread(self._store.next_down_seq, state)
        envelope = _sealed_down(state, kind, seq, _dumps(body()))  # built now: a TIME answer's t3
        _, down = link_topics(self.prefix, state.tenant, state.gateway)
        try:
            await self._publish_down(down, envelope)
        except ConnectError as exc:
            self.stats.downlinks_failed += 1
            log.warning("gateway %s/%s: %s %d not sent: %s", state.tenant, state.gateway, kind.name, seq, exc)
            return False
        return True

    async def _publish_down(self, topic: str, envelope: bytes) -> None:
        await self._subscriber.publish(topic, envelope, qos=QOS, timeout_s=_PUBLISH_TIMEOUT_S)

    async def push_config(self, tenant: str, gateway: str, config: dict[str, Any]) -> ConfigPush:
        """Push ``config`` (meter list, settings) to a gateway as a CONFIG envelope.

        The version is one above the last pushed (and the gateway's own), written into the payload as
        ``"version"`` (a ``version`` in ``config`` is replaced); the payload is kept sealed, so the
        head-end sends it again until the gateway's HEALTH reports that version. When the broker is away
        it is pending (``delivered`` False), not an error: it goes out at the gateway's next HEALTH.
        :class:`UnknownGateway` for a gateway without a link, TypeError for a ``config`` that is not
        JSON (no version is spent)."""
        state = await asyncio.to_thread(self._store.load, tenant, gateway)
        staged = await asyncio.to_thread(self._store.stage_config, state, config)
        delivered = await self.deliver_config(state)
        log.info(
            "gateway %s/%s: configuration version %d pushed (%s)",
            tenant,
            gateway,
            staged.version,
            "sent" if delivered else "pending: the broker is away",
        )
        return ConfigPush(staged.version, delivered)

    async def deliver_pending_config(self, tenant: str, gateway: str) -> bool:
        """Send a CONFIG staged elsewhere (an approval commits it with the meter); True when it went
        to the broker now. :class:`UnknownGateway` for a gateway without a usable link."""
        state = await asyncio.to_thread(self._store.load, tenant, gateway)
        return await self.deliver_config(state)

    async def deliver_config(self, state: LinkState) -> bool:
        if not self._subscriber.can_publish:
            self.stats.downlinks_failed += 1
            return False
        now = datetime.fromtimestamp(self._clock(), UTC)
        try:
            version = await send_config(self._store, state, self.prefix, self._publish_down, now)
        except ConnectError as exc:
            self.stats.downlinks_failed += 1
            log.warning("gateway %s/%s: configuration pending: %s", state.tenant, state.gateway, exc)
            return False
        if version is None:  # another worker took it meanwhile (a HEALTH): sent, or pending again
            return False
        self.stats.configs_sent += 1
        return True
