"""Running and administering the platform: version, db, init, serve, demo, users, meters, readings."""

from __future__ import annotations

import asyncio
import contextlib
import csv
import json
import sys
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from openami import __version__
from openami.cli.base import (
    CliError,
    DatabaseOption,
    TenantOption,
    _engine,
    _progress,
    _run,
    _settings,
    app,
    console,
    db_app,
    err,
    meters_app,
    users_app,
)


@app.command()
def version() -> None:
    """Print the OpenAMI version."""
    console.print(f"openami {__version__}")


@db_app.command("upgrade")
def db_upgrade(database_url: DatabaseOption = None) -> None:
    """Migrate the database schema to the newest version."""

    def go() -> None:
        from openami.store.migrate import current_revision, upgrade

        engine = _engine(_settings(database_url=database_url))
        upgrade(engine)
        console.print(f"database at revision {current_revision(engine)}")

    _run(go)


@app.command()
def init(
    tenant: Annotated[str, typer.Option(help="Slug of the first tenant.")] = "main",
    name: Annotated[str, typer.Option(help="Display name of the tenant.")] = "My Utility",
    admin: Annotated[str, typer.Option(help="User name of the first administrator.")] = "admin",
    password: Annotated[str, typer.Option(prompt=True, hide_input=True, confirmation_prompt=True)] = "",
    timezone: Annotated[str, typer.Option(help="IANA time zone of the utility.")] = "UTC",
    database_url: DatabaseOption = None,
) -> None:
    """Create the database, the first tenant and its administrator."""

    def go() -> None:
        from openami.security.bootstrap import create_tenant_with_admin
        from openami.store.migrate import upgrade

        engine = _engine(_settings(database_url=database_url))
        upgrade(engine)
        create_tenant_with_admin(engine, tenant, name, timezone, admin, password)
        console.print(f"tenant [bold]{tenant}[/bold] ready; log in as [bold]{admin}[/bold]")

    _run(go)


@app.command()
def serve(
    port: Annotated[int | None, typer.Option(help="Web port (OPENAMI_WEB_PORT).")] = None,
    host: Annotated[str | None, typer.Option(help="Web host (OPENAMI_WEB_HOST).")] = None,
) -> None:
    """Run the platform: store, bus, MQTT broker and listener, ingest, and the web API."""

    def go() -> None:
        from openami.web.server import serve_platform

        settings = _settings(web_port=port, web_host=host)
        asyncio.run(serve_platform(settings))

    with contextlib.suppress(KeyboardInterrupt):
        _run(go)


@app.command()
def demo(
    once: Annotated[
        bool, typer.Option("--once", help="Run one accelerated collection cycle and exit.")
    ] = False,
    days: Annotated[float, typer.Option(min=0.05, max=62, help="Days of history to simulate.")] = 7,
    speedup: Annotated[float, typer.Option(min=1, help="Live mode: simulated seconds per real second.")] = 1,
    port: Annotated[int | None, typer.Option(help="Web port (OPENAMI_WEB_PORT).")] = None,
) -> None:
    """Seed a demo utility, simulate its meters and gateways, and serve it (or --once: one cycle)."""
    from openami.demo import runner

    def render(summary: runner.DemoSummary) -> None:
        table = Table(title="OpenAMI demo: one collection cycle")
        table.add_column("what")
        table.add_column("value", justify="right")
        rows = [
            ("meters / gateways", f"{summary.meters} / {summary.gateways}"),
            (
                "simulated span",
                f"{summary.span_start:%Y-%m-%d %H:%M} .. {summary.span_end:%Y-%m-%d %H:%M} UTC",
            ),
            ("MQTT messages", f"{summary.messages:,}"),
            ("DLMS meters / pushes", f"{summary.dlms_meters} / {summary.dlms_pushes:,}"),
            ("DLMS pushes refused", f"{summary.dlms_rejected:,}"),
            (
                "DLMS meters polled / readings / failed",
                f"{summary.pulled_meters} / {summary.pulled_readings:,} / {summary.pull_failures}",
            ),
            (
                "field-bus and port meters read / readings",  # Modbus, M-Bus, IEC 62056-21, P1, SML
                f"{summary.bus_meters} / {summary.bus_readings:,}",
            ),
            (
                "wM-Bus meters / telegrams / readings",
                f"{summary.radio_meters} / {summary.radio_telegrams} / {summary.radio_readings:,}",
            ),
            (
                "OpenAMI gateways / meters / readings via the link",
                f"{summary.edge_gateways} / {summary.edge_meters} / {summary.edge_readings:,}",
            ),
            ("readings stored (new)", f"{summary.readings_inserted:,}"),
            ("readings revised (new version)", f"{summary.readings_revised:,}"),
            ("readings already stored", f"{summary.readings_unchanged:,}"),
            ("readings rejected", f"{summary.readings_rejected:,}"),
            ("events stored", f"{summary.events:,}"),
            ("elapsed", f"{summary.seconds:.1f} s ({summary.rows_per_s:,.0f} readings/s)"),
            ("database", summary.database),
        ]
        for row in rows:
            table.add_row(*row)
        console.print(table)

    def go() -> None:
        settings = _settings(web_port=port)
        if once:
            with _progress() as progress:
                task = progress.add_task("gateways publishing", total=None)
                summary = asyncio.run(
                    runner.run_once(
                        settings, days=days, progress=lambda d, t: progress.update(task, completed=d, total=t)
                    )
                )
            render(summary)
            return

        url = f"http://{settings.web_host}:{settings.web_port}"
        console.print(f"[bold green]OpenAMI demo[/bold green] at {url}  (API docs: {url}/docs)")
        console.print(
            f"log in: tenant [bold]demo[/bold], user [bold]{runner.DEMO_ADMIN}[/bold], "
            f"password [bold]{runner.DEMO_PASSWORD}[/bold]   (Ctrl-C stops)"
        )
        console.print(f"back-filling {days:g} days of simulated data through MQTT ...")

        def ready(summary: runner.DemoSummary) -> None:
            render(summary)
            console.print("live data flowing; Ctrl-C stops")

        asyncio.run(runner.run_forever(settings, days=days, speedup=speedup, on_ready=ready))

    with contextlib.suppress(KeyboardInterrupt):
        _run(go)


