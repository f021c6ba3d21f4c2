"""The job life cycle: allowed moves, retries with capped, jittered backoff, lanes."""

from __future__ import annotations

import random
from datetime import timedelta

import pytest

from openami.hes.jobstate import MOVES, TERMINAL, IllegalMove, Lane, RetryPolicy, State, backoff, check_move


def test_terminal_states_go_nowhere_and_every_other_state_can_be_cancelled() -> None:
    for state in TERMINAL:
        assert MOVES[state] == frozenset()
        with pytest.raises(IllegalMove, match=f"a {state} job cannot become queued"):
            check_move(state, State.QUEUED)
    for state in set(State) - TERMINAL:
        check_move(state, State.CANCELLED)


def test_only_a_running_job_finishes_or_retries() -> None:
    check_move(State.RUNNING, State.DONE)
    check_move(State.RUNNING, State.QUEUED)
    for state in (State.PLANNED, State.QUEUED):
        with pytest.raises(IllegalMove):
            check_move(state, State.DONE)
    with pytest.raises(IllegalMove):
        check_move(State.PLANNED, State.RUNNING)


def test_backoff_grows_exponentially_up_to_the_cap_with_jitter() -> None:
    rng = random.Random(7)
    base, cap = timedelta(seconds=10), timedelta(seconds=100)
    for attempt, ceiling in [(1, 10), (2, 20), (3, 40), (4, 80), (5, 100), (60, 100), (10_000, 100)]:
        waits = [backoff(attempt, base, cap, rng).total_seconds() for _ in range(200)]
        assert all(0 <= wait <= ceiling for wait in waits)
        assert max(waits) > 0.8 * ceiling  # spread over the whole range, not a fixed delay
        assert len(set(waits)) == len(waits)
    with pytest.raises(ValueError, match="from 1"):
        backoff(0, base, cap)


def test_retry_policy_stops_after_the_last_attempt() -> None:
    policy = RetryPolicy(max_attempts=3, base=timedelta(seconds=1), cap=timedelta(seconds=4))
    rng = random.Random(1)
    assert policy.retry_after(1, rng) is not None
    assert policy.retry_after(2, rng) is not None
    assert policy.retry_after(3, rng) is None
    with pytest.raises(ValueError, match="max_attempts"):
        RetryPolicy(max_attempts=0)
    with pytest.raises(ValueError, match="cap"):
        RetryPolicy(base=timedelta(seconds=5), cap=timedelta(seconds=1))


def test_commands_and_on_demand_reads_come_before_bulk_schedules() -> None:
    assert sorted([Lane.SCHEDULED, Lane.CATCH_UP, Lane.COMMAND, Lane.ON_DEMAND]) == [
        Lane.COMMAND,
        Lane.ON_DEMAND,
        Lane.CATCH_UP,
        Lane.SCHEDULED,
    ]
