"""The gateway's uplink: envelopes to the head-end over MQTT, acknowledgements and settings back.

One MQTT connection (MQTT 5 by default, 3.1.1 for brokers such as the embedded amqtt; TLS when the URL
is ``mqtts://``, with the configured CA and an optional client certificate) publishes on
``{prefix}/{tenant}/gw/{id}/link/up`` and subscribes to ``.../link/down``, both at QoS 1. Every message
is an envelope of :mod:`openami.protocols.edge`, sealed under the gateway's link key.

Uplink numbering: one counter for every uplink envelope, persisted in the archive. A batch's number is
its outbox sequence number (:meth:`~openami.edge.archive.Archive.cut_batch`); HEALTH, ALARM and TIME
take the next number of the same counter (:meth:`~openami.edge.archive.Archive.next_seq`), so no two
uplink envelopes ever share a number, across kinds and restarts. A resent batch keeps its number (the
head-end recognises it and acknowledges it again); the other kinds are never resent, so their numbers
are used once. Numbers skipped (a HEALTH that could not be sent) leave gaps, which the head-end's
replay window does not mind.

Store and forward: batches are cut from the archive only while fewer than ``window`` are
unacknowledged, and sent oldest first; a batch is acknowledged only by an ACK naming it, refused only
by an ACK refusing it. A batch still unacknowledged ``ack_timeout_s`` after it was sent is sent again;
after a reconnect every unacknowledged batch is sent again, oldest first. A batch that stayed
unacknowledged while more than :data:`RENUMBER_AFTER` numbers were handed out is renumbered (same
content, a new number: :meth:`~openami.edge.archive.Archive.renumber`) so its number never falls out
of the head-end's 4,096-wide replay window. The archive is the source of truth: nothing is lost to a
link loss, a broker restart or a kill of the agent.

Downlink: envelopes are opened with an :class:`~openami.protocols.edge.Opener` for direction DOWN
whose replay window is persisted in the archive after each accepted envelope; a forged, altered,
reflected or replayed envelope is refused, logged as a security event and counted. ACK, CONFIG, TIME
and COMMAND (the head-end's commands, :mod:`openami.edge.commands`) are taken; an ACK's ``commands``
names the command results the head-end stored, which are then not sent again.

Reconnects back off exponentially with jitter, from ``reconnect_min_s`` up to ``reconnect_max_s``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final

import aiomqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from openami.edge.archive import Archive, OutboxBatch
from openami.edge.config import GatewayConfig
from openami.protocols.edge import (
    Direction,
    EdgeLinkError,
    Kind,
    Opener,
    ReplayError,
    ReplayWindow,
    seal,
)
from openami.protocols.edge.envelope import WINDOW

__all__ = ["QOS", "RENUMBER_AFTER", "Forwarder", "LinkStats", "link_topics"]

log = logging.getLogger(__name__)
security_log = logging.getLogger("openami.security.edge")

QOS: Final = 1
RENUMBER_AFTER: Final = WINDOW // 2
"""Uplink numbers handed out since a pending batch's own, after which it is renumbered."""
_WINDOW_STATE: Final = "downlink_window"
_PUBLISH_TIMEOUT_S: Final = 30.0

ConfigHandler = Callable[[dict[str, Any]], Awaitable[Any]]
TimeHandler = Callable[[dict[str, Any], float], None]
ConnectHandler = Callable[[], None]
CommandHandler = Callable[[dict[str, Any]], Awaitable[None]]


def link_topics(prefix: str, tenant: str, gateway: str) -> tuple[str, str]:
    """(up, down) topics of one gateway."""
    base = f"{prefix}/{tenant}/gw/{gateway}/link"
    return f"{base}/up", f"{base}/down"


@dataclass(slots=True)
class LinkStats:
    """Counters for the gateway's health report and logs."""

    connects: int = 0
    batches_sent: int = 0
    batches_resent: int = 0
    batches_acked: int = 0
    batches_refused: int = 0
    batches_renumbered: int = 0
    envelopes_sent: dict[str, int] = field(default_factory=dict)
    downlinks_accepted: int = 0
    downlinks_refused: int = 0
    last_refusal: str | None = None
    last_error: str | None = None
    connected_since: float | None = None


