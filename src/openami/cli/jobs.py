"""``openami jobs``, ``openami schedules`` and ``openami kpis``: the head-end's work from the command line.

The commands do what the API's ``/jobs``, ``/schedules`` and ``/kpis`` do, through the same functions
(:mod:`openami.hes.job_queries`, :mod:`openami.hes.schedule_store`, :mod:`openami.hes.kpi`), straight
on the database, so they work with no API process running. Changes (cancel, retry, schedule add,
enable, disable, remove) are audited as the OS user (``cli:<user>``). Every listing has ``--json``.
Meters and schedules are named by serial and name, as operators know them; jobs by id.
"""

from __future__ import annotations

import getpass
import json
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict
from datetime import UTC, datetime
from typing import Annotated, Any, cast

import typer
from rich.table import Table
from sqlalchemy import Connection, Engine

from openami.cli.base import CliError, DatabaseOption, TenantOption, _engine, _run, _settings, app, console

jobs_app = typer.Typer(no_args_is_help=True, help="Jobs: reads and commands the head-end runs.")
schedules_app = typer.Typer(no_args_is_help=True, help="Schedules: what the planner reads when.")
kpis_app = typer.Typer(no_args_is_help=True, help="Head-end KPIs: read success, latency, communication.")
app.add_typer(jobs_app, name="jobs")
app.add_typer(schedules_app, name="schedules")
app.add_typer(kpis_app, name="kpis")

JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]
JobId = Annotated[int, typer.Argument(min=1, help="The job's id.")]
ScheduleName = Annotated[str, typer.Argument(help="The schedule's name.")]
FromOption = Annotated[
    datetime | None,
    typer.Option("--from", formats=["%Y-%m-%d"], help="First local day (default: 6 before --to)."),
]
ToOption = Annotated[
    datetime | None,
    typer.Option("--to", formats=["%Y-%m-%d"], help="Last local day, included (default: today)."),
]


def _actor() -> str:
    return f"cli:{getpass.getuser()}"


@contextmanager
def _tenant(tenant: str, database_url: str | None) -> Iterator[tuple[Engine, int]]:
    """The engine and the id of tenant ``tenant``; a refused value in the block (bad cron, period, filter)
    is bad input: one line, exit 2."""
    from openami.security.errors import InvalidInput
    from openami.store.repositories import tenants

    engine = _engine(_settings(**({"database_url": database_url} if database_url else {})))
    try:
        with engine.connect() as conn:
            tenant_id = tenants.get_by_slug(conn, tenant).id
        yield engine, tenant_id
    except InvalidInput as exc:
        raise CliError(str(exc), 2) from None
    finally:
        engine.dispose()


def _print_json(value: Any) -> None:
    console.print_json(json.dumps(value, default=str))


def _when(value: datetime | None) -> str:
    return "-" if value is None else f"{value:%Y-%m-%d %H:%M:%S}"


def _job_audit(action: str) -> Callable[[Connection, Any], None]:
    from openami.security.audit import AuditLog

    def write(conn: Connection, record: Any) -> None:
        detail = {"kind": record.kind, "target_id": record.target_id, "attempts": record.attempts}
        AuditLog().append(conn, record.tenant_id, _actor(), action, "job", record.id, detail)

    return write


@jobs_app.command("list")
def jobs_list(
    tenant: TenantOption,
    state: Annotated[
        str | None, typer.Option(help="planned, queued, running, done, failed or cancelled.")
    ] = None,
    kind: Annotated[str | None, typer.Option(help="read or command.")] = None,
    meter: Annotated[str | None, typer.Option(help="Only jobs of this meter (serial).")] = None,
    schedule: Annotated[str | None, typer.Option(help="Only jobs of this schedule (name).")] = None,
    limit: Annotated[int, typer.Option(min=1, max=1000, help="How many, newest first.")] = 50,
    json_output: JsonOption = False,
    database_url: DatabaseOption = None,
) -> None:
    """List jobs, newest first."""

    def go() -> None:
        from openami.hes.job_queries import list_jobs
        from openami.hes.jobstate import State
        from openami.hes.schedule_store import schedules
        from openami.store.repositories import Scope, meters

        try:
            wanted = None if state is None else State(state)
        except ValueError:
            raise CliError(f"--state: one of {', '.join(State)}, not {state!r}", 2) from None
        with _tenant(tenant, database_url) as (engine, tenant_id):
            with engine.connect() as conn:
                meter_id = None if meter is None else meters.get_by_key(conn, Scope(tenant_id), meter).id
                schedule_id = (
                    None if schedule is None else schedules.get_by_key(conn, Scope(tenant_id), schedule).id
                )
            items = list_jobs(
                engine,
                tenant_id,
                state=wanted,
                kind=kind,
                target_id=meter_id,
                schedule_id=schedule_id,
                limit=limit,
            )
        if json_output:
            _print_json([asdict(item) for item in items])
            return
        table = Table("id", "kind", "state", "lane", "target", "for", "attempts", "finished", "outcome")
        for item in items:
            table.add_row(
                str(item.id),
                item.kind,
                item.state,
                str(item.lane),
                f"{item.target_type or '-'} {item.target_id or ''}".strip(),
                _when(item.scheduled_for or item.created_at),
                f"{item.attempts}/{item.max_attempts}",
                _when(item.finished_at),
                item.outcome or "-",
            )
        console.print(table)

    _run(go)


