"""The head-end's pull collection for consumer-port meters: DSMR P1 and SML, behind a TCP bridge.

A meter is read when its ``protocol`` is ``dsmr`` or ``sml``, it is active, and its communication device
(the P1 dongle, ser2net or optical-head bridge in front of the port) has an address
``dsmr+tcp://host:port`` or ``sml+tcp://host:port``. An encrypted P1 port (Luxembourg, Austria) is
``dsmr+tcp://host:port?encrypted=1``; its keys are the meter's encryption key (EK) and authentication key
(AK) in the key vault (an EK alone: the tag is not checked, see
:mod:`openami.protocols.dsmr.encrypted`), or carried by the target itself (:attr:`P1Target.keys`: a
gateway takes them from its configuration, it has no vault).

These ports push and never answer, so a read is: connect, take the next complete telegram (CRC
checked; broken ones are skipped until ``telegram_s``), disconnect. A round holds a connection per meter
for up to one push interval, so meters are read in parallel, at most ``concurrency`` at once.

Each measured value becomes a register series on the meter being read, the channel named by its OBIS
code as the DSMR and SML exports name them (``1-0:1.8.1``; the gas meter on M-Bus channel 1 is
``0-1:24.2.1``, on the electricity meter that reports it), in base units (Wh, W, V, A, m3). Values are
stamped with the telegram's own clock (DSMR 0-0:1.0.0; the gas value with its capture time), and with
the time the telegram arrived when it has none (DSMR 2.2/3, SML meters that send a second counter).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, tzinfo
from typing import Final, Literal, TypeVar
from urllib.parse import parse_qs, urlsplit

from sqlalchemy import Engine

from openami.bus.base import Publisher
from openami.bus.messages import Series
from openami.drivers.p1 import SML, P1DriverError, PortKind, dsmr, open_tcp
from openami.hes.rounds import MeterOutcome, RoundReport, publish_read
from openami.hes.targets import MeterRow, load_targets
from openami.protocols.dsmr import DsmrTelegram, P1Keys, readings
from openami.protocols.dsmr.telegram import DEFAULT_TZ
from openami.protocols.sml import SmlFile, values
from openami.security.errors import SecurityError
from openami.security.keyvault import KeyVault

__all__ = [
    "DSMR_PROTOCOL",
    "SML_PROTOCOL",
    "P1Collector",
    "P1Target",
    "load_p1_targets",
    "target_from_row",
    "telegram_series",
]

log = logging.getLogger(__name__)

DSMR_PROTOCOL: Final = "dsmr"
SML_PROTOCOL: Final = "sml"
PortProtocol = Literal["dsmr", "sml"]
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class P1Target:
    tenant_id: int
    tenant: str
    meter_id: int
    serial: str
    protocol: PortProtocol
    host: str
    port: int
    encrypted: bool = False
    keys: P1Keys | None = field(default=None, compare=False)
    """An encrypted port's keys, when the target brings them (None: looked up in the key vault)."""


def _endpoint(address: str, protocol: PortProtocol) -> tuple[str, int, bool]:
    parts = urlsplit(address.strip())
    expected = f"{protocol}+tcp://host:port" + ("[?encrypted=1]" if protocol == DSMR_PROTOCOL else "")
    if parts.scheme != f"{protocol}+tcp" or not parts.hostname:
        raise ValueError(f"{address!r}: expected {expected}")
    try:
        port = parts.port
    except ValueError:
        port = None
    if port is None:
        raise ValueError(f"{address!r}: expected {expected}")
    query = parse_qs(parts.query)
    unknown = set(query) - ({"encrypted"} if protocol == DSMR_PROTOCOL else set())
    if unknown:
        raise ValueError(f"{address!r}: unknown option {', '.join(sorted(unknown))}")
    flag = query.get("encrypted", ["0"])[-1]
    if flag not in ("0", "1"):
        raise ValueError(f"{address!r}: encrypted must be 0 or 1")
    return parts.hostname, port, flag == "1"


def target_from_row(row: MeterRow, protocol: PortProtocol | None = None) -> P1Target:
    """The target of one meter row of ``protocol`` (None: the one its address scheme names,
    ``dsmr+tcp`` or ``sml+tcp``); ``ValueError`` naming the problem when the address is unusable."""
    if protocol is None:
        scheme = urlsplit(row.address.strip()).scheme
        protocol = SML_PROTOCOL if scheme == f"{SML_PROTOCOL}+tcp" else DSMR_PROTOCOL
    host, port, encrypted = _endpoint(row.address, protocol)
    return P1Target(row.tenant_id, row.tenant, row.meter_id, row.serial, protocol, host, port, encrypted)


def _builder(protocol: PortProtocol) -> Callable[[MeterRow], P1Target]:
    return functools.partial(target_from_row, protocol=protocol)


def load_p1_targets(
    engine: Engine, meter_ids: list[int] | None = None
) -> tuple[list[P1Target], list[tuple[str, str]]]:
    """The DSMR and SML meters to read, and (serial, reason) for those that cannot be. Blocking."""
    targets: list[P1Target] = []
    skipped: list[tuple[str, str]] = []
    for protocol in (DSMR_PROTOCOL, SML_PROTOCOL):
        found, refused = load_targets(engine, protocol, _builder(protocol), meter_ids=meter_ids)
        targets += found
        skipped += refused
    return targets, skipped


