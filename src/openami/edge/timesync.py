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

The corrected clock (:meth:`ClockTracker.corrected`, :meth:`ClockTracker.now`) is what the gateway
keeps time by, as a data concentrator keeps one disciplined clock: the head-end's time at the latest
*trusted* answer (round trip at most ``max_round_trip_s``, so the offset is known to within half of
it) carried forward on the monotonic clock. Carrying it on the monotonic clock rather than adding the
offset to the wall clock means a step of the gateway's own clock (someone sets it, an NTP daemon
steps it) does not move the corrected time between two answers. Until there is a trusted answer, or
once the last one is older than ``max_age_s`` (drift adds up), the corrected clock is the local clock
and says it is unsynchronised: readings are stamped by it all the same, but nothing that needs the
right time (setting a meter's clock, :mod:`openami.edge.clocks`) is done by it.
"""

from __future__ import annotations

import math
import time
from collections import deque
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

__all__ = [
    "DEFAULT_MAX_AGE_S",
    "DEFAULT_MAX_ROUND_TRIP_S",
    "ClockTracker",
    "CorrectedTime",
    "TimeSample",
]

_MAX_PENDING: Final = 8
_PENDING_TTL_S: Final = 600.0
_MIN_DRIFT_SPAN_S: Final = 1.0
DEFAULT_MAX_ROUND_TRIP_S: Final = 2.0
"""An answer whose round trip is longer is not trusted: its offset may be off by half of it (1 s here,
against a meter clock threshold of 30 s)."""
DEFAULT_MAX_AGE_S: Final = 2 * 86400.0
"""A trusted answer older than this no longer synchronises: a crystal drifting 50 ppm has moved 8.6 s
in two days."""


@dataclass(frozen=True, slots=True)
class TimeSample:
    at: float
    """``t4``: when the answer arrived, on the gateway's clock."""
    offset_s: float
    round_trip_s: float
    mono: float = math.nan
    """When the answer arrived, on the monotonic clock (what the corrected clock is carried on)."""


@dataclass(frozen=True, slots=True)
class CorrectedTime:
    """The gateway's best idea of the time: ``epoch`` seconds, and whether it comes from a trusted
    head-end answer (``synchronised``) with its error bound (half that answer's round trip)."""

    epoch: float
    synchronised: bool
    error_s: float | None = None

    @property
    def at(self) -> datetime:
        return datetime.fromtimestamp(self.epoch, UTC)


class ClockTracker:
    """Requests and answers of one gateway, and the corrected clock (module docstring)."""

    def __init__(
        self,
        *,
        samples: int = 16,
        max_round_trip_s: float = DEFAULT_MAX_ROUND_TRIP_S,
        max_age_s: float = DEFAULT_MAX_AGE_S,
    ) -> None:
        self._pending: dict[float, float] = {}  # t1 -> monotonic time of the request
        self.samples: deque[TimeSample] = deque(maxlen=samples)
        self.refused = 0
        self.max_round_trip_s = max_round_trip_s
        self.max_age_s = max_age_s
        self._anchor: TimeSample | None = None

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
        sample = TimeSample(t4, ((t2 - t1) + (t3 - t4)) / 2, round_trip, mono)
        self.samples.append(sample)
        if round_trip <= self.max_round_trip_s:
            self._anchor = sample
        return sample

    def corrected(self, wall: float, mono: float) -> CorrectedTime:
        """The time now (``wall`` and ``mono`` read now): the head-end's, carried on the monotonic clock
        from the latest trusted answer, or ``wall`` itself, unsynchronised (module docstring)."""
        anchor = self._anchor
        if anchor is None or not math.isfinite(anchor.mono):
            return CorrectedTime(wall, False)
        elapsed = mono - anchor.mono
        if not 0 <= elapsed <= self.max_age_s:
            return CorrectedTime(wall, False)
        return CorrectedTime(anchor.at + anchor.offset_s + elapsed, True, anchor.round_trip_s / 2)

    def read(self) -> CorrectedTime:
        """:meth:`corrected` on this machine's clocks."""
        return self.corrected(time.time(), time.monotonic())

    def now(self) -> datetime:
        """The corrected time as an aware UTC datetime: the ``now`` the gateway's collectors stamp
        readings with."""
        return self.read().at

    @property
    def synchronised(self) -> bool:
        return self.read().synchronised

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
