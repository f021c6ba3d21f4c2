"""What runs a job: an executor per kind of job, and the result it hands back to the worker.

The poller worker (:mod:`openami.hes.job_worker`) owns the job's life cycle (claim, lease, finish,
retry); an executor only does the work and says how it went. Keeping the two apart means a new kind of
job (a command, a firmware wave, a read) is one executor, and none of them can get the state machine
wrong.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from openami.hes.job_store import Job

__all__ = ["Executor", "JobResult"]


@dataclass(frozen=True, slots=True)
class JobResult:
    """How one job's attempt went.

    ``outcome`` is a short machine word ("done", "refused", "no_answer"); ``error`` the human reason when
    not ``ok``; ``retry`` whether another attempt is worth it (False for a permanent refusal, such as a
    disconnect refused by a protection).
    """

    ok: bool
    outcome: str | None = None
    error: str | None = None
    retry: bool = True
    detail: dict[str, Any] = field(default_factory=dict)


class Executor(Protocol):
    """Runs the jobs of its ``kinds``; every job handed in gets a result, keyed by job id."""

    kinds: frozenset[str]

    async def run(self, jobs: Sequence[Job]) -> dict[int, JobResult]: ...
