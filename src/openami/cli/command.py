"""``openami command``: remote commands as jobs (relay, clock, load limit, push setup, tariff calendar,
key rotation), their approvals, protections, the no-disconnect calendar and firmware campaigns, from
the command line.

The commands work straight on the database through the same functions as the API
(:mod:`openami.hes.command_jobs`, :mod:`openami.hes.safety`, :mod:`openami.hes.campaigns`), so they need
no API process; what they queue is run by the head-end's pollers (``--wait`` polls until it ended).
Meters are named by serial.

``--as USER`` names the tenant's user the command acts for: approvals compare users, so asking and
approving need ``--as`` (two different users). Whoever runs the CLI holds the database's credentials
and could write the rows directly, so ``--as`` is not authentication; the audit log records both the
user and the OS account (``cli:<os user>:user:<id>:<name>``).
"""

from __future__ import annotations

import getpass
import json
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table
from sqlalchemy import Engine, select

from openami.cli.base import CliError, DatabaseOption, TenantOption, _engine, _run, _settings, app, console

command_app = typer.Typer(no_args_is_help=True, help="Remote commands, approvals, protections, campaigns.")
campaign_app = typer.Typer(no_args_is_help=True, help="Firmware campaigns in staged waves.")
period_app = typer.Typer(no_args_is_help=True, help="The no-disconnect calendar.")
app.add_typer(command_app, name="command")
command_app.add_typer(campaign_app, name="campaign")
command_app.add_typer(period_app, name="no-disconnect")

JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]
AsOption = Annotated[str | None, typer.Option("--as", help="The tenant's user this command acts for.")]
AsRequired = Annotated[str, typer.Option("--as", help="The tenant's user this command acts for.")]
Meters = Annotated[list[str], typer.Argument(help="Meter serials.")]
Reason = Annotated[str, typer.Option("--reason", help="Why (recorded and audited).")]
WaitOption = Annotated[
    float, typer.Option("--wait", min=0, max=3600, help="Seconds to wait for the commands to end (0: don't).")
]
CampaignId = Annotated[int, typer.Argument(min=1, help="The campaign's id.")]


@contextmanager
def _tenant(tenant: str, database_url: str | None) -> Iterator[tuple[Engine, int]]:
    from openami.store.repositories import tenants

    engine = _engine(_settings(**({"database_url": database_url} if database_url else {})))
    with engine.connect() as conn:
        tenant_id = tenants.get_by_slug(conn, tenant).id
    yield engine, tenant_id


def _user(engine: Engine, tenant_id: int, username: str | None) -> tuple[str, int | None]:
    """(actor, user id) of ``--as`` (the OS user alone without it)."""
    from openami.store.schema import app_user

    actor = f"cli:{getpass.getuser()}"
    if username is None:
        return actor, None
    with engine.connect() as conn:
        user_id = conn.execute(
            select(app_user.c.id).where(
                app_user.c.tenant_id == tenant_id, app_user.c.username == username, app_user.c.is_active
            )
        ).scalar_one_or_none()
    if user_id is None:
        raise CliError(f"--as: no active user {username!r} in this tenant", 2)
    return f"{actor}:user:{user_id}:{username}", int(user_id)


def _meter_ids(engine: Engine, tenant_id: int, serials: Sequence[str]) -> list[int]:
    from openami.store.repositories import Scope, meters

    with engine.connect() as conn:
        return [meters.get_by_key(conn, Scope(tenant_id), serial).id for serial in serials]


def _now() -> datetime:
    return datetime.now(UTC)


def _print(data: Any, as_json: bool, table: Callable[[], Table]) -> None:
    if as_json:
        console.print_json(json.dumps(data, default=str))
    else:
        console.print(table())


def _send(
    kind: str,
    tenant: str,
    meters: Sequence[str],
    user: str | None,
    force_calendar: bool,
    reason: str,
    wait: float,
    as_json: bool,
    database_url: str | None,
    params: dict[str, Any] | None = None,
) -> None:
    from openami.hes import command_jobs

    with _tenant(tenant, database_url) as (engine, tenant_id):
        actor, user_id = _user(engine, tenant_id, user)
        ids = _meter_ids(engine, tenant_id, meters)
        settings = _settings(**({"database_url": database_url} if database_url else {}))
        if command_jobs.needs_approval(kind, len(ids), settings.hes_bulk_approval_threshold):
            asked = command_jobs.request(
                engine,
                tenant_id,
                kind,
                ids,
                actor=actor,
                user_id=user_id,
                now=_now(),
                reason=reason,
                force_calendar=force_calendar,
                params=params,
            )
            if as_json:
                console.print_json(json.dumps(asdict(asked), default=str))
            else:
                console.print(
                    f"a {kind} of {len(ids)} meters needs a second user: request [bold]{asked.id}[/bold] "
                    f"waits for `openami command approve {asked.id} --as <another user>`"
                )
            return
        submission = command_jobs.submit(
            engine,
            tenant_id,
            kind,
            ids,
            actor=actor,
            user_id=user_id,
            now=_now(),
            force_calendar=force_calendar,
            params=params,
        )
        _show_submission(engine, tenant_id, submission, wait, as_json)


