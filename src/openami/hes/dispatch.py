"""Putting due jobs on the bus: their ids, grouped by lane and communication path (ADR 0013).

The bus carries no job, only "look at these jobs": the worker that receives a dispatch claims the jobs
in the store, and whatever the bus does twice (a redelivery after a lost ack) the store's conditional
claim does once. Each lane has its own subject, and each poller its own consumer per lane, so a command
never waits behind a night's bulk reads.

A dispatch holds the jobs of one path only: the worker claims them as one session on that path (one
connection to the concentrator, one sign-on sequence on the converter), which is what the path's limit
counts.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Final

from openami.bus.base import Publisher
from openami.hes.jobstate import Lane

__all__ = ["DISPATCH_SUBJECT", "Dispatch", "dispatch_subject", "group", "publish"]

DISPATCH_SUBJECT: Final = "jobs.dispatch"


def dispatch_subject(lane: Lane) -> str:
    return f"{DISPATCH_SUBJECT}.{int(lane)}"


@dataclass(frozen=True, slots=True)
class Dispatch:
    """Jobs of one lane and one path (None: jobs without a throttled path), sent as one message."""

    lane: Lane
    path: str | None
    ids: tuple[int, ...]

    def to_bytes(self) -> bytes:
        return json.dumps({"lane": int(self.lane), "path": self.path, "ids": list(self.ids)}).encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> Dispatch:
        """The dispatch in ``data``; ValueError when it is not one (a foreign or damaged message)."""
        try:
            raw = json.loads(data)
            ids = tuple(int(i) for i in raw["ids"])
            path = raw.get("path")
            if path is not None and not isinstance(path, str):
                raise TypeError("path")
            return cls(Lane(int(raw["lane"])), path, ids)
        except (ValueError, TypeError, KeyError) as exc:
            raise ValueError(f"not a job dispatch: {exc}") from None


def group(jobs: Iterable[tuple[int, Lane, str | None]], size: int) -> list[Dispatch]:
    """Dispatches of at most ``size`` jobs each, one lane and path per dispatch, most urgent lane first."""
    by_key: dict[tuple[Lane, str | None], list[int]] = defaultdict(list)
    for job_id, lane, path in jobs:
        by_key[lane, path].append(job_id)
    out = [
        Dispatch(lane, path, tuple(ids[start : start + size]))
        for (lane, path), ids in by_key.items()
        for start in range(0, len(ids), size)
    ]
    return sorted(out, key=lambda d: (d.lane, d.ids[0]))


async def publish(bus: Publisher, dispatches: Sequence[Dispatch]) -> None:
    for dispatch in dispatches:
        await bus.publish(dispatch_subject(dispatch.lane), dispatch.to_bytes())
