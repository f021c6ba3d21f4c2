"""The message bus Protocol every service talks through.

Two implementations honour it: :mod:`openami.bus.memory` (in-process, the default) and
:mod:`openami.bus.nats` (NATS JetStream, for scale-out). Delivery is at-least-once: a handler that
returns normally acknowledges its message; one that raises (or calls ``nak``) gets it again, up to
``max_deliver`` times, after which the message is dropped and counted as dead. Consumers must therefore
be idempotent, which the readings store is by design (ARCHITECTURE.md, principle 7).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable


class BusError(Exception):
    """Base of every bus failure (connection lost, publish refused, bad subject)."""


class BusUnavailable(BusError):
    """The bus backend cannot be reached."""


@runtime_checkable
class Message(Protocol):
    """One delivered message; the handler settles it with ack or nak (or by returning / raising)."""

    @property
    def subject(self) -> str: ...

    @property
    def data(self) -> bytes: ...

    @property
    def headers(self) -> Mapping[str, str]: ...

    @property
    def delivery(self) -> int:
        """1 on first delivery, then 2, 3, ... on redeliveries."""
        ...

    async def ack(self) -> None: ...

    async def nak(self, delay_s: float = 0.0) -> None: ...


Handler = Callable[[Message], Awaitable[None]]


@dataclass(frozen=True)
class SubscribeOptions:
    """How a subscription consumes.

    ``durable`` names a consumer group: every subscription with the same durable name shares the work
    (each message goes to one of them), and on NATS the group's position survives restarts.
    """

    durable: str
    max_deliver: int = 5
    ack_wait_s: float = 30.0
    max_in_flight: int = 64


class Subscription(Protocol):
    async def stop(self) -> None:
        """Stop receiving; messages in flight finish first."""
        ...


@dataclass
class BusStats:
    """Counters exposed on /metrics."""

    published: int = 0
    delivered: int = 0
    acked: int = 0
    redelivered: int = 0
    dead: int = 0
    pending: dict[str, int] = field(default_factory=dict)


class Publisher(Protocol):
    """What a producer of messages needs of the bus: ``publish`` alone.

    Drivers and collectors take a Publisher rather than a whole :class:`Bus`, so the gateway agent can
    hand them its archive (:class:`openami.edge.sink.ArchiveSink`) instead. Every Bus is a Publisher.
    """

    async def publish(
        self,
        subject: str,
        data: bytes,
        *,
        headers: Mapping[str, str] | None = None,
        msg_id: str | None = None,
    ) -> None:
        """Publish durably. ``msg_id`` de-duplicates retried publishes of the same message."""
        ...


class Bus(Publisher, Protocol):
    """Publish bytes on a subject; subscribe a handler to a subject pattern (NATS wildcards ``*``, ``>``)."""

    async def start(self) -> None: ...

    async def subscribe(self, subject: str, handler: Handler, options: SubscribeOptions) -> Subscription: ...

    async def drain(self, timeout_s: float = 10.0) -> None:
        """Wait until every published message has been settled (or the timeout passes)."""
        ...

    async def close(self) -> None: ...

    def stats(self) -> BusStats: ...
