"""What every pull protocol's collection shares: one outcome per meter, totals per round, and the way a
meter's reading is handed to the bus.

Shared by the DLMS, Modbus and M-Bus collectors so the poller, the logs and ``/metrics`` treat every
protocol alike.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

from openami.bus.base import Publisher
from openami.bus.messages import MeterEvent, ReadingBatch, Series, readings_subject

__all__ = ["MeterOutcome", "RoundReport", "publish_read"]


@dataclass(slots=True)
class MeterOutcome:
    serial: str
    ok: bool = False
    readings: int = 0
    events: int = 0
    clock_drift_s: float | None = None
    clock_set: bool = False
    error: str | None = None


@dataclass(slots=True)
class RoundReport:
    """What one round did, for logs, the CLI and metrics."""

    meters: int = 0
    succeeded: int = 0
    failed: int = 0
    readings: int = 0
    events: int = 0
    clocks_set: int = 0
    seconds: float = 0.0
    errors: dict[str, int] = field(default_factory=dict)
    outcomes: list[MeterOutcome] = field(default_factory=list)

    def add(self, outcome: MeterOutcome) -> None:
        self.outcomes.append(outcome)
        self.readings += outcome.readings
        self.events += outcome.events
        self.clocks_set += outcome.clock_set
        if outcome.ok:
            self.succeeded += 1
        else:
            self.failed += 1
            kind = (outcome.error or "error").split(":", 1)[0]
            self.errors[kind] = self.errors.get(kind, 0) + 1

    def merge(self, other: RoundReport) -> None:
        """Add another collection's report (several protocols in one round)."""
        self.meters += other.meters
        self.seconds = max(self.seconds, other.seconds)
        for outcome in other.outcomes:
            self.add(outcome)


async def publish_read(
    bus: Publisher,
    source: str,
    tenant: str,
    serial: str,
    read_at: datetime,
    series: list[Series],
    events: Sequence[MeterEvent] = (),
) -> ReadingBatch | None:
    """One meter's read as one ReadingBatch on ``readings.<tenant>`` (nothing when it holds nothing).

    The message id names the source, meter and time of the read, so a retried publish is stored once.
    ``bus`` is any :class:`~openami.bus.base.Publisher`: the head-end's bus, or a gateway's archive.
    """
    if not series and not events:
        return None
    batch = ReadingBatch(
        tenant=tenant, source=source, received_at=read_at, series=series, events=list(events)
    )
    await bus.publish(
        readings_subject(tenant), batch.to_bytes(), msg_id=f"{source}:{tenant}:{serial}:{read_at.isoformat()}"
    )
    return batch
