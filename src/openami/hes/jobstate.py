"""The job life cycle: states, the moves allowed between them, retries and priority lanes.

Every read and command the head-end runs is a job row. Its state only moves along :data:`MOVES`, and
every move in the store is a conditional update (``... WHERE id = :id AND state = :from AND attempt =
:attempt``), so two workers that both think they own a job cannot both move it: the second update
matches no row. That one rule is what makes "no job runs twice" hold across crashed and restarted
workers.

::

    planned ──► queued ──► running ──► done
       │          │   ▲       │  │
       │          │   └───────┘  └──► failed      (attempts used up, deadline passed, or not retryable)
       └──────────┴──► cancelled ◄── running (cancel asked while running: the worker stops at a safe point)

``running → queued`` is a retry: the attempt failed in a way worth trying again, and the job waits
:func:`backoff` before it may be taken again. A worker that dies leaves its job ``running`` with a lease
that runs out; the lease sweep moves it back to ``queued`` (same move, counted as an attempt).

Retries use capped exponential backoff with full jitter (a random delay between zero and the capped
exponential, as AWS's architecture blog recommends for many clients retrying against one resource):
a thousand meters behind one concentrator that failed together do not all come back at the same second.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import timedelta
from enum import IntEnum, StrEnum
from typing import Final

__all__ = [
    "MOVES",
    "TERMINAL",
    "IllegalMove",
    "Lane",
    "RetryPolicy",
    "State",
    "backoff",
    "check_move",
]


class State(StrEnum):
    PLANNED = "planned"
    """Made by the scheduler for a future slot; not yet due."""
    QUEUED = "queued"
    """Due (or retrying after its backoff): waiting for a worker."""
    RUNNING = "running"
    """Taken by one worker, under a lease."""
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"


TERMINAL: Final = frozenset({State.DONE, State.FAILED, State.CANCELLED})

MOVES: Final[dict[State, frozenset[State]]] = {
    State.PLANNED: frozenset({State.QUEUED, State.CANCELLED}),
    State.QUEUED: frozenset({State.RUNNING, State.CANCELLED}),
    State.RUNNING: frozenset({State.DONE, State.FAILED, State.QUEUED, State.CANCELLED}),
    State.DONE: frozenset(),
    State.FAILED: frozenset(),
    State.CANCELLED: frozenset(),
}


class IllegalMove(ValueError):
    """A state change the life cycle does not allow (a finished job started again, say)."""

    def __init__(self, current: State, target: State) -> None:
        super().__init__(f"a {current} job cannot become {target}")
        self.current = current
        self.target = target


def check_move(current: State, target: State) -> None:
    """:class:`IllegalMove` unless ``current → target`` is in :data:`MOVES`."""
    if target not in MOVES[current]:
        raise IllegalMove(current, target)


class Lane(IntEnum):
    """Priority lanes, lowest value first: an operator waiting on a command or an on-demand read never
    queues behind a night's bulk schedule."""

    COMMAND = 0
    ON_DEMAND = 1
    CATCH_UP = 2
    """Re-reads of intervals found missing in the store."""
    SCHEDULED = 3


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How often and how patiently a job is tried: ``max_attempts`` in all, each retry waiting
    :func:`backoff` of at most ``cap``."""

    max_attempts: int = 4
    base: timedelta = timedelta(seconds=30)
    cap: timedelta = timedelta(minutes=30)

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if self.base <= timedelta(0) or self.cap < self.base:
            raise ValueError("base must be positive and cap at least base")

    def retry_after(self, attempt: int, rng: random.Random | None = None) -> timedelta | None:
        """The wait before attempt ``attempt + 1`` after attempt ``attempt`` (1-based) failed, or None
        when no attempt is left."""
        if attempt >= self.max_attempts:
            return None
        return backoff(attempt, self.base, self.cap, rng)


def backoff(attempt: int, base: timedelta, cap: timedelta, rng: random.Random | None = None) -> timedelta:
    """Full-jitter exponential backoff: uniform in ``[0, min(cap, base * 2**(attempt-1))]``."""
    if attempt < 1:
        raise ValueError("attempts count from 1")
    ceiling = min(cap.total_seconds(), base.total_seconds() * 2 ** min(attempt - 1, 62))
    return timedelta(seconds=(rng or random).uniform(0.0, ceiling))
