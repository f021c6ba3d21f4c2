"""Setting the gateway's M-Bus meters' clocks from the head-end's time.

A meter stamps its historic values (due-day values, monthly storage, load profiles) with its own
clock, so a meter whose clock runs minutes off files a billing value under the wrong day near
midnight. The gateway keeps one disciplined clock (:class:`~openami.edge.timesync.ClockTracker`, set
from the head-end's TIME answers) and, once per ``clock_sync_interval_s`` and only while that clock is
synchronised, brings each M-Bus meter's clock to it:

1. Read the meter (as a poll does) and take its current date/time record (VIF 0x6D, storage 0). The
   record is the meter's local time in ``clock_timezone`` (M-Bus names no zone), to the minute (type F)
   or the second (type I), so the meter's clock lies somewhere in ``[shown, shown + resolution)``: the
   offset is the interval's value nearest zero, and the meter is off only when the whole interval is
   beyond ``clock_threshold_s``. A meter that flags its clock invalid (IV) is off by definition.
2. Set it (:meth:`~openami.drivers.mbus.client.MbusClient.set_time`, in the record's own form) at the
   next boundary of its resolution on the corrected clock (the next full minute for type F, which may
   mean waiting up to a minute, bus released meanwhile), so the meter starts the minute when the
   head-end does, not up to 59 seconds behind.
3. Read it again: an acknowledged set proves only that the frame arrived (write-protected meters
   acknowledge and keep their clock). Then a ``clock_synchronised`` event (info; detail: offset before
   and after, in seconds, and the resolution) or ``clock_sync_failed`` (warning; detail: the offset
   before and the error) goes into the archive and so, with the next batch, to the head-end.

A meter that cannot be read at all gets no event here: that is what ``comm_lost`` is for. A meter
without a date/time record is left alone (logged once). Each bus is held only for its own exchanges
(:meth:`openami.hes.mbus_collector.MbusCollector.bus_lock`), so polls go on between them.

IEC 62056-21 meters with a ``keys.password`` (:class:`IecClockTarget`, :func:`iec_clock_targets`) are
checked the same way: their readout's time ``0.9.1`` and date ``0.9.2`` (local time in
``clock_timezone``, to the second), and when off a programming-mode write
(:func:`openami.drivers.iec62056_21.set_clock`: option select ``1``, the P1 password, W1 to 0.9.1 and
0.9.2) of the corrected time, rounded to the second and taken just before the writes go out, then a
readout again. A refused password is a ``clock_sync_failed`` naming it. Meters without a password
are skipped, since programming mode is closed to them. One converter serves one exchange at a time.
DLMS meters check their clocks in their own collector against the same corrected clock, and the
head-end's ``time_sync`` commands (``openami.hes.commands``) stay the head-end's.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final, Literal
from zoneinfo import ZoneInfo

from openami.drivers.iec62056_21 import Iec62056DriverError, set_clock
from openami.drivers.mbus.client import DATE_TIME_VIF, MbusClient, Resolution
from openami.drivers.mbus.errors import MbusDriverError
from openami.edge.archive import ArchivedEvent
from openami.edge.config import MeterConfig
from openami.edge.sink import ArchiveSink
from openami.edge.timesync import ClockTracker
from openami.hes.iec_collector import IecTarget
from openami.hes.mbus_collector import MbusCollector, MbusTarget
from openami.protocols.iec62056_21 import Readout
from openami.protocols.mbus import MbusError
from openami.protocols.mbus.master import ADDRESS_NETWORK, SecondaryAddress
from openami.protocols.mbus.telegram import MbusTelegram

__all__ = [
    "CLOCK_SYNCHRONISED",
    "CLOCK_SYNC_FAILED",
    "ClockCheck",
    "IecClockTarget",
    "MeterClockSync",
    "MeterTime",
    "iec_clock_targets",
    "iec_meter_time",
    "meter_time",
]

log = logging.getLogger(__name__)

CLOCK_SYNCHRONISED: Final = "clock_synchronised"
CLOCK_SYNC_FAILED: Final = "clock_sync_failed"
_RESOLUTION_S: Final[dict[str, float]] = {"second": 1.0, "minute": 60.0}
_LATE_S: Final = 1.0
"""A set sent more than this after the boundary it was meant for waits for the next one."""
_EARLY_S: Final = 0.25
"""How long before the boundary the bus is taken again (the lock may be held by a poll)."""
_ATTEMPTS: Final = 3

Action = Literal["in_sync", "set", "failed", "no_clock", "unreadable", "unsynchronised"]


@dataclass(frozen=True, slots=True)
class MeterTime:
    """A meter's clock as its telegram shows it: ``epoch`` (None: flagged invalid) and its form."""

    epoch: float | None
    resolution: Resolution

    def offset(self, reference: float) -> float | None:
        """Meter minus ``reference`` (seconds): the value nearest zero of what the shown time allows."""
        if self.epoch is None:
            return None
        low = self.epoch - reference
        high = low + _RESOLUTION_S[self.resolution]
        return 0.0 if low <= 0 <= high else (low if low > 0 else high)