def _show_submission(engine: Engine, tenant_id: int, submission: Any, wait: float, as_json: bool) -> None:
    from openami.hes.commands import command_record

    queued = [asdict(q) for q in submission.queued]
    if wait:
        deadline = time.monotonic() + wait
        while True:
            records = {q["command_id"]: command_record(engine, tenant_id, q["command_id"]) for q in queued}
            if all(r.state not in ("queued", "running") for r in records.values()):
                break
            if time.monotonic() >= deadline:
                break
            time.sleep(0.2)
        for q in queued:
            q["state"] = records[q["command_id"]].state
            q["result"] = records[q["command_id"]].result
    refused = [r.as_dict() for r in submission.refused]

    def table() -> Table:
        out = Table("meter id", "command", "job", "state", title="queued")
        for q in queued:
            out.add_row(str(q["meter_id"]), str(q["command_id"]), str(q["job_id"]), q.get("state", "queued"))
        for r in refused:
            out.add_row(str(r["meter_id"]), "-", "-", f"refused: {r['reason']}")
        return out

    _print({"queued": queued, "refused": refused}, as_json, table)
    unfinished = [q for q in queued if q.get("state") in ("queued", "running")]
    if wait and unfinished:
        raise CliError(f"{len(unfinished)} commands had not ended after {wait:g} s", 1)


def _kind_command(kind: str, help_text: str) -> None:
    def command(
        tenant: TenantOption,
        meters: Meters,
        user: AsOption = None,
        force_calendar: Annotated[
            bool, typer.Option("--force-calendar", help="Disconnect inside a no-disconnect period (audited).")
        ] = False,
        reason: Reason = "",
        wait: WaitOption = 0,
        as_json: JsonOption = False,
        database_url: DatabaseOption = None,
    ) -> None:
        _run(lambda: _send(kind, tenant, meters, user, force_calendar, reason, wait, as_json, database_url))

    command.__doc__ = help_text
    command_app.command(kind.replace("_", "-"))(command)


_kind_command("disconnect", "Queue a remote disconnect (more than one meter: a request for a second user).")
_kind_command("connect", "Queue a remote connect.")
_kind_command("reconnect", "Queue a remote reconnect (the same as connect).")
_kind_command("time_sync", "Queue a clock synchronisation.")


def _send_config(
    kind: str,
    params: dict[str, Any],
    tenant: str,
    meters: Sequence[str],
    user: str | None,
    reason: str,
    wait: float,
    as_json: bool,
    database_url: str | None,
) -> None:
    _run(lambda: _send(kind, tenant, meters, user, False, reason, wait, as_json, database_url, params))


@command_app.command("load-limit")
def load_limit(
    tenant: TenantOption,
    meters: Meters,
    threshold: Annotated[int, typer.Option("--threshold", min=0, help="Active threshold, W.")],
    normal: Annotated[int | None, typer.Option("--normal", min=0, help="Normal threshold, W.")] = None,
    user: AsOption = None,
    reason: Reason = "",
    wait: WaitOption = 0,
    as_json: JsonOption = False,
    database_url: DatabaseOption = None,
) -> None:
    """Queue a load limit (limiter 0-0:17.0.0); more than one meter: a request for a second user."""
    params: dict[str, Any] = {"threshold": threshold, **({"normal": normal} if normal is not None else {})}
    _send_config("load_limit", params, tenant, meters, user, reason, wait, as_json, database_url)


