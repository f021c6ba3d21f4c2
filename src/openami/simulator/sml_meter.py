"""A simulated German eHZ meter's info interface: one SML file every ``interval_s``, from the household model.

Why: the SML reader and the head-end's consumer-port collection need a meter that pushes what an EMH,
ISKRA or Itron eHZ pushes, byte for byte, without an optical head. Each file is OpenResponse,
GetListResponse, CloseResponse (transport v1, CRCs per message and per file), and the list holds what
those meters publish without PIN: manufacturer (129-129:199.130.3), server id (1-0:0.0.9), the import
register 1-0:1.8.0 with its status word, 1-0:2.8.0 export, both as 64-bit integers in 0.1 Wh (scaler
-1, unit Wh), and the net power 1-0:16.7.0 in 0.1 W (negative while feeding in).

eHZ meters have no clock on this interface: ``actSensorTime`` is a second counter (secIndex), so the
reader stamps values with its own time. ``clock=True`` sends a UTC timestamp instead, as smart meter
gateways do. Registers come from :class:`~openami.simulator.household.HouseholdModel`, the same model as
the simulated P1 meter; :meth:`SimulatedSmlMeter.measurements` gives the values a file reports.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Final

from openami.protocols.dlms.obis import Obis
from openami.protocols.sml.encode import Int, list_entry, meter_push, time_sec_index, time_timestamp
from openami.protocols.sml.transport import START
from openami.simulator.consumption import EPOCH_START
from openami.simulator.household import HouseholdModel, whole_second
from openami.simulator.p1_meter import Measurement

__all__ = ["DEFAULT_INTERVAL_S", "SimulatedSmlMeter", "build_sml_meters"]

DEFAULT_INTERVAL_S: Final = 1.0
_WH: Final = 30
_W: Final = 27
_MANUFACTURER: Final = bytes.fromhex("8181C78203FF")
#: Status word of the energy register as ISKRA and EMH meters send it (bit 8: meter running).
_STATUS: Final = 0x000182


def _utcnow() -> datetime:
    return datetime.now(UTC)


class SimulatedSmlMeter:
    """One eHZ; ``seed`` varies its household, ``now`` is its clock (UTC).

    ``corrupt_next``: that many of the next files go out with one payload byte flipped after the CRCs
    were computed, as a dirty optical head would deliver them.
    """

    def __init__(
        self,
        seed: int = 0,
        *,
        manufacturer: str = "OAM",
        server_id: bytes | None = None,
        interval_s: float = DEFAULT_INTERVAL_S,
        clock: bool = False,
        now: Callable[[], datetime] = _utcnow,
    ) -> None:
        if len(manufacturer) != 3:
            raise ValueError("manufacturer is a 3-letter FLAG id")
        if interval_s <= 0:
            raise ValueError("interval_s must be positive")
        self.seed = seed
        self.manufacturer = manufacturer
        # 0A 01, the FLAG id, a version byte and a 4-byte serial: the eHZ server id layout.
        self.server_id = server_id or b"\x0a\x01" + manufacturer.encode("ascii") + b"\x00" + (
            0x00B00000 + seed
        ).to_bytes(4, "big")
        self.interval_s = interval_s
        self.clock = clock
        self.now = now
        self.household = HouseholdModel(seed)
        self.corrupt_next = 0
        self._file_id = seed * 0x10000

    def measurements(self, at: datetime | None = None) -> dict[str, Measurement]:
        """What the file at ``at`` reports, by channel, in base units (timestamp None: no clock)."""
        at = whole_second(at or self.now())
        stamp = at if self.clock else None
        net = self.household.import_w(at) - self.household.export_w(at)
        return {
            "1-0:1.8.0": Measurement(self.household.import_wh(at), "Wh", stamp),
            "1-0:2.8.0": Measurement(self.household.export_wh(at), "Wh", stamp),
            "1-0:16.7.0": Measurement(net, "W", stamp),
        }

    def file(self, at: datetime | None = None) -> bytes:
        """The SML file at ``at`` (default: the meter's clock now); each call is a new file id."""
        at = whole_second(at or self.now())
        values = self.measurements(at)
        entries = [
            list_entry(_MANUFACTURER, self.manufacturer.encode("ascii")),
            list_entry(Obis(1, 0, 0, 0, 9), self.server_id),
            list_entry(
                Obis(1, 0, 1, 8, 0),
                Int(int(values["1-0:1.8.0"].value) * 10, 8, True),
                unit=_WH,
                scaler=-1,
                status=Int(_STATUS, 3),
            ),
            list_entry(
                Obis(1, 0, 2, 8, 0), Int(int(values["1-0:2.8.0"].value) * 10, 8, True), unit=_WH, scaler=-1
            ),
            list_entry(
                Obis(1, 0, 16, 7, 0), Int(int(values["1-0:16.7.0"].value) * 10, 4, True), unit=_W, scaler=-1
            ),
        ]
        seconds = int((at - EPOCH_START).total_seconds())
        sensor_time = time_timestamp(int(at.timestamp())) if self.clock else time_sec_index(seconds)
        self._file_id += 1
        return meter_push(self.server_id, entries, file_id=self._file_id, sensor_time=sensor_time)

    def frame(self, at: datetime | None = None) -> bytes:
        """What the interface sends at ``at``: the file, damaged while ``corrupt_next`` is pending."""
        data = self.file(at)
        if self.corrupt_next > 0:
            self.corrupt_next -= 1
            middle = len(START) + (len(data) - len(START)) // 2
            data = data[:middle] + bytes([data[middle] ^ 0x10]) + data[middle + 1 :]
        return data


def build_sml_meters(
    count: int, *, interval_s: float = DEFAULT_INTERVAL_S, seed: int = 0
) -> list[SimulatedSmlMeter]:
    """``count`` eHZ meters with seeds ``seed``, ``seed + 1``, ... (``openami simulate sml``)."""
    return [SimulatedSmlMeter(seed + i, interval_s=interval_s) for i in range(count)]
