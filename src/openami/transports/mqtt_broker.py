"""The embedded MQTT broker: amqtt (MQTT 3.1.1) inside the OpenAMI process.

It makes the default install self-contained: gateways and the simulator publish to it and the HES
listener subscribes, with no Mosquitto to install. It is for development and small sites; production
sites point ``OPENAMI_MQTT_URL`` at a real broker. Because it accepts anonymous clients it refuses to
listen anywhere but loopback.
"""

from __future__ import annotations

import errno
import ipaddress
import logging
from types import TracebackType

from amqtt.broker import Broker
from amqtt.contexts import BrokerConfig, ListenerConfig, ListenerType
from amqtt.errors import BrokerError

from openami.transports.errors import TransportError
from openami.transports.ports import probe_port

PORT_SETTING = "OPENAMI_MQTT_EMBEDDED_PORT"
_ANONYMOUS_AUTH = "amqtt.plugins.authentication.AnonymousAuthPlugin"
# amqtt logs every connection and packet at INFO; "transitions" is the state machine library it uses.
_NOISY_LOGGERS = ("amqtt", "transitions")
# Attempts for port 0: the free port we probe can be taken by someone else before amqtt binds it.
_FREE_PORT_ATTEMPTS = 3


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _bind_string(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class EmbeddedBroker:
    """An amqtt broker on ``host:port``; ``port=0`` picks a free port (read :attr:`port` after start)."""

    def __init__(self, host: str = "127.0.0.1", port: int = 11883) -> None:
        if not _is_loopback(host):
            raise TransportError(
                f"the embedded MQTT broker allows anonymous clients, so it only listens on loopback, "
                f"not {host}; use an external broker (OPENAMI_MQTT_URL) for remote gateways"
            )
        self._host = host
        self._port = port
        self._broker: Broker | None = None

    @property
    def host(self) -> str:
        return self._host

    @property
    def port(self) -> int:
        """The port listened on: the requested one until :meth:`start` resolves port 0.

        A stopped broker keeps it, so starting it again reopens the same port and clients reconnect.
        """
        return self._port

    @property
    def url(self) -> str:
        """The URL clients use to reach this broker (``mqtt://host:port``)."""
        return f"mqtt://{_bind_string(self._host, self._port)}"

    @property
    def running(self) -> bool:
        return self._broker is not None

    async def start(self) -> None:
        """Listen; raises :class:`PortInUseError` when the port is taken."""
        if self._broker is not None:
            return
        for logger_name in _NOISY_LOGGERS:
            logging.getLogger(logger_name).setLevel(logging.WARNING)
        attempts = _FREE_PORT_ATTEMPTS if self._port == 0 else 1
        for attempt in range(1, attempts + 1):
            # amqtt reports a taken port as a logged traceback and a generic BrokerError: probe first.
            port = probe_port(self._host, self._port, PORT_SETTING)
            broker = Broker(self._config(port))
            try:
                await broker.start()
            except BrokerError as exc:
                cause = exc.__cause__
                if isinstance(cause, OSError) and cause.errno == errno.EADDRINUSE and attempt < attempts:
                    continue  # port 0: someone took the probed port before amqtt bound it
                probe_port(self._host, port, PORT_SETTING)  # names the setting if the port is now taken
                raise TransportError(f"embedded MQTT broker failed to start: {exc}") from exc
            self._broker, self._port = broker, port
            return

    async def stop(self) -> None:
        """Disconnect every client and close the listener; safe to call twice."""
        broker, self._broker = self._broker, None
        if broker is not None:
            await broker.shutdown()

    async def __aenter__(self) -> EmbeddedBroker:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    def _config(self, port: int) -> BrokerConfig:
        # Only the anonymous auth plugin: no $SYS topics, no per-packet logging plugins.
        return BrokerConfig(
            listeners={"default": ListenerConfig(type=ListenerType.TCP, bind=_bind_string(self._host, port))},
            plugins={_ANONYMOUS_AUTH: {"allow_anonymous": True}},
        )