@command_app.command("push-setup")
def push_setup(
    tenant: TenantOption,
    meters: Meters,
    destination: Annotated[str, typer.Option("--destination", help="Where pushes go: host:port.")],
    transport: Annotated[str, typer.Option("--transport", help="tcp or udp.")] = "tcp",
    message: Annotated[str, typer.Option("--message", help="a-xdr or xml.")] = "a-xdr",
    user: AsOption = None,
    reason: Reason = "",
    wait: WaitOption = 0,
    as_json: JsonOption = False,
    database_url: DatabaseOption = None,
) -> None:
    """Queue a push destination (push setup 0-1:25.9.0)."""
    params = {"destination": destination, "transport": transport, "message": message}
    _send_config("push_setup", params, tenant, meters, user, reason, wait, as_json, database_url)


@command_app.command("tariff-calendar")
def tariff_calendar(
    tenant: TenantOption,
    meters: Meters,
    file: Annotated[Path, typer.Option("--file", exists=True, dir_okay=False, help="The calendar as JSON.")],
    user: AsOption = None,
    reason: Reason = "",
    wait: WaitOption = 0,
    as_json: JsonOption = False,
    database_url: DatabaseOption = None,
) -> None:
    """Queue a tariff calendar (activity calendar 0-0:13.0.0; docs/operations/commands.md for the file)."""
    _run(
        lambda: _send(
            "tariff_calendar",
            tenant,
            meters,
            user,
            False,
            reason,
            wait,
            as_json,
            database_url,
            _json_file(file),
        )
    )


def _json_file(file: Path) -> dict[str, Any]:
    try:
        found = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CliError(f"--file: {exc}", 2) from None
    if not isinstance(found, dict):
        raise CliError("--file: the calendar must be a JSON object", 2)
    return found


@command_app.command("rotate-key")
def rotate_key(
    tenant: TenantOption,
    meters: Meters,
    key: Annotated[str, typer.Option("--key", help="encryption or authentication.")],
    user: AsOption = None,
    reason: Reason = "",
    wait: WaitOption = 0,
    as_json: JsonOption = False,
    database_url: DatabaseOption = None,
) -> None:
    """Queue a key rotation (security setup, global key transfer); more than one meter: a request."""
    _send_config("key_rotation", {"key": key}, tenant, meters, user, reason, wait, as_json, database_url)


@command_app.command("requests")
def requests_list(
    tenant: TenantOption,
    state: Annotated[str | None, typer.Option(help="requested, approved, rejected, running, done")] = None,
    as_json: JsonOption = False,
    database_url: DatabaseOption = None,
) -> None:
    """List command requests, newest first."""

    def go() -> None:
        from openami.hes import command_jobs

        with _tenant(tenant, database_url) as (engine, tenant_id):
            found = command_jobs.list_requests(engine, tenant_id, state=state)

        def table() -> Table:
            out = Table("id", "kind", "meters", "state", "requested by", "decided by", "reason")
            for r in found:
                out.add_row(
                    str(r.id),
                    r.kind,
                    str(r.meter_count),
                    r.state,
                    str(r.requested_by),
                    str(r.decided_by or "-"),
                    r.reason,
                )
            return out

        _print([asdict(r) for r in found], as_json, table)

    _run(go)


def _decide(
    approve: bool, tenant: str, request_id: int, user: str, reason: str | None, database_url: str | None
) -> None:
    from openami.hes import command_jobs

    with _tenant(tenant, database_url) as (engine, tenant_id):
        actor, user_id = _user(engine, tenant_id, user)
        if not approve:
            rejected = command_jobs.reject(
                engine, tenant_id, request_id, actor=actor, user_id=user_id, now=_now(), reason=reason
            )
            console.print(f"request {rejected.id} rejected")
            return
        approved, submission = command_jobs.approve(
            engine, tenant_id, request_id, actor=actor, user_id=user_id, now=_now(), reason=reason
        )
        console.print(
            f"request {approved.id} approved: {len(submission.queued)} commands queued, "
            f"{len(submission.refused)} meters refused"
        )
        for refusal in submission.refused:
            console.print(f"  meter {refusal.meter_id}: {refusal.reason}")


@command_app.command("approve")
def approve_request(
    tenant: TenantOption,
    request_id: Annotated[int, typer.Argument(min=1, help="The request's id.")],
    user: AsRequired,
    reason: Annotated[str | None, typer.Option("--reason")] = None,
    database_url: DatabaseOption = None,
) -> None:
    """Approve a command request (not its requester) and queue its commands."""
    _run(lambda: _decide(True, tenant, request_id, user, reason, database_url))


@command_app.command("reject")
def reject_request(
    tenant: TenantOption,
    request_id: Annotated[int, typer.Argument(min=1, help="The request's id.")],
    user: AsRequired,
    reason: Annotated[str | None, typer.Option("--reason")] = None,
    database_url: DatabaseOption = None,
) -> None:
    """Reject (or withdraw) a command request."""
    _run(lambda: _decide(False, tenant, request_id, user, reason, database_url))


