"""``openami bench hes``: one day's collection of N simulated meters by the scaled-out head-end.

Everything runs as in production, only on one machine: a fleet of simulated M-Bus and Modbus meters
behind about N/250 converters (:mod:`openami.simulator.fleet`, in processes of its own, some meters
flaky and some dead if asked), registered in a store of its own (a private schema on PostgreSQL, a file
on SQLite), one daily ``registers`` schedule over all of them, its day's jobs planned by the real
planner, and then the worker processes exactly as an operator starts them (``openami worker --role
scheduler``, ``--role poller`` once per ``pollers``, ``--role ingest``) over NATS JetStream under a
namespace of the run's own. The clock runs from the workers' start until every job is done or failed.

Reported: the rate (meters per second of the collection), read success (jobs done over jobs planned),
the failed meters split into the dead ones (expected: reported failed) and the others, the readings
stored when the last job settled and once the ingest has drained the bus (``stored_s``: from the
workers' start until then), and CPU seconds per role from ``/proc`` (simulators, scheduler, pollers,
ingest, this process, and the rest of the machine: PostgreSQL, NATS and whatever else runs meanwhile).
For fewer than 100,000 meters the time 100,000 would take at the measured rate is given as a
projection, labelled so; it is no measurement.

The schedule is daily at the minute the bench starts (UTC), with a 23-hour window: one slot, due now.
Collectors' timeouts are their own; the retry wait is shortened (``retry_base_s``) so that failed reads
are retried within the run rather than half a minute later.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final

from sqlalchemy import Engine, func, insert, select, text

from openami.hes.jobstate import State
from openami.hes.planner import plan_schedules
from openami.simulator.fleet import FleetProcesses, FleetSpec
from openami.simulator.fleet_registry import register_fleet
from openami.store.engine import make_engine
from openami.store.migrate import upgrade
from openami.store.schema import channel, job, meter, register_read, schedule

__all__ = ["GOAL_METERS", "GOAL_S", "day_schedule", "run_hes_bench"]

Progress = Callable[[int, int], None]

GOAL_METERS: Final = 100_000
GOAL_S: Final = 600.0
_OPEN: Final = (State.PLANNED.value, State.QUEUED.value, State.RUNNING.value)
_POLL_S: Final = 0.5
_STOP_S: Final = 20.0


def day_schedule(engine: Engine, tenant_id: int, now: datetime, *, window: timedelta, attempts: int) -> int:
    """A daily ``registers`` schedule of every meter of the tenant, at ``now``'s minute (UTC), planned up
    to just before today's slot: the planner's next run plans exactly that slot. Returns its id."""
    slot = now.astimezone(UTC).replace(second=0, microsecond=0)
    with engine.begin() as conn:
        return int(
            conn.execute(
                insert(schedule)
                .values(
                    tenant_id=tenant_id,
                    name="daily registers",
                    kind="registers",
                    cron=f"{slot.minute} {slot.hour} * * *",
                    timezone="UTC",
                    window_s=int(window.total_seconds()),
                    max_attempts=attempts,
                    planned_until=slot - timedelta(microseconds=1),
                )
                .returning(schedule.c.id)
            ).scalar_one()
        )


@contextlib.contextmanager
def _scratch_store(database_url: str, directory: Path, keep: bool) -> Iterator[str]:
    """A migrated empty store of the run's own: a private schema on PostgreSQL (dropped afterwards unless
    ``keep``), a file in ``directory`` on SQLite."""
    if not database_url.startswith("postgresql"):
        url = f"sqlite:///{directory / 'bench.sqlite3'}"
        upgrade(engine := make_engine(url))
        engine.dispose()
        yield url
        return
    name = f"bench_hes_{secrets.token_hex(5)}"
    admin = make_engine(database_url)
    with admin.begin() as conn:
        conn.execute(text(f"CREATE SCHEMA {name}"))
    url = f"{database_url}{'&' if '?' in database_url else '?'}options=-csearch_path%3D{name}"
    try:
        upgrade(engine := make_engine(url))
        engine.dispose()
        yield url
    finally:
        if not keep:
            with admin.begin() as conn:
                conn.execute(text(f"DROP SCHEMA IF EXISTS {name} CASCADE"))
        admin.dispose()


def _ticks() -> float:
    return float(os.sysconf("SC_CLK_TCK"))


def process_cpu_s(pid: int) -> float:
    """CPU seconds (user + system, its reaped children's included) of a live process; 0 once gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return 0.0
    return sum(int(value) for value in fields[11:15]) / _ticks()


def machine_cpu_s() -> float:
    """CPU seconds the whole machine has been busy (every core, since boot)."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = values[3] + (values[4] if len(values) > 4 else 0)
    return (sum(values[:8]) - idle) / _ticks()


@dataclass
class _Worker:
    role: str
    name: str
    process: subprocess.Popen[bytes]
    log: Path


def _worker_env(
    url: str, nats_url: str, namespace: str, directory: Path, retry_base_s: float
) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENAMI_")}
    env |= {
        "OPENAMI_CONFIG": str(directory / "none.toml"),
        "OPENAMI_DATA_DIR": str(directory),
        "OPENAMI_DATABASE_URL": url,
        "OPENAMI_BUS_URL": nats_url,
        "OPENAMI_BUS_NAMESPACE": namespace,
        "OPENAMI_HES_LEADER_NAME": f"bench-{namespace}",
        "OPENAMI_HES_RETRY_BASE_S": str(retry_base_s),
        "OPENAMI_HES_TICK_S": "0.5",
        "OPENAMI_POLL_TIMEOUT_S": "0.5",
        "OPENAMI_MASTER_KEY": secrets.token_hex(32),
        "OPENAMI_LOG_LEVEL": "WARNING",
        "OPENAMI_LOG_FORMAT": "text",
    }
    return env


def _start_workers(pollers: int, env: dict[str, str], directory: Path) -> list[_Worker]:
    roles = ["scheduler", *["poller"] * pollers, "ingest"]
    workers: list[_Worker] = []
    for number, role in enumerate(roles):
        name = f"bench-{role}-{number}"
        log = directory / f"{name}.log"
        with log.open("wb") as sink:
            process = subprocess.Popen(  # noqa: S603 (our interpreter, a fixed command line)
                [sys.executable, "-m", "openami.cli", "worker", "--role", role, "--name", name],
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=sink,
                stderr=subprocess.STDOUT,
            )
        workers.append(_Worker(role, name, process, log))
    return workers


def _stop_workers(workers: list[_Worker]) -> None:
    """SIGTERM each, then wait (bounded); whoever is still there is killed."""
    for worker in workers:
        if worker.process.poll() is None:
            worker.process.terminate()
    deadline = time.monotonic() + _STOP_S
    for worker in workers:
        try:
            worker.process.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            worker.process.kill()
            worker.process.wait(5)


def _tail(path: Path, lines: int = 15) -> str:
    with contextlib.suppress(OSError):
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    return ""


def _job_states(engine: Engine, tenant_id: int) -> dict[str, int]:
    with engine.connect() as conn:
        rows = conn.execute(
            select(job.c.state, func.count()).where(job.c.tenant_id == tenant_id).group_by(job.c.state)
        )
        return {state: int(count) for state, count in rows}


def _readings(engine: Engine, tenant_id: int) -> int:
    with engine.connect() as conn:
        return int(
            conn.scalar(
                select(func.count())
                .select_from(register_read.join(channel, channel.c.id == register_read.c.channel_id))
                .where(channel.c.tenant_id == tenant_id)
            )
            or 0
        )


def _failed_serials(engine: Engine, tenant_id: int) -> dict[str, str]:
    with engine.connect() as conn:
        rows = conn.execute(
            select(meter.c.serial, job.c.outcome)
            .join(meter, meter.c.id == job.c.target_id)
            .where(job.c.tenant_id == tenant_id, job.c.state == State.FAILED.value)
        )
        return {serial: outcome or "" for serial, outcome in rows}


async def _drop_streams(nats_url: str, namespace: str) -> None:
    """Remove the run's JetStream streams (``OPENAMI_<NAMESPACE>_*``) so runs leave nothing behind."""
    import nats

    client = await nats.connect(nats_url, connect_timeout=5, max_reconnect_attempts=0)
    try:
        manager = client.jsm()
        prefix = f"OPENAMI_{namespace.upper()}_"
        for info in await manager.streams_info():
            if info.config.name and info.config.name.startswith(prefix):
                await manager.delete_stream(info.config.name)
    finally:
        await client.close()


def _collect(
    engine: Engine,
    tenant_id: int,
    planned: int,
    workers: list[_Worker],
    limit_s: float,
    progress: Progress | None,
) -> dict[str, int]:
    """Wait until no job of the tenant is open; the final job counts by state."""
    deadline = time.monotonic() + limit_s
    while True:
        states = _job_states(engine, tenant_id)
        open_jobs = sum(states.get(s, 0) for s in _OPEN)
        if progress is not None:
            progress(planned - open_jobs, planned)
        if not open_jobs:
            return states
        died = [w for w in workers if w.process.poll() is not None]
        if died:
            worker = died[0]
            raise RuntimeError(
                f"worker {worker.name} exited with {worker.process.returncode}:\n{_tail(worker.log)}"
            )
        if time.monotonic() > deadline:
            raise RuntimeError(f"collection not finished after {limit_s:.0f} s: {states}")
        time.sleep(_POLL_S)


async def _readings_pending(nats_url: str, namespace: str) -> int:
    """Reading messages on the run's stream not yet acknowledged by the ingest (pending or in flight)."""
    import nats

    client = await nats.connect(nats_url, connect_timeout=5, max_reconnect_attempts=0)
    try:
        manager = client.jsm()
        consumers = await manager.consumers_info(f"OPENAMI_{namespace.upper()}_READINGS")
        return sum((c.num_pending or 0) + (c.num_ack_pending or 0) for c in consumers)
    finally:
        await client.close()


def _wait_for_ingest(nats_url: str, namespace: str, limit_s: float) -> None:
    """Wait until the ingest worker has taken every reading message of the run (it drains the bus after
    the jobs are done)."""
    deadline = time.monotonic() + limit_s
    while asyncio.run(_readings_pending(nats_url, namespace)):
        if time.monotonic() > deadline:
            raise RuntimeError(f"the ingest did not catch up within {limit_s:.0f} s")
        time.sleep(_POLL_S)


def run_hes_bench(
    database_url: str,
    meters: int,
    *,
    pollers: int = 1,
    flaky: float = 0.0,
    flaky_rate: float = 0.5,
    dead: float = 0.0,
    seed: int = 1,
    nats_url: str = "nats://127.0.0.1:4222",
    simulator_processes: int = 1,
    attempts: int = 3,
    retry_base_s: float = 2.0,
    limit_s: float = 3600.0,
    keep: bool = False,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Collect one day's ``registers`` read of ``meters`` simulated meters (module docstring)."""
    if not 1 <= pollers <= 16:
        raise ValueError("pollers must be 1 to 16")
    spec = FleetSpec(meters, flaky=flaky, flaky_rate=flaky_rate, dead=dead, seed=seed)
    flaky_set, dead_set = spec.failing()
    namespace = f"b{secrets.token_hex(6)}"
    with (
        tempfile.TemporaryDirectory(prefix="openami-bench-hes-") as tmp,
        _scratch_store(database_url, Path(tmp), keep) as url,
        FleetProcesses(spec, processes=simulator_processes) as fleet,
    ):
        directory = Path(tmp)
        engine = make_engine(url)
        dialect = engine.dialect.name
        workers: list[_Worker] = []
        try:
            started = time.perf_counter()
            registered = register_fleet(engine, fleet, slug=f"bench-{namespace}", name="bench hes")
            register_s = time.perf_counter() - started
            now = datetime.now(UTC)
            day_schedule(engine, registered.tenant_id, now, window=timedelta(hours=23), attempts=attempts)
            started = time.perf_counter()
            report = plan_schedules(engine, now, timedelta(hours=1))
            plan_s = time.perf_counter() - started
            if report.jobs != meters:
                raise RuntimeError(f"planned {report.jobs} jobs for {meters} meters: {report}")
            env = _worker_env(url, nats_url, namespace, directory, retry_base_s)
            simulators = fleet.pids
            cpu_before = {pid: process_cpu_s(pid) for pid in simulators}
            machine_before, own_before = machine_cpu_s(), time.process_time()
            started = time.perf_counter()
            workers = _start_workers(pollers, env, directory)
            states = _collect(engine, registered.tenant_id, report.jobs, workers, limit_s, progress)
            seconds = time.perf_counter() - started
            cpu = {pid: process_cpu_s(pid) - cpu_before[pid] for pid in simulators}
            cpu |= {w.process.pid: process_cpu_s(w.process.pid) for w in workers}
            machine_s, own_s = machine_cpu_s() - machine_before, time.process_time() - own_before
            readings_at_end = _readings(engine, registered.tenant_id)
            _wait_for_ingest(nats_url, namespace, limit_s)
            stored_s = time.perf_counter() - started
            readings = _readings(engine, registered.tenant_id)
            failed = _failed_serials(engine, registered.tenant_id)
        finally:
            _stop_workers(workers)
            engine.dispose()
            with contextlib.suppress(Exception):
                asyncio.run(_drop_streams(nats_url, namespace))
        sessions = fleet.stop()
    serial_index = {m.serial: m.index for e in fleet.endpoints for m in e.meters}
    failed_index = {serial_index[s] for s in failed}
    by_role: dict[str, float] = {"simulators": sum(cpu[pid] for pid in simulators)}
    for worker in workers:
        by_role[worker.role] = by_role.get(worker.role, 0.0) + cpu[worker.process.pid]
    ours = sum(by_role.values()) + own_s
    done = states.get(State.DONE.value, 0)
    rate = meters / seconds
    result: dict[str, Any] = {
        "meters": meters,
        "protocols": dict(Counter(m.protocol for e in fleet.endpoints for m in e.meters)),
        "converters": len(fleet.endpoints),
        "pollers": pollers,
        "simulator_processes": simulator_processes,
        "database": dialect,
        "register_s": round(register_s, 3),
        "plan_s": round(plan_s, 3),
        "seconds": round(seconds, 3),
        "meters_per_s": round(rate, 1),
        "jobs": report.jobs,
        "done": done,
        "failed": states.get(State.FAILED.value, 0),
        "read_success": round(done / report.jobs, 5),
        "flaky_meters": len(flaky_set),
        "flaky_silent_sessions": sessions.silent,
        "sessions": sessions.sessions,
        "dead_meters": len(dead_set),
        "dead_reported": len(failed_index & dead_set),
        "failed_not_dead": len(failed_index - dead_set),
        "failed_outcomes": dict(Counter(failed.values())),
        "readings": readings,
        "readings_stored_when_collected": readings_at_end,
        "stored_s": round(stored_s, 3),
        "cpu_s": {role: round(value, 2) for role, value in by_role.items()}
        | {"bench": round(own_s, 2), "rest_of_machine": round(max(0.0, machine_s - ours), 2)},
        "machine_cpu_s": round(machine_s, 2),
        "cpu_utilisation": round(machine_s / seconds / (os.cpu_count() or 1), 3),
    }
    goal = {"meters": GOAL_METERS, "seconds": GOAL_S}
    if meters >= GOAL_METERS:
        goal |= {"measured_s": result["seconds"] * GOAL_METERS / meters, "met": rate * GOAL_S >= GOAL_METERS}
    else:
        goal |= {"projected_s": round(GOAL_METERS / rate, 1), "projected_met": rate * GOAL_S >= GOAL_METERS}
    result["goal"] = goal
    return result