def _show(record: Any) -> None:
    for name, value in asdict(record).items():
        console.print(f"{name:>14}: {value if value is not None else '-'}", soft_wrap=True, markup=False)


@jobs_app.command("show")
def jobs_show(
    tenant: TenantOption, job_id: JobId, json_output: JsonOption = False, database_url: DatabaseOption = None
) -> None:
    """Show one job with its result."""

    def go() -> None:
        from openami.hes.job_queries import get_job

        with _tenant(tenant, database_url) as (engine, tenant_id):
            record = get_job(engine, tenant_id, job_id)
        _print_json(asdict(record)) if json_output else _show(record)

    _run(go)


def _move(tenant: str, job_id: int, database_url: str | None, action: str, move: Callable[..., Any]) -> None:
    with _tenant(tenant, database_url) as (engine, tenant_id):
        record = move(engine, tenant_id, job_id, datetime.now(UTC), then=_job_audit(action))
    console.print(f"job {record.id}: {record.state} ({record.attempts}/{record.max_attempts} attempts)")


@jobs_app.command("cancel")
def jobs_cancel(tenant: TenantOption, job_id: JobId, database_url: DatabaseOption = None) -> None:
    """Cancel a planned or queued job (a running one finishes first)."""
    from openami.hes.job_queries import cancel

    _run(lambda: _move(tenant, job_id, database_url, "job.cancel", cancel))


@jobs_app.command("retry")
def jobs_retry(tenant: TenantOption, job_id: JobId, database_url: DatabaseOption = None) -> None:
    """Queue a failed job again, due now, with a fresh attempt budget."""
    from openami.hes.job_queries import requeue

    _run(lambda: _move(tenant, job_id, database_url, "job.retry", requeue))


@schedules_app.command("list")
def schedules_list(
    tenant: TenantOption, json_output: JsonOption = False, database_url: DatabaseOption = None
) -> None:
    """List the tenant's schedules."""

    def go() -> None:
        from openami.hes.schedule_store import schedules
        from openami.store.repositories import MAX_LIMIT, Scope

        with _tenant(tenant, database_url) as (engine, tenant_id), engine.connect() as conn:
            items = schedules.list(conn, Scope(tenant_id), limit=MAX_LIMIT)
        if json_output:
            _print_json([asdict(item) for item in items])
            return
        table = Table("id", "name", "kind", "cron", "zone", "filter", "lane", "window", "tries", "enabled")
        for item in items:
            table.add_row(
                str(item.id),
                item.name,
                item.kind,
                item.cron,
                item.timezone or "(tenant)",
                json.dumps(item.target_filter) if item.target_filter else "(all meters)",
                str(item.lane),
                f"{item.window_s} s",
                str(item.max_attempts),
                "yes" if item.enabled else "no",
            )
        console.print(table)

    _run(go)


def _schedule_change(
    tenant: str,
    database_url: str | None,
    change: Callable[[Connection, int], tuple[str, int, dict[str, Any]]],
) -> None:
    """Run ``change(conn, tenant_id)`` -> (action, schedule id, detail) in one audited transaction."""
    from openami.security.audit import AuditLog

    with _tenant(tenant, database_url) as (engine, tenant_id), engine.begin() as conn:
        action, schedule_id, detail = change(conn, tenant_id)
        AuditLog().append(conn, tenant_id, _actor(), action, "schedule", schedule_id, detail)