def _tls_context(config: GatewayConfig) -> ssl.SSLContext:
    uplink = config.uplink
    context = ssl.create_default_context(cafile=str(uplink.ca_file) if uplink.ca_file else None)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if uplink.client_cert_file is not None and uplink.client_key_file is not None:
        context.load_cert_chain(str(uplink.client_cert_file), str(uplink.client_key_file))
    return context


def _refused(code: int | ReasonCode) -> bool:
    return (code.value if isinstance(code, ReasonCode) else code) >= 0x80


def _load_window(archive: Archive) -> ReplayWindow:
    stored = archive.get_state(_WINDOW_STATE)
    if stored is None:
        return ReplayWindow()
    state = json.loads(stored)
    return ReplayWindow(int(state["highest"]), int(state["mask"], 16))


def _save_window(archive: Archive, window: ReplayWindow) -> None:
    archive.set_state(_WINDOW_STATE, json.dumps({"highest": window.highest, "mask": f"{window.mask:x}"}))


class Forwarder:
    """The gateway's MQTT link (module docstring). ``on_config`` gets CONFIG payloads, ``on_time`` TIME
    answers with the monotonic time they arrived, ``on_command`` COMMAND payloads, ``on_connect`` is
    called after each (re)connect."""

    def __init__(
        self,
        config: GatewayConfig,
        archive: Archive,
        *,
        on_config: ConfigHandler | None = None,
        on_time: TimeHandler | None = None,
        on_connect: ConnectHandler | None = None,
        on_command: CommandHandler | None = None,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.config = config
        self.archive = archive
        self.topic_up, self.topic_down = link_topics(config.uplink.topic_prefix, config.tenant, config.id)
        self._key = config.uplink.link_key
        self._opener = Opener(self._key, config.id, direction=Direction.DOWN, window=_load_window(archive))
        self._on_config, self._on_time, self._on_connect = on_config, on_time, on_connect
        self.on_command = on_command
        self._now = now
        self._client: aiomqtt.Client | None = None
        self._task: asyncio.Task[None] | None = None
        self._wakeup = asyncio.Event()
        self._cut_due = True
        self._in_flight: dict[int, float] = {}  # batch seq -> monotonic time sent
        self._connected = asyncio.Event()
        self.stats = LinkStats()

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    async def wait_connected(self, timeout_s: float) -> bool:
        try:
            async with asyncio.timeout(timeout_s):
                await self._connected.wait()
        except TimeoutError:
            return False
        return True

    async def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=f"gateway-link-{self.config.id}")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._connected.clear()

    def wake(self, *, cut: bool = True) -> None:
        """Look at the outbox now (after a poll round: ``cut`` the new readings into batches)."""
        self._cut_due = self._cut_due or cut
        self._wakeup.set()

    async def send(self, kind: Kind, payload: dict[str, Any]) -> int | None:
        """Send a HEALTH, ALARM, TIME or COMMAND envelope now with a fresh number; None when the link is
        down (these kinds are not queued here: the next report, the batch carrying the same events, or
        the command result kept in the archive follows)."""
        client = self._client
        if client is None or not self.connected:
            return None
        seq = await asyncio.to_thread(self.archive.next_seq)
        body = json.dumps(payload, separators=(",", ":")).encode()
        try:
            await self._publish(client, kind, seq, body)
        except aiomqtt.MqttError as exc:
            log.info("%s %d not sent: %s", kind.name, seq, exc)
            return None
        return seq

    # -- connection ---------------------------------------------------------------------------------

    def _make_client(self) -> aiomqtt.Client:
        uplink = self.config.uplink
        identifier = uplink.client_id or f"openami-gw-{self.config.tenant}-{self.config.id}"
        persistent = uplink.session_expiry_s > 0
        common: dict[str, Any] = {
            "username": uplink.username,
            "password": uplink.mqtt_password,
            "identifier": identifier,
            "keepalive": uplink.keepalive_s,
            "timeout": 10.0,
            "tls_context": _tls_context(self.config) if uplink.tls else None,
        }
        if uplink.mqtt_version == "5":
            properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
            properties.SessionExpiryInterval = uplink.session_expiry_s
            return aiomqtt.Client(
                uplink.host,
                uplink.port,
                protocol=aiomqtt.ProtocolVersion.V5,
                clean_start=not persistent,
                properties=properties,
                **common,
            )
        return aiomqtt.Client(
            uplink.host,
            uplink.port,
            protocol=aiomqtt.ProtocolVersion.V311,
            clean_session=not persistent,
            **common,
        )

    async def _run(self) -> None:
        uplink = self.config.uplink
        delay = uplink.reconnect_min_s
        while True:
            try:
                async with self._make_client() as client:
                    granted = await client.subscribe(self.topic_down, qos=QOS)
                    if any(_refused(code) for code in granted):
                        raise aiomqtt.MqttError(
                            "the broker refused the link/down subscription (check its ACL)"
                        )
                    self._client = client
                    self._in_flight.clear()  # whatever was in flight is sent again, oldest first
                    self._cut_due = True
                    self.stats.connects += 1
                    self.stats.connected_since = time.time()
                    self._connected.set()
                    delay = uplink.reconnect_min_s
                    log.info("gateway %s linked to %s", self.config.id, uplink.display)
                    if self._on_connect is not None:
                        self._on_connect()
                    await self._serve(client)
            except (aiomqtt.MqttError, OSError, ssl.SSLError) as exc:
                self.stats.last_error = str(exc) or type(exc).__name__
            except Exception as exc:  # the archive failing (disk full ...): log it, keep the link alive
                log.exception("gateway link failed")
                self.stats.last_error = f"{type(exc).__name__}: {exc}"
            finally:
                self._client = None
                self._connected.clear()
                self.stats.connected_since = None
            pause = delay * random.uniform(0.5, 1.0)  # jitter: gateways do not all come back at once
            log.warning(
                "gateway link to %s down (%s); retrying in %.1f s",
                uplink.display,
                self.stats.last_error,
                pause,
            )
            await asyncio.sleep(pause)
            delay = min(delay * 2, uplink.reconnect_max_s)

    async def _serve(self, client: aiomqtt.Client) -> None:
        """Receive and send until either side fails; the failure ends the connection."""
        tasks = [
            asyncio.create_task(self._receive(client), name="gateway-link-receive"),
            asyncio.create_task(self._pump_loop(client), name="gateway-link-send"),
        ]
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        for task in done:
            task.result()  # re-raise the MqttError that ended it
        raise aiomqtt.MqttError("gateway link tasks ended")

    async def _publish(self, client: aiomqtt.Client, kind: Kind, seq: int, payload: bytes) -> None:
        compression = self.config.compression_code
        if len(payload) > 64 * 1024:  # compressing and sealing a big batch: not on the event loop
            envelope = await asyncio.to_thread(
                seal, self._key, self.config.id, kind, seq, payload, compression=compression
            )
        else:
            envelope = seal(self._key, self.config.id, kind, seq, payload, compression=compression)
        await client.publish(self.topic_up, envelope, qos=QOS, timeout=_PUBLISH_TIMEOUT_S)
        self.stats.envelopes_sent[kind.name] = self.stats.envelopes_sent.get(kind.name, 0) + 1

    # -- sending ------------------------------------------------------------------------------------

    async def _pump_loop(self, client: aiomqtt.Client) -> None:
        uplink = self.config.uplink
        tick = min(self.config.forward_interval_s, uplink.ack_timeout_s)
        next_cut = time.monotonic() + self.config.forward_interval_s
        while True:
            await self._pump(client)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wakeup.wait(), max(0.05, min(tick, next_cut - time.monotonic())))
            self._wakeup.clear()
            if time.monotonic() >= next_cut:
                self._cut_due = True
                next_cut = time.monotonic() + self.config.forward_interval_s

    async def _pump(self, client: aiomqtt.Client) -> None:
        window = self.config.uplink.window
        if self._cut_due:
            self._cut_due = False
            while len(await asyncio.to_thread(self.archive.pending, window)) < window:
                cut = await asyncio.to_thread(
                    self.archive.cut_batch, self._now(), max_readings=self.config.batch_readings
                )
                if cut is None:
                    break
        pending = await asyncio.to_thread(self.archive.pending, window)
        waiting = {batch.seq for batch in pending}
        # Forget what was acknowledged; entries are dropped here and not when the ACK arrives, so an
        # ACK landing while this loop walks its snapshot never makes an acknowledged batch look unsent.
        self._in_flight = {seq: at for seq, at in self._in_flight.items() if seq in waiting}
        last_seq = await asyncio.to_thread(self.archive.last_seq) if pending else 0
        for old in pending:
            batch = await self._renumber(old) if last_seq - old.seq > RENUMBER_AFTER else old
            if batch is None:
                continue
            sent_at = self._in_flight.get(batch.seq)
            if sent_at is not None and time.monotonic() - sent_at < self.config.uplink.ack_timeout_s:
                continue
            await self._publish(client, Kind.BATCH, batch.seq, batch.payload)
            self._in_flight[batch.seq] = time.monotonic()
            await asyncio.to_thread(self.archive.mark_sent, batch.seq)
            self.stats.batches_sent += 1
            if batch.sent_count > 0 or sent_at is not None:
                self.stats.batches_resent += 1

    async def _renumber(self, batch: OutboxBatch) -> OutboxBatch | None:
        renumbered = await asyncio.to_thread(self.archive.renumber, batch.seq, self._now())
        self._in_flight.pop(batch.seq, None)
        if renumbered is not None:
            self.stats.batches_renumbered += 1
            log.warning("batch %d unacknowledged for long: sent again as %d", batch.seq, renumbered.seq)
        return renumbered

    # -- receiving ----------------------------------------------------------------------------------

    async def _receive(self, client: aiomqtt.Client) -> None:
        async for message in client.messages:
            arrived = time.monotonic()
            payload = message.payload
            data = bytes(payload) if isinstance(payload, bytes | bytearray) else str(payload or "").encode()
            await self.handle_downlink(data, arrived)

    def _refuse(self, reason: str) -> None:
        self.stats.downlinks_refused += 1
        self.stats.last_refusal = reason
        security_log.warning("gateway %s refused a downlink envelope: %s", self.config.id, reason)

    async def handle_downlink(self, data: bytes, arrived: float | None = None) -> bool:
        """Open and apply one downlink envelope; False when it was refused (forged, replayed ...)."""
        arrived = time.monotonic() if arrived is None else arrived
        try:
            envelope = self._opener.open(data, accept=False)
        except ReplayError as exc:
            self._refuse(f"replay: {exc}")
            return False
        except EdgeLinkError as exc:
            self._refuse(f"{type(exc).__name__}: {exc}")
            return False
        try:
            body = json.loads(envelope.payload)
            if not isinstance(body, dict):
                raise TypeError("the payload is no JSON object")
            if envelope.kind is Kind.ACK:
                await self._acknowledge(body)
            elif envelope.kind is Kind.CONFIG:
                if self._on_config is not None:
                    await self._on_config(body)
            elif envelope.kind is Kind.TIME:
                if self._on_time is not None:
                    self._on_time(body, arrived)
            elif envelope.kind is Kind.COMMAND and self.on_command is not None:
                await self.on_command(body)
            else:
                log.warning("downlink %s %d not supported by this gateway", envelope.kind.name, envelope.seq)
        except (ValueError, TypeError, KeyError) as exc:
            # Authentic but unusable: accept the number (a resend would not fix it) and say so.
            log.warning("downlink %s %d unusable: %s", envelope.kind.name, envelope.seq, exc)
        self._opener.accept(envelope.seq)
        await asyncio.to_thread(_save_window, self.archive, self._opener.window)
        self.stats.downlinks_accepted += 1
        return True

    async def _acknowledge(self, body: dict[str, Any]) -> None:
        acked = [int(seq) for seq in body.get("acked", [])]
        refused = {int(seq): str(reason) for seq, reason in dict(body.get("refused", {})).items()}
        commands = [int(command_id) for command_id in body.get("commands", [])]
        now = self._now()
        if commands:
            await asyncio.to_thread(self.archive.acknowledge_commands, commands, now)
        if acked:
            self.stats.batches_acked += await asyncio.to_thread(self.archive.acknowledge, acked, now)
        if refused:
            newly = await asyncio.to_thread(self.archive.refuse, refused, now)
            self.stats.batches_refused += newly
            for seq, reason in refused.items():
                log.error("head-end refused batch %d: %s (not sent again)", seq, reason)
        self.wake(cut=True)  # room in the window: cut and send the next