def _series(serial: str, points: list[tuple[str, str, datetime, float]]) -> list[Series]:
    """One register series per channel; a channel seen twice at one time keeps its first value."""
    by_channel: dict[str, dict[datetime, float]] = defaultdict(dict)
    units: dict[str, str] = {}
    for channel, unit, ts, value in points:
        by_channel[channel].setdefault(ts, value)
        units.setdefault(channel, unit)
    return [
        Series(
            meter=serial,
            channel=channel,
            unit=units[channel],
            kind="register",
            points=[(ts, value, 0) for ts, value in stamped.items()],
        )
        for channel, stamped in by_channel.items()
    ]


def telegram_series(frame: DsmrTelegram | SmlFile, serial: str, received_at: datetime) -> list[Series]:
    """The register series of one telegram or SML file, on meter ``serial`` (module docstring)."""
    points: list[tuple[str, str, datetime, float]] = []
    if isinstance(frame, DsmrTelegram):
        # M-Bus values would go to the sub-meter's own id: here they stay on the meter being read.
        points = [(r.channel, r.unit, r.ts, r.value) for r in readings(frame, received_at=received_at)]
    else:
        for r in values(frame):
            value = r.value
            if (
                r.obis is None
                or r.unit is None
                or isinstance(value, bool)
                or not isinstance(value, int | float)
            ):
                continue  # ids, status words, texts: not measurements
            points.append((r.name, r.unit, r.timestamp or received_at, float(value)))
    return _series(serial, points)


def _utcnow() -> datetime:
    return datetime.now(UTC)


class P1Collector:
    """Reads consumer-port meters (at most ``concurrency`` at once) and publishes their values.

    ``vault`` holds the keys of encrypted P1 meters whose target carries none; without one, those
    meters fail with ``MissingKey``.
    """

    def __init__(
        self,
        engine: Engine | None,
        bus: Publisher,
        *,
        vault: KeyVault | None = None,
        connect_s: float = 5.0,
        telegram_s: float = 30.0,
        concurrency: int = 32,
        tz: tzinfo = DEFAULT_TZ,
        now: Callable[[], datetime] = _utcnow,
    ) -> None:
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        self._engine, self._bus, self._vault = engine, bus, vault
        self.connect_s, self.telegram_s, self.concurrency = connect_s, telegram_s, concurrency
        self.tz = tz
        self._now = now

    async def collect_all(self) -> RoundReport:
        if self._engine is None:
            raise RuntimeError("collect_all needs the store's engine; without one, call collect(targets)")
        targets, skipped = await asyncio.to_thread(load_p1_targets, self._engine)
        for serial, reason in skipped:
            log.warning("P1/SML meter %s skipped: %s", serial, reason)
        return await self.collect(targets)

    async def collect(self, targets: Sequence[P1Target]) -> RoundReport:
        started = time.perf_counter()
        report = RoundReport(meters=len(targets))
        encrypted = [t for t in targets if t.encrypted]
        keys: dict[int, P1Keys | str] = {t.meter_id: t.keys for t in encrypted if t.keys is not None}
        keys.update(await asyncio.to_thread(self._keys, [t for t in encrypted if t.keys is None]))
        limit = asyncio.Semaphore(self.concurrency)

        async def one(target: P1Target) -> None:
            async with limit:
                report.add(await self._read(target, keys.get(target.meter_id)))

        await asyncio.gather(*(one(t) for t in targets))
        report.seconds = round(time.perf_counter() - started, 3)
        return report

    def _keys(self, targets: list[P1Target]) -> dict[int, P1Keys | str]:
        """Each encrypted meter's keys, or why there are none. Blocking (the vault reads the store)."""
        if not targets:
            return {}
        if self._vault is None:
            return {t.meter_id: "MissingKey: no key vault for encrypted P1" for t in targets}
        by_tenant: dict[int, list[int]] = defaultdict(list)
        for target in targets:
            by_tenant[target.tenant_id].append(target.meter_id)
        found: dict[int, P1Keys | str] = {}
        for tenant_id, meter_ids in by_tenant.items():
            try:
                secrets = self._vault.meter_secrets(tenant_id, meter_ids)
            except SecurityError as exc:
                found.update((m, f"{type(exc).__name__}: {exc}") for m in meter_ids)
                continue
            for meter_id in meter_ids:
                stored = secrets.get(meter_id)
                if stored is None or stored.encryption_key is None:
                    found[meter_id] = "MissingKey: no encryption key in the key vault"
                    continue
                try:
                    found[meter_id] = P1Keys(stored.encryption_key, stored.authentication_key)
                except ValueError as exc:
                    found[meter_id] = f"BadKey: {exc}"
        return found

    async def _next(self, target: P1Target, kind: PortKind[T]) -> T:
        reader = await open_tcp(
            target.host, target.port, kind, connect_s=self.connect_s, telegram_s=self.telegram_s
        )
        async with reader:
            return await reader.next()

    async def _read(self, target: P1Target, keys: P1Keys | str | None) -> MeterOutcome:
        outcome = MeterOutcome(target.serial)
        if isinstance(keys, str):
            outcome.error = keys
            return outcome
        try:
            frame: DsmrTelegram | SmlFile = await (
                self._next(target, SML)
                if target.protocol == SML_PROTOCOL
                else self._next(target, dsmr(keys, tz=self.tz))
            )
        except P1DriverError as exc:
            outcome.error = f"{type(exc).__name__}: {exc}"
            return outcome
        received_at = self._now()
        series = telegram_series(frame, target.serial, received_at)
        await publish_read(self._bus, target.protocol, target.tenant, target.serial, received_at, series)
        outcome.ok, outcome.readings = True, sum(len(s.points) for s in series)
        return outcome