@schedules_app.command("add")
def schedules_add(
    tenant: TenantOption,
    name: ScheduleName,
    kind: Annotated[str, typer.Option(help="registers, load_profile, events or clock_check.")],
    cron: Annotated[str, typer.Option(help='Five cron fields or a shortcut, e.g. "0 0 * * *" or @hourly.')],
    timezone: Annotated[str | None, typer.Option(help="IANA zone (default: the tenant's).")] = None,
    target_filter: Annotated[
        str,
        typer.Option(
            "--filter", help='Meter group as JSON, e.g. \'{"protocols": ["dlms"]}\' (default: all).'
        ),
    ] = "{}",
    lane: Annotated[int, typer.Option(help="1 on demand, 2 catch-up, 3 scheduled.")] = 3,
    window: Annotated[
        int, typer.Option("--window", help="Seconds after its slot a read may still start.")
    ] = 3600,
    max_attempts: Annotated[int, typer.Option(help="Attempts per read.")] = 3,
    disabled: Annotated[bool, typer.Option("--disabled", help="Create it disabled.")] = False,
    database_url: DatabaseOption = None,
) -> None:
    """Add a schedule; the planner plans its slots from now on."""

    def go() -> None:
        from openami.hes.schedule_store import schedules

        try:
            group = json.loads(target_filter)
        except json.JSONDecodeError as exc:
            raise CliError(f"--filter is not JSON: {exc}", 2) from None
        values = {
            "name": name,
            "kind": kind,
            "cron": cron,
            "timezone": timezone,
            "target_filter": group,
            "lane": lane,
            "window_s": window,
            "max_attempts": max_attempts,
            "enabled": not disabled,
        }

        def change(conn: Connection, tenant_id: int) -> tuple[str, int, dict[str, Any]]:
            row = schedules.create(conn, tenant_id, values)
            console.print(f"schedule {row.name!r} (id {row.id}) added: {row.kind} at {row.cron!r}")
            return "schedule.create", row.id, values

        _schedule_change(tenant, database_url, change)

    _run(go)


def _set_enabled(tenant: str, name: str, database_url: str | None, enabled: bool) -> None:
    from openami.hes.schedule_store import schedules
    from openami.store.repositories import Scope

    def change(conn: Connection, tenant_id: int) -> tuple[str, int, dict[str, Any]]:
        scope = Scope(tenant_id)
        row = schedules.update(conn, scope, schedules.get_by_key(conn, scope, name).id, {"enabled": enabled})
        console.print(f"schedule {row.name!r} {'enabled' if row.enabled else 'disabled'}")
        return "schedule.update", row.id, {"enabled": enabled}

    _schedule_change(tenant, database_url, change)


@schedules_app.command("enable")
def schedules_enable(tenant: TenantOption, name: ScheduleName, database_url: DatabaseOption = None) -> None:
    """Let the planner plan the schedule's slots again."""
    _run(lambda: _set_enabled(tenant, name, database_url, True))


@schedules_app.command("disable")
def schedules_disable(tenant: TenantOption, name: ScheduleName, database_url: DatabaseOption = None) -> None:
    """Stop planning new slots (jobs already planned still run)."""
    _run(lambda: _set_enabled(tenant, name, database_url, False))


@schedules_app.command("remove")
def schedules_remove(tenant: TenantOption, name: ScheduleName, database_url: DatabaseOption = None) -> None:
    """Delete a schedule and cancel its jobs that have not started."""

    def go() -> None:
        from openami.hes.schedule_store import schedules
        from openami.store.repositories import Scope

        def change(conn: Connection, tenant_id: int) -> tuple[str, int, dict[str, Any]]:
            scope = Scope(tenant_id)
            row = schedules.get_by_key(conn, scope, name)
            cancelled = schedules.delete(conn, scope, row.id, datetime.now(UTC))
            console.print(f"schedule {row.name!r} removed; {cancelled} unstarted jobs cancelled")
            return "schedule.delete", row.id, {"cancelled_jobs": cancelled}

        _schedule_change(tenant, database_url, change)

    _run(go)


def _kpi(
    tenant: str,
    first: datetime | None,
    last: datetime | None,
    database_url: str | None,
    fetch: Callable[..., Any],
) -> Any:
    from openami.hes import kpi

    with _tenant(tenant, database_url) as (engine, tenant_id):
        period = kpi.period(
            engine,
            tenant_id,
            None if first is None else first.date(),
            None if last is None else last.date(),
            now=datetime.now(UTC),
        )
        return fetch(engine, tenant_id, period)