@command_app.command("protect")
def protect(
    tenant: TenantOption,
    meter: Annotated[str, typer.Argument(help="Meter serial.")],
    reason: Reason,
    medical: Annotated[bool, typer.Option("--medical", help="Medical equipment at the premises.")] = False,
    life_support: Annotated[bool, typer.Option("--life-support", help="Life-support equipment.")] = False,
    vulnerable: Annotated[bool, typer.Option("--vulnerable", help="A vulnerable household.")] = False,
    remove: Annotated[bool, typer.Option("--remove", help="Remove the protection instead.")] = False,
    user: AsOption = None,
    database_url: DatabaseOption = None,
) -> None:
    """Protect a meter from remote disconnects (or --remove a protection)."""

    def go() -> None:
        from openami.hes import safety

        kinds = [
            k
            for k, on in (("medical", medical), ("life_support", life_support), ("vulnerable", vulnerable))
            if on
        ]
        if len(kinds) != 1:
            raise CliError("give exactly one of --medical, --life-support, --vulnerable", 2)
        with _tenant(tenant, database_url) as (engine, tenant_id):
            actor, _user_id = _user(engine, tenant_id, user)
            [meter_id] = _meter_ids(engine, tenant_id, [meter])
            if remove:
                safety.unprotect(engine, tenant_id, meter_id, kinds[0], reason=reason, actor=actor)
                console.print(f"{meter}: {kinds[0]} protection removed")
            else:
                safety.protect(engine, tenant_id, meter_id, kinds[0], reason=reason, actor=actor)
                console.print(f"{meter}: protected ({kinds[0]}); remote disconnects are refused")

    _run(go)


def _moment(value: str | None, option: str) -> datetime | None:
    if value is None:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise CliError(f"{option}: not an ISO-8601 time: {value!r}", 2) from None
    if moment.tzinfo is None:
        raise CliError(f"{option}: {value!r} needs a UTC offset", 2)
    return moment


@period_app.command("add")
def period_add(
    tenant: TenantOption,
    name: Annotated[str, typer.Argument(help="The period's name (holidays, heat wave, weekend).")],
    weekly_from: Annotated[
        str | None, typer.Option("--from", help="Weekly start, local: 'fri 12:00'.")
    ] = None,
    weekly_to: Annotated[str | None, typer.Option("--to", help="Weekly end, local: 'mon 08:00'.")] = None,
    start: Annotated[str | None, typer.Option("--start", help="Dated start, ISO-8601 with offset.")] = None,
    end: Annotated[str | None, typer.Option("--end", help="Dated end, ISO-8601 with offset.")] = None,
    database_url: DatabaseOption = None,
) -> None:
    """Add a no-disconnect period: weekly (--from/--to, the tenant's local time) or dated (--start/--end)."""

    def go() -> None:
        from openami.hes import safety

        weekly = None
        if weekly_from is not None or weekly_to is not None:
            if weekly_from is None or weekly_to is None:
                raise CliError("a weekly period needs --from and --to", 2)
            weekly = (weekly_from, weekly_to)
        with _tenant(tenant, database_url) as (engine, tenant_id):
            actor, _user_id = _user(engine, tenant_id, None)
            period = safety.add_period(
                engine,
                tenant_id,
                name,
                actor=actor,
                starts_at=_moment(start, "--start"),
                ends_at=_moment(end, "--end"),
                weekly=weekly,
            )
        console.print(f"period {period.id}: {period.describe()}")

    _run(go)


@period_app.command("list")
def period_list(
    tenant: TenantOption, as_json: JsonOption = False, database_url: DatabaseOption = None
) -> None:
    """List the no-disconnect periods."""

    def go() -> None:
        from openami.hes import safety

        with _tenant(tenant, database_url) as (engine, tenant_id):
            found = safety.periods(engine, tenant_id)

        def table() -> Table:
            out = Table("id", "period")
            for p in found:
                out.add_row(str(p.id), p.describe())
            return out

        _print([asdict(p) for p in found], as_json, table)

    _run(go)


