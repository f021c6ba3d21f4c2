"""One long-lived MQTT subscription that survives broker restarts: what every head-end MQTT input shares.

The gateway listener, the ChirpStack (LoRaWAN) listener and the gateway link all need the same things:
connect, subscribe to a few filters, hand each message to a handler, reconnect with capped exponential
backoff and jitter when the broker goes away (so a restarted broker is not hit by every client at
once), fail fast at start-up when the broker cannot be reached at all (a wrong URL should stop the
process, a lost broker later should not), and finish the message being handled when stopped. This class
does exactly that and nothing protocol-specific; while connected it also publishes (answers, downlinks)
on the same connection.

MQTT 5 (``mqtt5=True``) is for external brokers, where shared subscriptions let several head-end
workers split the load; a broker that refuses MQTT 5 (the embedded amqtt speaks 3.1.1) is used with
3.1.1 from then on, with a warning, and the filters are asked again for that version
(``filters(mqtt5)``). ``on_disconnect`` runs before a connection closes (a stop or a broker loss), so a
handler's pending answers can still go out on it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Awaitable, Callable, Sequence
from typing import Final

import aiomqtt
from aiomqtt.exceptions import MqttConnectError
from paho.mqtt.reasoncodes import ReasonCode

from openami.transports.errors import ConnectError
from openami.transports.mqtt import make_client, parse_mqtt_url

__all__ = ["MessageHandler", "MqttSubscriber"]

log = logging.getLogger(__name__)

MessageHandler = Callable[[str, bytes], Awaitable[None]]
"""``handler(topic, payload)``: must not raise for a bad message (a raise is logged and costs only it)."""
Filters = Sequence[tuple[str, int]] | Callable[[bool], Sequence[tuple[str, int]]]
"""(topic filter, QoS) pairs, or a function of whether MQTT 5 is spoken giving them."""
_UNSUPPORTED_PROTOCOL: Final = (1, 132)  # CONNACK: 3.1.1 "unacceptable protocol version", 5 "unsupported"


def _refused(code: int | ReasonCode) -> bool:
    value = code.value if isinstance(code, ReasonCode) else code
    return value >= 0x80


class MqttSubscriber:
    """Subscribes ``filters`` (topic filter, QoS) on the broker at ``url`` and calls ``handler``.

    ``client_id`` makes the session persistent (the broker queues QoS 1 messages while we are away).
    """

    def __init__(
        self,
        url: str,
        filters: Filters,
        handler: MessageHandler,
        *,
        name: str,
        client_id: str | None = None,
        mqtt5: bool = False,
        on_disconnect: Callable[[], Awaitable[None]] | None = None,
        reconnect_min_s: float = 0.5,
        reconnect_max_s: float = 30.0,
        connect_timeout_s: float = 10.0,
    ) -> None:
        parse_mqtt_url(url)  # a malformed URL fails here, not in the background
        self._filters = filters
        self.mqtt5 = mqtt5
        if not self.filters:
            raise ValueError("subscribe to at least one filter")
        self.url = url
        self.name = name
        self._on_disconnect = on_disconnect
        self._handler = handler
        self._client_id = client_id
        self.reconnect_min_s, self.reconnect_max_s = reconnect_min_s, reconnect_max_s
        self._connect_timeout_s = connect_timeout_s
        self._task: asyncio.Task[None] | None = None
        self._client: aiomqtt.Client | None = None
        self._subscribed = asyncio.Event()
        self.last_error = "no answer"
        self.connects = 0

    @property
    def connected(self) -> bool:
        """Subscribed right now (False while reconnecting)."""
        return self._subscribed.is_set()

    @property
    def can_publish(self) -> bool:
        """A connection is open: subscribed, or closing and draining its pending answers."""
        return self._client is not None

    @property
    def filters(self) -> list[tuple[str, int]]:
        """What is (or will be) subscribed, for the protocol version in use."""
        return list(self._filters(self.mqtt5) if callable(self._filters) else self._filters)

    @property
    def mqtt_version(self) -> str:
        return "5" if self.mqtt5 else "3.1.1"

    async def start(self) -> None:
        """Connect and subscribe; :class:`ConnectError` if that fails within the connect timeout."""
        if self._task is not None:
            return
        self._task = asyncio.create_task(self._run(), name=self.name)
        try:
            async with asyncio.timeout(self._connect_timeout_s):
                await self._subscribed.wait()
        except TimeoutError:
            await self.stop()
            where = parse_mqtt_url(self.url).display
            raise ConnectError(f"{self.name}: cannot subscribe at {where}: {self.last_error}") from None

    async def stop(self) -> None:
        """Disconnect; a message being handled is finished first."""
        task, self._task = self._task, None
        if task is None:
            return
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    async def publish(self, topic: str, payload: bytes, *, qos: int = 1, timeout_s: float = 10.0) -> None:
        """Publish on the subscription's connection; :class:`ConnectError` while disconnected or when the
        broker does not take it within ``timeout_s``."""
        client = self._client  # still set while a closing connection drains its pending answers
        if client is None:
            raise ConnectError(f"{self.name}: not connected to {parse_mqtt_url(self.url).display}")
        try:
            await client.publish(topic, payload, qos=qos, timeout=timeout_s)
        except aiomqtt.MqttError as exc:
            raise ConnectError(f"{self.name}: publish on {topic!r} failed: {exc}") from exc

    async def _run(self) -> None:
        delay = self.reconnect_min_s
        while True:
            try:
                async with make_client(
                    self.url,
                    client_id=self._client_id,
                    persistent_session=self._client_id is not None,
                    mqtt5=self.mqtt5,
                    timeout_s=self._connect_timeout_s,
                ) as client:
                    for topic_filter, qos in self.filters:
                        granted = await client.subscribe(topic_filter, qos=qos)
                        if any(_refused(code) for code in granted):
                            raise aiomqtt.MqttError(f"the broker refused {topic_filter!r} (check its ACL)")
                    self._client = client
                    self.connects += 1
                    self._subscribed.set()
                    delay = self.reconnect_min_s
                    log.info(
                        "%s subscribed to %s (MQTT %s)",
                        self.name,
                        ", ".join(f for f, _ in self.filters),
                        self.mqtt_version,
                    )
                    try:
                        async for message in client.messages:
                            await self._handle_to_completion(message)
                    finally:
                        self._subscribed.clear()  # /health says so at once, not after the drain
                        if self._on_disconnect is not None:
                            await self._on_disconnect()  # pending answers go out on this connection
            except MqttConnectError as exc:
                self.last_error = str(exc)
                code = exc.rc.value if isinstance(exc.rc, ReasonCode) else exc.rc
                if self.mqtt5 and code in _UNSUPPORTED_PROTOCOL:
                    log.warning(
                        "%s: the broker at %s does not speak MQTT 5; using 3.1.1",
                        self.name,
                        parse_mqtt_url(self.url).display,
                    )
                    self.mqtt5 = False
                    continue
            except aiomqtt.MqttError as exc:
                self.last_error = str(exc) or type(exc).__name__
            finally:
                self._subscribed.clear()
                self._client = None
            pause = delay * random.uniform(0.5, 1.0)  # jitter: not every client at once after a restart
            log.warning("%s: broker unavailable (%s); retrying in %.1f s", self.name, self.last_error, pause)
            await asyncio.sleep(pause)
            delay = min(delay * 2, self.reconnect_max_s)

    async def _handle_to_completion(self, message: aiomqtt.Message) -> None:
        """Handle one message even if stopped meanwhile, then let the stop proceed."""
        payload = message.payload if isinstance(message.payload, bytes) else str(message.payload).encode()
        handling = asyncio.ensure_future(self._guarded(message.topic.value, payload))
        try:
            await asyncio.shield(handling)
        except asyncio.CancelledError:
            await handling
            raise

    async def _guarded(self, topic: str, payload: bytes) -> None:
        try:
            await self._handler(topic, payload)
        except Exception:
            log.exception("%s: handling a message on %r failed", self.name, topic)