def _percent(rate: float | None) -> str:
    return "-" if rate is None else f"{rate * 100:.2f} %"


@kpis_app.command("reads")
def kpis_reads(
    tenant: TenantOption,
    first: FromOption = None,
    last: ToOption = None,
    by: Annotated[str, typer.Option(help="day, schedule, gateway or model.")] = "day",
    json_output: JsonOption = False,
    database_url: DatabaseOption = None,
) -> None:
    """Read success of the planned reads against the 98 % target."""

    def go() -> None:
        from openami.hes import kpi

        if by not in ("day", "schedule", "gateway", "model"):
            raise CliError(f"--by: day, schedule, gateway or model, not {by!r}", 2)
        grouping = cast("kpi.Grouping", by)
        result = _kpi(
            tenant, first, last, database_url, lambda e, t, p: kpi.read_success(e, t, p, by=grouping)
        )
        if json_output:
            _print_json(asdict(result))
            return
        period = f"{result.first} .. {result.last} ({result.timezone})"
        title = f"read success {period}, target {_percent(result.target)}"
        table = Table(
            by, "planned", "done", "failed", "open", "cancelled", "success", "target met", title=title
        )
        for row in [*result.rows, result.total]:
            met = "-" if row.meets_target is None else ("yes" if row.meets_target else "[red]NO[/red]")
            key = "total" if row is result.total else (row.key or "(none)")
            table.add_row(
                key,
                *(str(n) for n in (row.planned, row.done, row.failed, row.open, row.cancelled)),
                _percent(row.success_rate),
                met,
            )
        console.print(table)

    _run(go)


@kpis_app.command("latency")
def kpis_latency(
    tenant: TenantOption,
    first: FromOption = None,
    last: ToOption = None,
    json_output: JsonOption = False,
    database_url: DatabaseOption = None,
) -> None:
    """Seconds from slot (or request) to result of the done reads, per lane."""

    def go() -> None:
        from openami.hes import kpi

        result = _kpi(tenant, first, last, database_url, kpi.latency)
        if json_output:
            _print_json(asdict(result))
            return
        table = Table(
            "lane",
            "reads",
            "p50 s",
            "p95 s",
            "max s",
            "mean s",
            title=f"latency {result.first} .. {result.last}",
        )
        for lane in result.lanes:
            table.add_row(
                lane.lane_name,
                str(lane.reads),
                *(f"{v:.1f}" for v in (lane.p50_s, lane.p95_s, lane.max_s, lane.mean_s)),
            )
        console.print(table)

    _run(go)


def _rows(table: Table, rows: Sequence[Sequence[str]]) -> Table:
    for row in rows:
        table.add_row(*row)
    return table


@kpis_app.command("communication")
def kpis_communication(
    tenant: TenantOption,
    first: FromOption = None,
    last: ToOption = None,
    dead_limit: Annotated[int, typer.Option(min=0, help="Dead meters listed at most.")] = 100,
    json_output: JsonOption = False,
    database_url: DatabaseOption = None,
) -> None:
    """Attempts per read, retry rate, errors by kind, and the dead meters."""

    def go() -> None:
        from openami.hes import kpi

        result = _kpi(
            tenant,
            first,
            last,
            database_url,
            lambda e, t, p: kpi.communication(e, t, p, dead_limit=dead_limit),
        )
        if json_output:
            _print_json(asdict(result))
            return
        per = "-" if result.attempts_per_success is None else f"{result.attempts_per_success:.3f}"
        console.print(
            f"communication {result.first} .. {result.last} ({result.timezone}):"
            f" {result.reads_done} reads done,"
            f" {result.reads_failed} failed; {per} attempts per successful read;"
            f" retry rate {_percent(result.retry_rate)}"
        )
        if result.errors:
            console.print(
                _rows(Table("error kind", "failed reads"), [(e.kind, str(e.failed)) for e in result.errors])
            )
        console.print(f"dead meters (every read failed): {result.dead_meter_count}")
        if result.dead_meters:
            dead = [
                (
                    m.serial or str(m.meter_id),
                    m.model or "-",
                    str(m.failed),
                    _when(m.last_failed_at),
                    m.last_error or "-",
                )
                for m in result.dead_meters
            ]
            console.print(_rows(Table("meter", "model", "failed reads", "last failed", "last error"), dead))

    _run(go)