def meter_time(telegram: MbusTelegram, zone: ZoneInfo) -> MeterTime | None:
    """The current date/time record of ``telegram`` (types F and I) in the meter's ``zone``; None when
    the telegram has none."""
    for record in telegram.records:
        if record.vif != DATE_TIME_VIF or record.storage or record.function != "instantaneous":
            continue
        if len(record.raw) not in (4, 6):
            continue
        resolution: Resolution = "minute" if len(record.raw) == 4 else "second"
        if not isinstance(record.value, str):  # IV set: the meter says its clock is not valid
            return MeterTime(None, resolution)
        summer = bool(record.raw[1] & (0x80 if resolution == "minute" else 0x40))
        local = datetime.fromisoformat(record.value).replace(tzinfo=zone)
        if local.dst() is not None and bool(local.dst()) != summer:
            local = local.replace(fold=1)  # the hour the autumn change repeats
        return MeterTime(local.timestamp(), resolution)
    return None


def iec_meter_time(readout: Readout, zone: ZoneInfo) -> MeterTime | None:
    """The clock an IEC 62056-21 readout shows in its time ``0.9.1`` (hhmmss) and date ``0.9.2``
    (YYMMDD) lines, in the meter's ``zone``; None without both or when they are no valid time (the
    last six digits count: some meters put a weekday before the date)."""
    clock, date = readout.find("0.9.1"), readout.find("0.9.2")
    if clock is None or date is None:
        return None
    digits = ["".join(ch for ch in str(v.value) if ch.isdigit())[-6:] for v in (date, clock)]
    try:
        local = datetime.strptime("".join(digits), "%y%m%d%H%M%S").replace(tzinfo=zone)
    except ValueError:
        return None
    return MeterTime(local.timestamp(), "second")


@dataclass(frozen=True, slots=True)
class IecClockTarget:
    """An IEC 62056-21 meter whose clock the gateway may set: its target and programming password."""

    target: IecTarget
    password: str

    @property
    def serial(self) -> str:
        return self.target.serial


def iec_clock_targets(targets: Sequence[IecTarget], meters: Sequence[MeterConfig]) -> list[IecClockTarget]:
    """The IEC ``targets`` whose meter configuration has a ``keys.password``; the others are skipped."""
    passwords = {
        m.serial: m.keys.password.get_secret_value()
        for m in meters
        if m.keys is not None and m.keys.password is not None
    }
    return [IecClockTarget(t, passwords[t.serial]) for t in targets if t.serial in passwords]


@dataclass(slots=True)
class ClockCheck:
    """What one meter's clock check did; ``offset_s`` before, ``after_s`` once set."""

    serial: str
    action: Action
    offset_s: float | None = None
    after_s: float | None = None
    error: str | None = None
    resolution_s: float | None = None
    """How finely the meter shows its clock: 60 (type F) or 1 (type I)."""


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


