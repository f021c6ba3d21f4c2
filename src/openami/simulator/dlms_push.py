"""A simulated DLMS/COSEM electricity meter that pushes its registers straight to the head-end.

Where :mod:`openami.simulator.gateway` plays meters behind a JSON-over-MQTT concentrator, this plays
the other common AMI shape: an IDIS meter with its own modem that opens a TCP connection to the HES
and pushes a DataNotification every interval. It exists so the demo (and the tests) drive the DLMS push
listener, the key vault and the replay guard with the same bytes a real meter would send.

Each push is built like an IDIS push setup's output (interface class 40, attribute 2 "push object
list" first, then the values it describes):

=========================  =======  ============================================================
object                     class    value
=========================  =======  ============================================================
push setup 0-0:25.9.0      40       the push object list itself
logical device 0-0:42.0.0  1        the meter serial (IDIS: the COSEM logical device name)
clock 0-0:1.0.0            8        when the values were captured (UTC, deviation 0)
1-0:1.8.0 / 1-0:2.8.0      3        active energy import / export, Wh (value, then scaler_unit)
1-0:1.7.0                  3        active power import, W: the mean of the quarter hour just ended
=========================  =======  ============================================================

The scaler_unit (attribute 3) of each register is pushed too, so the receiver needs no commissioning
read to know the units. The APDU is general-glo-ciphered (security control 0x30: authenticated and
encrypted, suite 0) under the meter's system title with an invocation counter that rises by one per
push, and carried in an IEC 62056-47 wrapper frame.

Values come from :class:`~openami.simulator.consumption.ConsumptionModel` (electricity, counts in Wh),
so they are a pure function of the seed and the time: a push for a given instant carries the same
registers whichever run sends it. Export is a second, independently seeded model's register divided by
ten: it gives 1-0:2.8.0 a plausible rising register, but its daily shape is a consumer's, not a
generator's (nothing here models PV).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from itertools import accumulate
from typing import Final

from openami.protocols.dlms.apdu import DATA_NOTIFICATION
from openami.protocols.dlms.axdr import CosemDateTime, Data, encode_data, encode_datetime
from openami.protocols.dlms.obis import Obis
from openami.protocols.dlms.security import (
    MAX_INVOCATION_COUNTER,
    SYSTEM_TITLE_LENGTH,
    SecurityControl,
    encrypt,
)
from openami.protocols.dlms.wrapper import WrapperFrame, encode_wrapper
from openami.simulator.consumption import INTERVAL_S, ConsumptionModel

__all__ = [
    "CLOCK",
    "ENERGY_EXPORT",
    "ENERGY_IMPORT",
    "LOGICAL_DEVICE_NAME",
    "POWER_IMPORT",
    "DlmsPushMeter",
]

LOGICAL_DEVICE_NAME: Final = Obis(0, 0, 42, 0, 0)
CLOCK: Final = Obis(0, 0, 1, 0, 0)
ENERGY_IMPORT: Final = Obis(1, 0, 1, 8, 0)
ENERGY_EXPORT: Final = Obis(1, 0, 2, 8, 0)
POWER_IMPORT: Final = Obis(1, 0, 1, 7, 0)
PUSH_SETUP: Final = Obis(0, 0, 25, 9, 0)

#: IEC 62056-47 wPorts: the meter's management logical device (1) sends, to the HES's wPort 1; the
#: listener accepts any pair, these are what the demo's meters are configured with.
SOURCE_WPORT: Final = 1
DESTINATION_WPORT: Final = 1

_CLASS_DATA: Final = 1
_CLASS_REGISTER: Final = 3
_CLASS_CLOCK: Final = 8
_CLASS_PUSH_SETUP: Final = 40
_UNIT_W: Final = 27
_UNIT_WH: Final = 30
_SECURITY: Final = SecurityControl(suite=0, authenticated=True, encrypted=True)
_STEP: Final = timedelta(seconds=INTERVAL_S)
_QUARTERS_PER_HOUR: Final = 3600 // INTERVAL_S
#: Seed offset and divisor of the export model (see the module docstring).
_EXPORT_SEED: Final = 0x45585054
_EXPORT_DIVISOR: Final = 10
_INVOKE_ID_MASK: Final = 0x00FF_FFFF


def _descriptor(class_id: int, obis: Obis, attribute: int) -> Data:
    """One push-object-list entry ``{class_id, logical_name, attribute_index, data_index}``."""
    return Data.structure(
        Data.uint16(class_id), Data.octet_string(obis.to_bytes()), Data.int8(attribute), Data.uint16(0)
    )


def _scaler_unit(unit: int) -> Data:
    return Data.structure(Data.int8(0), Data.enum(unit))


#: The push object list; :meth:`DlmsPushMeter.notification` sends one value per entry, in this order.
_PUSH_OBJECTS: Final = Data.array(
    _descriptor(_CLASS_PUSH_SETUP, PUSH_SETUP, 2),
    _descriptor(_CLASS_DATA, LOGICAL_DEVICE_NAME, 2),
    _descriptor(_CLASS_CLOCK, CLOCK, 2),
    _descriptor(_CLASS_REGISTER, ENERGY_IMPORT, 2),
    _descriptor(_CLASS_REGISTER, ENERGY_IMPORT, 3),
    _descriptor(_CLASS_REGISTER, ENERGY_EXPORT, 2),
    _descriptor(_CLASS_REGISTER, ENERGY_EXPORT, 3),
    _descriptor(_CLASS_REGISTER, POWER_IMPORT, 2),
    _descriptor(_CLASS_REGISTER, POWER_IMPORT, 3),
)


def _boundary_after(ts: datetime) -> datetime:
    """The first quarter-hour boundary strictly after ``ts``."""
    midnight = ts.replace(hour=0, minute=0, second=0, microsecond=0)
    return ts + (_STEP - (ts - midnight) % _STEP)


class DlmsPushMeter:
    """One IDIS-style meter: builds its ciphered, wrapped pushes and sends them over TCP.

    ``invocation_counter`` is the last counter used (the first push uses the next one). It lives on the
    object and only rises, because the head-end refuses a push whose counter it has seen: keep one object
    per meter for as long as the listener that receives its pushes runs.
    """

    def __init__(
        self,
        serial: str,
        system_title: bytes,
        encryption_key: bytes,
        authentication_key: bytes,
        seed: int,
        *,
        invocation_counter: int = 0,
    ) -> None:
        if len(system_title) != SYSTEM_TITLE_LENGTH:
            raise ValueError(f"a system title is {SYSTEM_TITLE_LENGTH} bytes, got {len(system_title)}")
        self.serial = serial
        self.system_title = bytes(system_title)
        self.encryption_key = bytes(encryption_key)
        self.authentication_key = bytes(authentication_key)
        self.model = ConsumptionModel("electricity", seed)
        self._export = ConsumptionModel("electricity", seed ^ _EXPORT_SEED)
        self.invocation_counter = invocation_counter

    def push_times(self, start: datetime, end: datetime, every: timedelta = _STEP) -> list[datetime]:
        """When the pushes covering [start, end) are sent: at the end of each ``every``, up to ``end``.

        ``every`` must be a whole number of quarter hours and ``start`` a quarter-hour boundary, since
        the consumption model defines registers there only.
        """
        if every <= timedelta(0) or every % _STEP:
            raise ValueError(f"the push period must be a positive multiple of 15 minutes, not {every}")
        times = []
        at = start.astimezone(UTC) + every
        while at <= end:
            times.append(at)
            at += every
        return times

    def notification(self, at: datetime, import_wh: int, export_wh: int, power_w: int) -> bytes:
        """The plain data-notification APDU for values captured at ``at`` (an aware datetime)."""
        clock = encode_datetime(CosemDateTime.from_datetime(at.astimezone(UTC)))
        body = Data.structure(
            _PUSH_OBJECTS,
            Data.octet_string(self.serial.encode("ascii")),
            Data.octet_string(clock),
            Data.uint32(import_wh),
            _scaler_unit(_UNIT_WH),
            Data.uint32(export_wh),
            _scaler_unit(_UNIT_WH),
            Data.uint32(power_w),
            _scaler_unit(_UNIT_W),
        )
        invoke_id = self.invocation_counter & _INVOKE_ID_MASK
        return (
            bytes([DATA_NOTIFICATION])
            + invoke_id.to_bytes(4, "big")
            + bytes([len(clock)])
            + clock
            + encode_data(body)
        )

    def _seal(self, apdu: bytes) -> bytes:
        """Cipher under the next invocation counter and wrap; the counter is spent even if sending fails."""
        if self.invocation_counter >= MAX_INVOCATION_COUNTER:
            raise OverflowError(f"{self.serial}: invocation counter exhausted, the keys must be renewed")
        self.invocation_counter += 1
        ciphered = encrypt(
            apdu,
            security_control=_SECURITY,
            system_title=self.system_title,
            invocation_counter=self.invocation_counter,
            encryption_key=self.encryption_key,
            authentication_key=self.authentication_key,
            general=True,
        )
        return encode_wrapper(WrapperFrame(SOURCE_WPORT, DESTINATION_WPORT, ciphered))

    def frames(self, start: datetime, end: datetime, every: timedelta = _STEP) -> Iterator[bytes]:
        """The wrapped pushes covering [start, end), one per ``every``; each spends one counter."""
        times = self.push_times(start, end, every)
        if not times:
            return
        # One bulk model call for the span (plus the quarter hour before the first push, for its power).
        first = times[0] - _STEP
        register, counts = self.model.counts(first, times[-1])
        imported = list(accumulate(counts, initial=register))  # imported[k]: register at first + k * 15 min
        register, export_counts = self._export.counts(first, times[-1])
        exported = list(accumulate(export_counts, initial=register))
        for at in times:
            k = (at - first) // _STEP
            power_w = counts[k - 1] * _QUARTERS_PER_HOUR
            apdu = self.notification(at, imported[k], exported[k] // _EXPORT_DIVISOR, power_w)
            yield self._seal(apdu)

    async def push_span(
        self, host: str, port: int, start: datetime, end: datetime, *, every: timedelta = _STEP
    ) -> int:
        """Send the pushes covering [start, end) over one TCP connection; returns how many were sent."""
        frames = list(self.frames(start, end, every))
        if not frames:
            return 0
        _, writer = await asyncio.open_connection(host, port)
        try:
            writer.writelines(frames)
            await writer.drain()
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()
        return len(frames)

    async def run_live(
        self,
        host: str,
        port: int,
        *,
        time_factor: float = 1.0,
        start: datetime | None = None,
        intervals: int | None = None,
    ) -> int:
        """Push each quarter hour as it completes on a simulated clock; returns the pushes sent.

        The clock works as :meth:`~openami.simulator.gateway.VirtualGateway.run_live`'s does. Each push
        opens its own connection, as IDIS meters do: a connection idle for a quarter hour would be
        closed by the listener's idle timeout anyway.
        """
        if time_factor <= 0:
            raise ValueError("time_factor must be positive")
        loop = asyncio.get_running_loop()
        anchor_sim, anchor_real = (start or datetime.now(UTC)).astimezone(UTC), loop.time()
        interval_end = _boundary_after(anchor_sim)
        sent = done = 0
        while intervals is None or done < intervals:
            deadline = anchor_real + (interval_end - anchor_sim).total_seconds() / time_factor
            await asyncio.sleep(max(0.0, deadline - loop.time()))
            sent += await self.push_span(host, port, interval_end - _STEP, interval_end)
            interval_end += _STEP
            done += 1
        return sent
