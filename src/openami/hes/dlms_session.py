"""Opening a DLMS session with a target meter: the association its endpoint and secrets call for.

Kept apart from the collector because commands (disconnect, clock, firmware) open sessions the same way:
HLS-GMAC with every APDU glo-ciphered when the meter has keys (the production setting), LLS with its
password, or the public client without security. Ciphered sessions take their invocation counters from
an :class:`InvocationCounters` (the head-end's store, :mod:`openami.hes.dlms_counters`, by default; the
gateway keeps its own in its archive), so a meter never sees one twice.

A target whose address is ``fep://`` or ``fep+hdlc://`` is not dialled: the session borrows the
connection the device holds at the front-end processor (:mod:`openami.hes.fep`), waiting at most
``fep_wait_s`` while another session uses it, and gives it back at the end. A device that holds no
connection (or stays busy) fails the session with
:class:`~openami.drivers.dlms.errors.DlmsUnreachable`, as a meter that does not answer a dial does.

A target whose address is ``hdlc+serial://`` is read on the reader's own tty (an RS-485 bus, an optical
probe). The meters on one bus share the line and HDLC cannot tell two masters apart, so sessions on the
same path take turns (one lock per path) however many a collection round runs at once.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from typing import Final, Protocol

from sqlalchemy import Engine

from openami.drivers.dlms.client import DlmsClient
from openami.drivers.dlms.errors import DlmsAuthFailed, DlmsUnreachable
from openami.drivers.dlms.transport import ByteReader, ByteWriter
from openami.hes.dlms_counters import CounterStore
from openami.hes.dlms_targets import DlmsTarget
from openami.hes.fep import FepLine, FepUnavailable, FrontEndProcessor
from openami.protocols.dlms.acse import Mechanism
from openami.protocols.dlms.association import ClientAssociation
from openami.protocols.dlms.security import SecurityControl

__all__ = [
    "DlmsSessions",
    "InvocationCounters",
    "SessionOpener",
    "StoredCounters",
    "association_for",
]

_CIPHERED: Final = SecurityControl(suite=0, authenticated=True, encrypted=True)
FEP_WAIT_S: Final = 30.0
"""Default longest wait for a device's FEP connection while another session of it runs."""

SessionOpener = Callable[[DlmsTarget], AbstractAsyncContextManager[DlmsClient]]
"""``async with opener(target) as client``: a connected, associated session, released on exit
(:meth:`DlmsSessions.open`); what the collector is given so that where its keys and counters come from
is the caller's choice."""


class InvocationCounters(Protocol):
    """Blocks of invocation counters per (meter, client system title), kept between sessions: a session
    reserves a block before it starts and gives back the unused rest at its end (blocking calls)."""

    def reserve(self, target: DlmsTarget, client_title: bytes) -> int:
        """The first counter of a new block of this session's own."""
        ...

    def release(self, target: DlmsTarget, client_title: bytes, start: int, last_used: int | None) -> None:
        """Give back what the session that reserved at ``start`` did not use."""
        ...


class StoredCounters:
    """:class:`InvocationCounters` in the head-end's store (:class:`~openami.hes.dlms_counters.CounterStore`,
    keyed by the meter's id)."""

    def __init__(self, engine: Engine) -> None:
        self._store = CounterStore(engine)

    def reserve(self, target: DlmsTarget, client_title: bytes) -> int:
        return self._store.reserve(target.tenant_id, target.meter_id, client_title)

    def release(self, target: DlmsTarget, client_title: bytes, start: int, last_used: int | None) -> None:
        self._store.release(target.meter_id, client_title, start, last_used)


def association_for(
    target: DlmsTarget, client_system_title: bytes, invocation_counter_start: int = 1
) -> ClientAssociation:
    """A fresh association for one session with ``target`` (an association is used once)."""
    endpoint, secrets = target.endpoint, target.secrets
    if endpoint.auth == "none":
        return ClientAssociation(endpoint.client_sap, endpoint.server_sap)
    if secrets is None:
        raise DlmsAuthFailed(f"{target.serial}: no keys in the key vault")
    if endpoint.auth == "lls":
        if secrets.password is None:
            raise DlmsAuthFailed(f"{target.serial}: no LLS password in the key vault")
        return ClientAssociation(
            endpoint.client_sap, endpoint.server_sap, mechanism=Mechanism.LOW, password=secrets.password
        )
    if secrets.encryption_key is None or secrets.authentication_key is None:
        raise DlmsAuthFailed(f"{target.serial}: HLS needs both the EK and the AK in the key vault")
    return ClientAssociation(
        endpoint.client_sap,
        endpoint.server_sap,
        mechanism=Mechanism.HIGH_GMAC,
        system_title=client_system_title,
        encryption_key=secrets.encryption_key,
        authentication_key=secrets.authentication_key,
        security=_CIPHERED,
        invocation_counter_start=invocation_counter_start,
    )


