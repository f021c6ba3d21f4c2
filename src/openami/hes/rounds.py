"""What a collection round reports, whatever the protocol: one outcome per meter, totals per round.

Shared by the DLMS and Modbus collectors so the poller, the logs and ``/metrics`` treat every protocol
alike.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["MeterOutcome", "RoundReport"]


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
