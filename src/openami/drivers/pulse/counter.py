"""Pulse inputs: a counter of pulses becomes the meter's register reading.

The simplest meters (old water meters with a reed contact, gas meters with a magnet, S0 outputs of
electricity meters) only give pulses; a logger or gateway input counts them. What the counter means is
configuration, not data: how much one pulse is (``weight``, e.g. 10 l or 1 Wh), what the meter's dial
showed when the counter was read at installation (``initial_value`` at ``initial_count``), and how wide
the counter is before it wraps (``counter_bits``). :class:`PulseRegister` keeps the running state and
turns each counter sample into ``initial_value + pulses * weight``.

Counters go backwards for two reasons, and the two are told apart by where they were: a wrap (the
previous count was in the top tenth of the range and the new one is in the bottom tenth) continues
seamlessly; anything else is a reset of the logger (power loss, replacement), after which counting
resumes from the last register value and the reading is flagged :data:`COUNTER_RESET`, so a VEE rule
or an operator can check the dial on the next visit.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Final

__all__ = ["COUNTER_RESET", "PulseError", "PulseInput", "PulseRegister"]

COUNTER_RESET: Final = 0x0100
"""Quality flag: the counter went back (logger reset); the register continued from its last value."""


class PulseError(ValueError):
    """A counter sample that cannot be used: outside the counter's range, or older than the last one."""


@dataclass(frozen=True, slots=True)
class PulseInput:
    """The configuration of one pulse input: which meter channel it feeds and how to count."""

    meter: str
    channel: str
    unit: str
    weight: float
    initial_value: float = 0.0
    initial_count: int = 0
    counter_bits: int = 32

    def __post_init__(self) -> None:
        if not self.weight > 0:
            raise PulseError(f"{self.meter}/{self.channel}: pulse weight must be positive")
        if not 8 <= self.counter_bits <= 64:
            raise PulseError(f"{self.meter}/{self.channel}: counter width must be 8..64 bits")
        if not 0 <= self.initial_count < 1 << self.counter_bits:
            raise PulseError(f"{self.meter}/{self.channel}: initial count outside the counter's range")


class PulseRegister:
    """The running register of one :class:`PulseInput`; feed it counter samples in time order."""

    def __init__(self, config: PulseInput) -> None:
        self.config = config
        self._modulus = 1 << config.counter_bits
        self._last_count = config.initial_count
        self._last_ts: datetime | None = None
        self._pulses = 0  # pulses counted since installation, wraps and resets included

    @property
    def value(self) -> float:
        return self.config.initial_value + self._pulses * self.config.weight

    def sample(self, ts: datetime, count: int) -> tuple[float, int]:
        """The register at ``ts`` for the counter reading ``count``, and its quality flags."""
        if not 0 <= count < self._modulus:
            raise PulseError(
                f"{self.config.meter}: count {count} outside a {self.config.counter_bits}-bit counter"
            )
        if self._last_ts is not None and ts < self._last_ts:
            raise PulseError(f"{self.config.meter}: sample at {ts.isoformat()} is older than the last one")
        quality = 0
        if count >= self._last_count:
            self._pulses += count - self._last_count
        elif self._last_count >= self._modulus * 9 // 10 and count < self._modulus // 10:
            self._pulses += count + self._modulus - self._last_count  # the counter wrapped
        else:
            self._pulses += count  # a reset: the logger started again from zero
            quality = COUNTER_RESET
        self._last_count, self._last_ts = count, ts
        return self.value, quality