@dataclass
class MeterClockSync:
    """The daily clock check of the gateway's M-Bus meters (module docstring)."""

    collector: MbusCollector
    sink: ArchiveSink
    clock: ClockTracker
    interval_s: float = 86400.0
    threshold_s: float = 30.0
    zone: str = "UTC"
    sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep
    last_run: float | None = None
    """Monotonic time of the last run that checked meters."""
    _busy: bool = field(default=False, repr=False)
    _no_clock: set[str] = field(default_factory=set, repr=False)

    def due(self, mono: float) -> bool:
        return not self._busy and (self.last_run is None or mono - self.last_run >= self.interval_s)

    async def run_if_due(
        self, targets: Sequence[MbusTarget], iec: Sequence[IecClockTarget] = ()
    ) -> list[ClockCheck] | None:
        """:meth:`run` when an interval has passed since the last run and the clock is synchronised;
        None otherwise (nothing was sent)."""
        if not self.due(time.monotonic()) or not self.clock.read().synchronised:
            return None
        return await self.run(targets, iec)

    async def run(
        self, targets: Sequence[MbusTarget], iec: Sequence[IecClockTarget] = ()
    ) -> list[ClockCheck]:
        """Check (and set where needed) every meter in ``targets`` and ``iec``, lines in parallel."""
        if not self.clock.read().synchronised:
            log.info("meter clocks not checked: the gateway's clock is not synchronised")
            return [
                ClockCheck(serial, "unsynchronised")
                for serial in [*(t.serial for t in targets), *(m.serial for m in iec)]
            ]
        self._busy = True
        self.last_run = time.monotonic()
        try:
            buses: dict[str, list[MbusTarget]] = defaultdict(list)
            for target in targets:
                buses[target.bus].append(target)
            converters: dict[tuple[str, int], list[IecClockTarget]] = defaultdict(list)
            for meter in iec:
                converters[meter.target.host, meter.target.port].append(meter)
            done = await asyncio.gather(
                *(self._bus(members) for members in buses.values()),
                *(self._converter(members) for members in converters.values()),
            )
        finally:
            self._busy = False
        checks = [check for part in done for check in part]
        events = [e for e in (self._event(c) for c in checks) if e is not None]
        if events:
            await self.sink.add_events(events)
        return checks

    async def _bus(self, members: list[MbusTarget]) -> list[ClockCheck]:
        return [await self.check(target) for target in members]

    async def _converter(self, members: list[IecClockTarget]) -> list[ClockCheck]:
        return [await self.check_iec(meter) for meter in members]

    # -- one IEC 62056-21 meter -------------------------------------------------------------------

    async def _read_iec(self, target: IecTarget) -> tuple[MeterTime | None, float]:
        started = self.clock.read().epoch
        readout = await target.read(self.collector.timeout_s)
        ended = self.clock.read().epoch
        return iec_meter_time(readout, ZoneInfo(self.zone)), (started + ended) / 2

    def _corrected_local(self) -> datetime:
        """The corrected time now, rounded to the second, in the meters' zone (naive: as written)."""
        now = round(self.clock.read().epoch)
        return datetime.fromtimestamp(now, UTC).astimezone(ZoneInfo(self.zone)).replace(tzinfo=None)

    async def check_iec(self, meter: IecClockTarget) -> ClockCheck:
        """Read one IEC meter's clock and set it in programming mode when it is off."""
        target = meter.target

        async def set_iec(shown: MeterTime) -> float | None:
            if not self.clock.read().synchronised:
                raise ValueError("the gateway's clock lost its synchronisation")
            await set_clock(
                target.host,
                target.port,
                self._corrected_local,
                address=target.address,
                password=meter.password,
                baudrate=target.line_baudrate,
                connect_s=self.collector.timeout_s,
                answer_s=self.collector.timeout_s,
            )
            again, reference = await self._read_iec(target)
            return None if again is None else again.offset(reference)

        return await self._check(
            target.serial,
            lambda: self._read_iec(target),
            set_iec,
            (Iec62056DriverError,),
            "0.9.1/0.9.2 clock",
        )

    # -- one meter ------------------------------------------------------------------------------

    async def check(self, target: MbusTarget) -> ClockCheck:
        """Read one meter's clock and set it when it is off (no event: :meth:`run` archives them)."""

        async def set_mbus(shown: MeterTime) -> float | None:
            return await self._set(target, shown.resolution)

        return await self._check(
            target.serial,
            lambda: self._read_clock(target, first=True),
            set_mbus,
            (MbusDriverError, MbusError, OSError),
            "date/time record",
        )

    async def _check(
        self,
        serial: str,
        read: Callable[[], Awaitable[tuple[MeterTime | None, float]]],
        set_: Callable[[MeterTime], Awaitable[float | None]],
        errors: tuple[type[Exception], ...],
        record: str,
    ) -> ClockCheck:
        """The steps every protocol shares: read, judge against the threshold, ``set_`` (which reads
        back and returns the offset after, None when the clock is shown invalid), judge again."""
        try:
            shown, reference = await read()
        except errors as exc:
            log.info("meter %s: clock not checked, the meter did not answer: %s", serial, exc)
            return ClockCheck(serial, "unreadable", error=f"{type(exc).__name__}: {exc}")
        if shown is None:
            if serial not in self._no_clock:
                self._no_clock.add(serial)
                log.info("meter %s sends no %s: its clock is not set", serial, record)
            return ClockCheck(serial, "no_clock")
        before = shown.offset(reference)
        step = _RESOLUTION_S[shown.resolution]
        if before is not None and abs(before) <= self.threshold_s:
            return ClockCheck(serial, "in_sync", before, resolution_s=step)
        failures: tuple[type[Exception], ...] = (*errors, ValueError)
        try:
            after = await set_(shown)
        except failures as exc:
            error = f"{type(exc).__name__}: {exc}"
            return ClockCheck(serial, "failed", before, error=error, resolution_s=step)
        if after is None or abs(after) > self.threshold_s:
            shown_as = "invalid" if after is None else f"{after:+.1f} s off"
            error = f"the meter acknowledged the time but its clock is still {shown_as}"
            return ClockCheck(serial, "failed", before, after, error, step)
        log.info("meter %s: clock set (%s s off before, %+.1f s after)", serial, _rounded(before), after)
        return ClockCheck(serial, "set", before, after, resolution_s=step)

    def _client(self, target: MbusTarget) -> MbusClient:
        return target.line.client(self.collector.timeout_s)

    async def _read(
        self, client: MbusClient, target: MbusTarget, *, first: bool
    ) -> tuple[MeterTime | None, float]:
        """One readout: the meter's clock, and the corrected time it stood for (the exchange's middle)."""
        started = self.clock.read().epoch
        if target.secondary is not None:
            telegram = await (
                client.read_secondary(SecondaryAddress(target.secondary))
                if first
                else client.read(ADDRESS_NETWORK)
            )
        else:
            assert target.primary is not None  # one of the two (the collector's address check)
            telegram = await client.read_primary(target.primary)
        ended = self.clock.read().epoch
        return meter_time(telegram, ZoneInfo(self.zone)), (started + ended) / 2

    async def _read_clock(self, target: MbusTarget, *, first: bool) -> tuple[MeterTime | None, float]:
        async with self.collector.bus_lock(target.bus), self._client(target) as client:
            return await self._read(client, target, first=first)

    async def _set(self, target: MbusTarget, resolution: Resolution) -> float | None:
        """Set the clock at the next boundary, read it back; the offset after (None: still invalid)."""
        step = _RESOLUTION_S[resolution]
        zone = ZoneInfo(self.zone)
        for _ in range(_ATTEMPTS):
            now = self.clock.read().epoch
            boundary = (now // step + 1) * step
            if boundary - now > _EARLY_S:
                await self.sleep(boundary - now - _EARLY_S)
            async with self.collector.bus_lock(target.bus), self._client(target) as client:
                current = self.clock.read()
                if not current.synchronised:
                    raise ValueError("the gateway's clock lost its synchronisation")
                if current.epoch - boundary > _LATE_S:
                    continue  # the bus was busy past the boundary: aim at the next one
                if boundary > current.epoch:
                    await self.sleep(boundary - current.epoch)
                local = datetime.fromtimestamp(boundary, UTC).astimezone(zone)
                if target.secondary is not None:
                    if not await client.select(SecondaryAddress(target.secondary)):
                        raise MbusDriverError(f"no slave acknowledged secondary address {target.secondary}")
                    address = ADDRESS_NETWORK
                else:
                    assert target.primary is not None
                    address = target.primary
                    await client.reset(address)  # a meter in the middle of a readout ignores the set
                await client.set_time(
                    address, local.replace(tzinfo=None), resolution, summer_time=bool(local.dst())
                )
                shown, reference = await self._read(client, target, first=False)
            if shown is None:
                raise MbusDriverError("the date/time record is gone from the meter's answer")
            return shown.offset(reference)
        raise MbusDriverError(f"the bus stayed busy past {_ATTEMPTS} boundaries")

    def _event(self, check: ClockCheck) -> ArchivedEvent | None:
        ts = self.clock.now()
        if check.action == "set":
            detail: dict[str, Any] = {
                "offset_before_s": _rounded(check.offset_s),
                "offset_after_s": _rounded(check.after_s),
                "resolution_s": check.resolution_s,
            }
            return ArchivedEvent(check.serial, ts, CLOCK_SYNCHRONISED, "info", detail)
        if check.action == "failed":
            detail = {"offset_before_s": _rounded(check.offset_s), "error": (check.error or "")[:200]}
            if check.after_s is not None:
                detail["offset_after_s"] = _rounded(check.after_s)
            log.warning("meter %s: clock not set: %s", check.serial, check.error)
            return ArchivedEvent(check.serial, ts, CLOCK_SYNC_FAILED, "warning", detail)
        return None