@users_app.command("create")
def users_create(
    tenant: TenantOption,
    username: str,
    role: Annotated[
        str, typer.Option(help="admin, operator, billing, field_technician, analyst, customer, auditor")
    ],
    password: Annotated[str, typer.Option(prompt=True, hide_input=True, confirmation_prompt=True)] = "",
    database_url: DatabaseOption = None,
) -> None:
    """Create a user in a tenant."""

    def go() -> None:
        from openami.security.bootstrap import ensure_user

        ensure_user(
            _engine(_settings(database_url=database_url)),
            tenant,
            username,
            password,
            role=role,
            must_be_new=True,
        )
        console.print(f"user [bold]{username}[/bold] ({role}) created in {tenant}")

    _run(go)


@users_app.command("list")
def users_list(tenant: TenantOption, database_url: DatabaseOption = None) -> None:
    """List the users of a tenant."""

    def go() -> None:
        from openami.security.bootstrap import list_users

        users = list_users(_engine(_settings(database_url=database_url)), tenant)
        table = Table("username", "role", "active", "last login")
        for user in users:
            table.add_row(
                user.username,
                user.role,
                "yes" if user.is_active else "no",
                f"{user.last_login_at:%Y-%m-%d %H:%M}" if user.last_login_at else "-",
            )
        console.print(table)

    _run(go)


def _scope(conn: Any, tenant: str) -> Any:
    from openami.store.repositories import Scope, tenants

    return Scope(tenants.get_by_slug(conn, tenant).id)


def _channel(conn: Any, tenant: str, serial: str, code: str) -> Any:
    from openami.store.errors import NotFound
    from openami.store.repositories import channels, meters

    scope = _scope(conn, tenant)
    meter = meters.get_by_key(conn, scope, serial)
    found = channels.list(conn, scope, filters={"meter_id": meter.id, "code": code})
    if not found:
        raise NotFound(f"meter {serial!r} has no channel {code!r}")
    return found[0]


@meters_app.command("list")
def meters_list(
    tenant: TenantOption,
    limit: Annotated[int, typer.Option(min=1, max=1_000_000)] = 50,
    database_url: DatabaseOption = None,
) -> None:
    """List the meters of a tenant, in id order."""

    def go() -> None:
        from openami.store.repositories import meters

        table = Table("id", "serial", "medium", "protocol", "model", "status")
        with _engine(_settings(database_url=database_url)).connect() as conn:
            scope = _scope(conn, tenant)
            after, remaining = None, limit
            while remaining > 0:
                wanted = min(1000, remaining)
                page = meters.list(conn, scope, after_id=after, limit=wanted)
                for m in page:
                    model = f"{m.manufacturer} {m.model}".strip()
                    table.add_row(str(m.id), m.serial, m.medium, m.protocol, model, m.status)
                if len(page) < wanted:
                    break
                remaining, after = remaining - wanted, page[-1].id
        console.print(table)

    _run(go)


@meters_app.command("show")
def meters_show(tenant: TenantOption, serial: str, database_url: DatabaseOption = None) -> None:
    """Show one meter with its channels and their newest reading."""

    def go() -> None:
        from openami.store.readings import latest_reading_ts
        from openami.store.repositories import channels, meters

        engine = _engine(_settings(database_url=database_url))
        with engine.connect() as conn:
            scope = _scope(conn, tenant)
            meter = meters.get_by_key(conn, scope, serial)
            meter_channels = channels.list(conn, scope, filters={"meter_id": meter.id})
        console.print(
            f"[bold]{meter.serial}[/bold]  {meter.medium}  {meter.manufacturer} {meter.model}  "
            f"protocol {meter.protocol}  status {meter.status}"
        )
        table = Table("channel id", "code", "kind", "unit", "interval", "newest reading")
        for ch in meter_channels:
            newest = latest_reading_ts(engine, ch.kind, ch.id)
            table.add_row(
                str(ch.id),
                ch.code,
                ch.kind,
                ch.unit,
                f"{ch.interval_s or '-'}",
                f"{newest:%Y-%m-%d %H:%M} UTC" if newest else "-",
            )
        console.print(table)

    _run(go)


