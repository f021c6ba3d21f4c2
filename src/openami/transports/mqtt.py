"""MQTT connection settings from one URL, so every MQTT user in OpenAMI connects the same way.

``mqtt://user:pass@host:port`` is the single form configuration carries (``OPENAMI_MQTT_URL``); the
listener, the simulator and the CLI all go through :func:`make_client` instead of each assembling
:class:`aiomqtt.Client` arguments, so TLS, credentials and keep-alive behave identically everywhere.
"""

from __future__ import annotations

import ssl
import uuid
from typing import Any, NamedTuple
from urllib.parse import unquote, urlsplit

import aiomqtt

DEFAULT_PORTS = {"mqtt": 1883, "mqtts": 8883}
DEFAULT_KEEPALIVE_S = 30


class MqttEndpoint(NamedTuple):
    """Where and as whom to connect; a tuple so it unpacks as ``host, port, user, password, tls``."""

    host: str
    port: int
    username: str | None
    password: str | None
    tls: bool

    @property
    def display(self) -> str:
        """The URL without credentials, safe for logs and error messages."""
        return f"{'mqtts' if self.tls else 'mqtt'}://{self.host}:{self.port}"


def parse_mqtt_url(url: str) -> MqttEndpoint:
    """Split an ``mqtt://`` or ``mqtts://`` URL; percent-escapes in credentials are decoded.

    Raises ValueError for any other scheme or a missing host, so a typo fails at startup.
    """
    parts = urlsplit(url)
    if parts.scheme not in DEFAULT_PORTS:
        raise ValueError(f"not an MQTT URL (expected mqtt:// or mqtts://): {url!r}")
    if not parts.hostname:
        raise ValueError(f"MQTT URL has no host: {url!r}")
    return MqttEndpoint(
        host=parts.hostname,
        port=parts.port or DEFAULT_PORTS[parts.scheme],
        username=unquote(parts.username) if parts.username is not None else None,
        password=unquote(parts.password) if parts.password is not None else None,
        tls=parts.scheme == "mqtts",
    )


def make_client(
    url: str,
    *,
    client_id: str | None = None,
    keepalive_s: int = DEFAULT_KEEPALIVE_S,
    persistent_session: bool = False,
    mqtt5: bool = False,
    timeout_s: float | None = None,
) -> aiomqtt.Client:
    """An unconnected MQTT 3.1.1 (or, with ``mqtt5``, MQTT 5) client for ``url``; connect it with
    ``async with``.

    Without ``client_id`` a random ``openami-<hex>`` id is used, so two processes never kick each other
    off the broker. ``persistent_session`` (clean_session=0, or clean_start=0 on MQTT 5) makes the broker
    keep subscriptions and queue QoS 1 messages while we are away; it needs a stable ``client_id``.
    """
    if persistent_session and client_id is None:
        raise ValueError("a persistent MQTT session needs a fixed client_id")
    endpoint = parse_mqtt_url(url)
    common: dict[str, Any] = {
        "username": endpoint.username,
        "password": endpoint.password,
        "identifier": client_id or f"openami-{uuid.uuid4().hex[:12]}",
        "keepalive": keepalive_s,
        "tls_context": ssl.create_default_context() if endpoint.tls else None,
    }
    if timeout_s is not None:
        common["timeout"] = timeout_s
    if mqtt5:
        return aiomqtt.Client(
            endpoint.host,
            endpoint.port,
            protocol=aiomqtt.ProtocolVersion.V5,
            clean_start=not persistent_session,
            **common,
        )
    return aiomqtt.Client(endpoint.host, endpoint.port, clean_session=not persistent_session, **common)