class DlmsSessions:
    """Opens sessions as this head-end (``client_system_title``), with persisted invocation counters.

    ``counters``: where they are kept (None: in ``engine``'s store, :class:`StoredCounters`). ``fep``: the
    front-end processor holding the connections of ``fep://`` targets (None: such targets fail as
    unreachable).
    """

    def __init__(
        self,
        engine: Engine | None,
        client_system_title: bytes,
        timeout_s: float,
        *,
        counters: InvocationCounters | None = None,
        fep: FrontEndProcessor | None = None,
        fep_wait_s: float = FEP_WAIT_S,
    ) -> None:
        self.client_system_title = client_system_title
        self.timeout_s = timeout_s
        self.fep = fep
        self.fep_wait_s = fep_wait_s
        if counters is None:
            if engine is None:
                raise ValueError("DlmsSessions needs the store's engine or its own invocation counters")
            counters = StoredCounters(engine)
        self._counters: InvocationCounters = counters
        self._lines: dict[str, asyncio.Lock] = {}

    @contextlib.asynccontextmanager
    async def open(self, target: DlmsTarget) -> AsyncIterator[DlmsClient]:
        """``async with sessions.open(target) as client``: connected, associated, released on exit."""
        endpoint = target.endpoint
        ciphered = endpoint.auth == "hls"
        start = 1
        if ciphered:
            start = await asyncio.to_thread(self._counters.reserve, target, self.client_system_title)
        association = association_for(target, self.client_system_title, start)
        try:
            async with contextlib.AsyncExitStack() as stack:
                if endpoint.via == "fep":
                    line = await self._borrow(stack, target)
                    client = self._fep_client(target, association, line)
                elif endpoint.via == "serial":
                    await stack.enter_async_context(self._lines.setdefault(endpoint.host, asyncio.Lock()))
                    client = DlmsClient.serial(
                        endpoint.host,
                        association,
                        server_address=endpoint.physical_address,
                        baudrate=endpoint.baudrate,
                        timeout=self.timeout_s,
                    )
                elif endpoint.framing == "hdlc":
                    client = DlmsClient.hdlc_tcp(
                        endpoint.host,
                        endpoint.port,
                        association,
                        server_address=endpoint.physical_address,
                        timeout=self.timeout_s,
                    )
                else:
                    client = DlmsClient(endpoint.host, endpoint.port, association, timeout=self.timeout_s)
                yield await stack.enter_async_context(client)
        finally:
            if ciphered:
                await asyncio.to_thread(
                    self._counters.release,
                    target,
                    self.client_system_title,
                    start,
                    association.last_invocation_counter,
                )

    async def _borrow(self, stack: contextlib.AsyncExitStack, target: DlmsTarget) -> FepLine:
        """The device's FEP connection, lent until ``stack`` closes; :class:`DlmsUnreachable` when the
        device holds none here or it stays busy."""
        ident = target.endpoint.host
        if self.fep is None:
            raise DlmsUnreachable(f"{target.serial}: fep://{ident}: no front-end processor is running")
        try:
            return await stack.enter_async_context(
                self.fep.lend(ident, self.fep_wait_s, tenant_id=target.tenant_id)
            )
        except FepUnavailable as exc:
            raise DlmsUnreachable(f"{target.serial}: {exc}") from exc

    def _fep_client(self, target: DlmsTarget, association: ClientAssociation, line: FepLine) -> DlmsClient:
        endpoint = target.endpoint

        async def opener() -> tuple[ByteReader, ByteWriter]:
            return line, line

        if endpoint.framing == "hdlc":
            return DlmsClient.hdlc_stream(
                opener,
                association,
                peer=line.peer,
                server_address=endpoint.physical_address,
                timeout=self.timeout_s,
            )
        return DlmsClient.wrapper_stream(opener, association, peer=line.peer, timeout=self.timeout_s)
