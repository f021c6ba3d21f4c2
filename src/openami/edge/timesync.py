"""The gateway's clock against the head-end's: offset and round trip as NTP computes them, and drift.

The gateway sends a TIME request ``{"t1": <its clock>}``; the head-end answers ``{"t1", "t2", "t3"}``
(the request echoed, when it received it, when it answered), and the gateway notes when the answer
arrived (``t4``). Then, as in NTP (RFC 5905)::

    offset     = ((t2 - t1) + (t3 - t4)) / 2      head-end clock minus gateway clock
    round trip = (t4 - t1) - (t3 - t2)            time on the wire, the head-end's processing removed

``t4`` is ``t1`` plus the *monotonic* time elapsed since the request, so a step of the gateway's own
clock between request and answer does not corrupt the sample. The offset is exact when both paths take
equally long; its error is at most half the round trip, so the sample with the shortest round trip of a
run is the most trustworthy.

Drift is the slope of the offsets over time (least squares over the last samples), in parts per
million: positive when the gateway's clock runs fast (the offset falls). Sans-IO: the caller passes the
clocks in.

This increment measures and reports; setting the meters' clocks from the corrected time is a later
step (``docs/operations/gateway.md``).
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from typing import Any, Final

__all__ = ["ClockTracker", "TimeSample"]

_MAX_PENDING: Final = 8
_PENDING_TTL_S: Final = 600.0
_MIN_DRIFT_SPAN_S: Final = 1.0


@dataclass(frozen=True, slots=True)
class TimeSample:
    at: float
    """``t4``: when the answer arrived, on the gateway's clock."""
    offset_s: float
    round_trip_s: float


class ClockTracker:
    """Requests and answers of one gateway (module docstring)."""

    def __init__(self, *, samples: int = 16) -> None:
        self._pending: dict[float, float] = {}  # t1 -> monotonic time of the request
        self.samples: deque[TimeSample] = deque(maxlen=samples)
        self.refused = 0

    def request(self, wall: float, mono: float) -> dict[str, Any]:
        """The payload of a new TIME request sent now."""
        for t1, sent in list(self._pending.items()):
            if mono - sent > _PENDING_TTL_S:
                del self._pending[t1]
        while len(self._pending) >= _MAX_PENDING:
            del self._pending[min(self._pending)]
        self._pending[wall] = mono
        return {"t1": wall}

    def answer(self, payload: dict[str, Any], mono: float) -> TimeSample | None:
        """Take the head-end's answer received at ``mono``; None (and counted) when it answers no
        request of ours or is not plausible."""
        try:
            t1, t2, t3 = (float(payload[k]) for k in ("t1", "t2", "t3"))
        except (KeyError, TypeError, ValueError):
            self.refused += 1
            return None
        sent = self._pending.pop(t1, None)
        if sent is None or not all(math.isfinite(t) for t in (t2, t3)) or t3 < t2:
            self.refused += 1
            return None
        t4 = t1 + (mono - sent)
        round_trip = (t4 - t1) - (t3 - t2)
        if round_trip < 0:
            self.refused += 1
            return None
        sample = TimeSample(t4, ((t2 - t1) + (t3 - t4)) / 2, round_trip)
        self.samples.append(sample)
        return sample

    @property
    def offset_s(self) -> float | None:
        """The latest offset (head-end minus gateway), None before the first answer."""
        return self.samples[-1].offset_s if self.samples else None

    @property
    def round_trip_s(self) -> float | None:
        return self.samples[-1].round_trip_s if self.samples else None

    @property
    def drift_ppm(self) -> float | None:
        """How fast the gateway's clock gains on the head-end's, in ppm; None until two samples at
        least a second apart."""
        if len(self.samples) < 2 or self.samples[-1].at - self.samples[0].at < _MIN_DRIFT_SPAN_S:
            return None
        xs = [s.at for s in self.samples]
        ys = [s.offset_s for s in self.samples]
        mean_x, mean_y = sum(xs) / len(xs), sum(ys) / len(ys)
        spread = sum((x - mean_x) ** 2 for x in xs)
        if spread == 0:
            return None
        slope = sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys, strict=True)) / spread
        return -slope * 1e6