class CommandKindOption(StrEnum):
    disconnect = "disconnect"
    connect = "connect"
    time_sync = "time_sync"


@meters_app.command("command")
def meters_command(
    tenant: TenantOption,
    serial: str,
    kind: CommandKindOption,
    database_url: DatabaseOption = None,
) -> None:
    """Send a remote command to a DLMS meter and wait for its confirmation (audited as the OS user)."""

    def go() -> None:
        import getpass

        from openami.hes.commands import CommandService
        from openami.security.keyvault import KeyVault, load_master_key
        from openami.store.repositories import meters

        settings = _settings(database_url=database_url)
        engine = _engine(settings)
        with engine.connect() as conn:
            scope = _scope(conn, tenant)
            meter = meters.get_by_key(conn, scope, serial)
        service = CommandService(
            engine,
            KeyVault(engine, load_master_key(settings)),
            client_system_title=bytes.fromhex(settings.dlms_client_system_title),
            timeout_s=settings.dlms_timeout_s,
        )
        record = asyncio.run(
            service.run(scope.tenant_id, meter.id, kind.value, actor=f"cli:{getpass.getuser()}")
        )
        console.print_json(
            json.dumps({"id": record.id, "kind": record.kind, "state": record.state, "result": record.result})
        )
        if record.state != "succeeded":
            raise CliError(f"{kind.value} of {serial} failed", 1)

    _run(go)


class ExportFormat(StrEnum):
    table = "table"
    csv = "csv"
    json = "json"


def _parse_time(value: str | None, default: datetime) -> datetime:
    if value is None:
        return default
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise CliError(f"not an ISO-8601 time: {value!r}", 2) from None
    if moment.tzinfo is None:
        raise CliError(f"time {value!r} needs a UTC offset (e.g. {value}+00:00)", 2)
    return moment


@app.command()
def readings(
    tenant: TenantOption,
    serial: Annotated[str, typer.Argument(help="Meter serial.")],
    channel: Annotated[str, typer.Argument(help="Channel code, e.g. 1-0:1.29.0.")],
    start: Annotated[str | None, typer.Option(help="ISO-8601 with offset; default 24 h ago.")] = None,
    end: Annotated[str | None, typer.Option(help="ISO-8601 with offset; default now.")] = None,
    fmt: Annotated[ExportFormat, typer.Option("--format", "-f")] = ExportFormat.table,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Write to a file.")] = None,
    database_url: DatabaseOption = None,
) -> None:
    """Print or export one channel's readings (latest version of each)."""

    def go() -> None:
        from openami.store import readings as store_readings

        engine = _engine(_settings(database_url=database_url))
        t1 = _parse_time(end, datetime.now(UTC))
        t0 = _parse_time(start, t1 - timedelta(days=1))
        if t0 >= t1:
            raise CliError("--start must be before --end", 2)
        with engine.connect() as conn:
            ch = _channel(conn, tenant, serial, channel)
        rows: list[store_readings.ReadingRow] = []
        after = None
        while True:
            page = store_readings.query_readings(engine, ch.kind, ch.id, t0, t1, limit=1000, after=after)
            rows.extend(page)
            if len(page) < 1000:
                break
            after = page[-1].ts
        out = output.open("w", newline="") if output else sys.stdout
        try:
            if fmt is ExportFormat.table and not output:
                table = Table("ts (UTC)", f"value ({ch.unit})", "quality", "version", "source")
                for r in rows:
                    table.add_row(r.ts.isoformat(), f"{r.value:g}", str(r.quality), str(r.version), r.source)
                console.print(table)
            elif fmt is ExportFormat.json:
                json.dump(
                    [
                        {
                            "ts": r.ts.isoformat(),
                            "value": r.value,
                            "unit": ch.unit,
                            "quality": r.quality,
                            "version": r.version,
                        }
                        for r in rows
                    ],
                    out,
                    indent=1,
                )
                out.write("\n")
            else:
                writer = csv.writer(out)
                writer.writerow(["ts", "value", "unit", "quality", "version", "source"])
                writer.writerows(
                    [r.ts.isoformat(), repr(r.value), ch.unit, r.quality, r.version, r.source] for r in rows
                )
        finally:
            if output:
                out.close()
        if output:
            err.print(f"{len(rows)} readings written to {output}")

    _run(go)