@period_app.command("remove")
def period_remove(
    tenant: TenantOption,
    period_id: Annotated[int, typer.Argument(min=1)],
    database_url: DatabaseOption = None,
) -> None:
    """Remove a no-disconnect period."""

    def go() -> None:
        from openami.hes import safety

        with _tenant(tenant, database_url) as (engine, tenant_id):
            actor, _user_id = _user(engine, tenant_id, None)
            safety.remove_period(engine, tenant_id, period_id, actor=actor)
        console.print(f"period {period_id} removed")

    _run(go)


def _show_campaign(found: Any, as_json: bool) -> None:
    def table() -> Table:
        out = Table(
            "wave",
            "meters",
            "pending",
            "queued",
            "succeeded",
            "failed",
            "cancelled",
            title=f"campaign {found.id} {found.name!r}: {found.state}"
            + (f" ({found.state_reason})" if found.state_reason else "")
            + f", wave {found.current_wave} of {len(found.waves)}, image {found.identifier}",
        )
        for w in found.wave_counts:
            out.add_row(
                *(str(v) for v in (w.wave, w.meters, w.pending, w.queued, w.succeeded, w.failed, w.cancelled))
            )
        return out

    _print(asdict(found), as_json, table)


@campaign_app.command("create")
def campaign_create(
    tenant: TenantOption,
    name: Annotated[str, typer.Argument(help="The campaign's name.")],
    image: Annotated[
        Path, typer.Option("--image", exists=True, dir_okay=False, help="The firmware image file.")
    ],
    identifier: Annotated[str, typer.Option("--identifier", help="What the meters must report after.")],
    meters: Annotated[str, typer.Option("--meters", help="Meter serials, comma-separated, in wave order.")],
    user: AsRequired,
    waves: Annotated[str, typer.Option("--waves", help="Wave sizes or percentages: '10,10%'.")] = "",
    threshold: Annotated[
        float, typer.Option("--threshold", min=0, max=1, help="Failure fraction that stops.")
    ] = 0.05,
    as_json: JsonOption = False,
    database_url: DatabaseOption = None,
) -> None:
    """Create a draft campaign (a second user approves it, then it is started)."""

    def go() -> None:
        from openami.hes import campaigns

        spec: list[int | str] = [
            w if w.endswith("%") else _integer(w) for w in filter(None, map(str.strip, waves.split(",")))
        ]
        with _tenant(tenant, database_url) as (engine, tenant_id):
            actor, user_id = _user(engine, tenant_id, user)
            ids = _meter_ids(engine, tenant_id, [s for s in map(str.strip, meters.split(",")) if s])
            created = campaigns.create(
                engine,
                tenant_id,
                name=name,
                identifier=identifier,
                image=image.read_bytes(),
                meter_ids=ids,
                waves=spec,
                failure_threshold=threshold,
                actor=actor,
                user_id=user_id,
            )
        _show_campaign(created, as_json)

    _run(go)


def _integer(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise CliError(f"--waves: {text!r} is neither a number of meters nor a percentage", 2) from None


def _campaign_move(move: str, help_text: str) -> None:
    def command(
        tenant: TenantOption,
        campaign_id: CampaignId,
        user: AsOption = None,
        as_json: JsonOption = False,
        database_url: DatabaseOption = None,
    ) -> None:
        def go() -> None:
            from openami.hes import campaigns

            with _tenant(tenant, database_url) as (engine, tenant_id):
                actor, user_id = _user(engine, tenant_id, user)
                if move == "approve":
                    moved = campaigns.approve(
                        engine, tenant_id, campaign_id, actor=actor, user_id=user_id, now=_now()
                    )
                else:
                    moved = getattr(campaigns, move)(engine, tenant_id, campaign_id, actor=actor, now=_now())
            _show_campaign(moved, as_json)

        _run(go)

    command.__doc__ = help_text
    campaign_app.command(move)(command)


_campaign_move("approve", "Approve a draft campaign (--as a user other than its creator).")
_campaign_move("start", "Start an approved campaign: its first wave is queued.")
_campaign_move("pause", "Pause: queued upgrades are held, no new wave starts.")
_campaign_move("resume", "Resume a paused campaign.")
_campaign_move("abort", "Abort: nothing more is sent.")


@campaign_app.command("show")
def campaign_show(
    tenant: TenantOption,
    campaign_id: CampaignId,
    as_json: JsonOption = False,
    database_url: DatabaseOption = None,
) -> None:
    """Show a campaign with its waves."""

    def go() -> None:
        from openami.hes import campaigns

        with _tenant(tenant, database_url) as (engine, tenant_id):
            found = campaigns.get(engine, tenant_id, campaign_id)
        _show_campaign(found, as_json)

    _run(go)
