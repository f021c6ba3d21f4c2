"""`openami`: the command line (Typer + Rich).

Commands stay thin: parse, call a service, render. Every OpenAMI error is turned into one clear red line
on stderr and an exit code (2 for bad input or configuration, 1 for a failure while running), never a
traceback, because operators script these commands.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import json
import sys
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from openami import __version__
from openami.config import Settings, load_settings
from openami.protocols.decoders import DECODERS

app = typer.Typer(no_args_is_help=True, add_completion=False, help="OpenAMI: open-source AMI platform.")
db_app = typer.Typer(no_args_is_help=True, help="Database schema.")
users_app = typer.Typer(no_args_is_help=True, help="Users of a tenant.")
meters_app = typer.Typer(no_args_is_help=True, help="Meters of a tenant.")
bench_app = typer.Typer(no_args_is_help=True, help="Benchmarks (JSON output).")
app.add_typer(db_app, name="db")
app.add_typer(users_app, name="users")
app.add_typer(meters_app, name="meters")
app.add_typer(bench_app, name="bench")
simulate_app = typer.Typer(no_args_is_help=True, help="Simulated meters speaking the real protocols.")
app.add_typer(simulate_app, name="simulate")

console = Console()
err = Console(stderr=True)
T = TypeVar("T")

DatabaseOption = Annotated[str | None, typer.Option("--database-url", help="Overrides OPENAMI_DATABASE_URL.")]
TenantOption = Annotated[str, typer.Option("--tenant", "-t", help="Tenant slug.")]


class CliError(Exception):
    """A user-facing failure with its exit code."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


def _error_code(exc: BaseException) -> int | None:
    """Exit code for an error we know how to explain, None for a bug (which keeps its traceback)."""
    from openami.bus.base import BusError
    from openami.drivers.errors import DriverError
    from openami.security.errors import SecurityError
    from openami.store.engine import StoreError
    from openami.transports.errors import TransportError

    if isinstance(exc, ValidationError | ValueError):
        return 2
    if isinstance(exc, StoreError | BusError | TransportError | SecurityError | DriverError | OSError):
        return 1
    from sqlalchemy.exc import OperationalError

    if isinstance(exc, OperationalError):
        return 1
    return None


@contextlib.contextmanager
def _clean_errors() -> Iterator[None]:
    try:
        yield
    except CliError as exc:
        err.print(f"[red]error:[/red] {escape(str(exc))}", soft_wrap=True)
        raise typer.Exit(exc.code) from None
    except (typer.Exit, typer.Abort, KeyboardInterrupt):
        raise
    except Exception as exc:
        code = _error_code(exc)
        if code is None:
            raise
        message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        err.print(f"[red]error:[/red] {type(exc).__name__}: {escape(message)}", soft_wrap=True)
        raise typer.Exit(code) from None


def _settings(**overrides: Any) -> Settings:
    try:
        settings = load_settings(**overrides)
    except ValidationError as exc:
        first = exc.errors()[0]
        raise CliError(f"bad setting {'.'.join(map(str, first['loc']))}: {first['msg']}", 2) from None
    from openami.observability.logs import configure_logging

    configure_logging(settings.log_level, settings.log_format)
    return settings


def _engine(settings: Settings) -> Any:
    from openami.store.engine import make_engine

    return make_engine(settings.effective_database_url)


def _run(fn: Callable[[], T]) -> T:
    with _clean_errors():
        return fn()


def _progress() -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err,
        transient=False,
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


class BenchPath(StrEnum):
    store = "store"
    service = "service"


@bench_app.command("ingest")
def bench_ingest(
    database_url: Annotated[str | None, typer.Option("--database-url", help="Database to write to.")] = None,
    rows: Annotated[int, typer.Option(min=1, max=100_000_000)] = 1_000_000,
    channels: Annotated[int, typer.Option(min=1, help="Channels (store) or meters (service).")] = 1000,
    batch_rows: Annotated[
        int, typer.Option(min=100, help="Rows per write (store) or per bus message.")
    ] = 50_000,
    through: Annotated[
        BenchPath, typer.Option(help="store: the reading writer; service: bus + ingest service + writer.")
    ] = BenchPath.store,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object only.")] = False,
) -> None:
    """Write N synthetic interval readings through the real ingest path and report the rate."""

    def go() -> None:
        from openami.bench.ingest import run_ingest_bench
        from openami.bench.ingest_service import run_service_bench

        url = database_url or _settings().effective_database_url

        def bench(progress: Callable[[int, int], None] | None) -> dict[str, Any]:
            if through is BenchPath.service:
                return run_service_bench(
                    url, rows, meters=channels, message_rows=min(batch_rows, 50_000), progress=progress
                )
            return run_ingest_bench(url, rows, channels=channels, batch_rows=batch_rows, progress=progress)

        if as_json:
            print(json.dumps(bench(None)))
            return
        with _progress() as bar:
            task = bar.add_task(f"ingest through {through.value}", total=rows)
            result = bench(lambda done, total: bar.update(task, completed=done, total=total))
        console.print_json(json.dumps(result))

    _run(go)


decode_app = typer.Typer(no_args_is_help=True, help="Decode captured meter messages (offline, no database).")
app.add_typer(decode_app, name="decode")


def _hex_option(value: str | None, name: str) -> bytes | None:
    if value is None:
        return None
    from openami.protocols.dlms.errors import DecodeError
    from openami.protocols.dlms.stream import parse_hex_text

    try:
        return parse_hex_text(value)
    except DecodeError as exc:
        raise CliError(f"{name} is not hex: {exc}", 2) from None


def _capture_bytes(file: Path | None, hex_text: str | None) -> bytes:
    """The capture from FILE (hex text or raw binary, whichever it is) or from --hex."""
    from openami.protocols.dlms.errors import DecodeError
    from openami.protocols.dlms.stream import parse_hex_text

    if (file is None) == (hex_text is None):
        raise CliError("give exactly one of FILE or --hex", 2)
    if hex_text is not None:
        data = _hex_option(hex_text, "--hex")
        return data or b""
    assert file is not None
    try:
        raw = file.read_bytes()
    except OSError as exc:
        raise CliError(f"cannot read {file}: {exc.strerror or exc}", 2) from None
    try:
        return parse_hex_text(raw.decode("ascii"))
    except (UnicodeDecodeError, DecodeError):
        return raw  # not hex text: a binary capture


def _capture_parts(file: Path | None, hex_text: str | None) -> list[bytes]:
    """Several captures from one input: the lines of a hex FILE, or --hex parts separated by commas
    (``full,compact`` as receivers log a meter's telegrams); binary input is one capture."""
    if file is not None and hex_text is None:
        try:
            text = file.read_bytes().decode("ascii")
        except UnicodeDecodeError:
            return [_capture_bytes(file, None)]
        except OSError as exc:
            raise CliError(f"cannot read {file}: {exc.strerror or exc}", 2) from None
    elif hex_text is not None and file is None:
        text = hex_text
    else:
        raise CliError("give exactly one of FILE or --hex", 2)
    parts = [p for line in text.splitlines() for p in line.split(",") if p.strip() and p.lstrip()[:1] != "#"]
    if not parts:
        raise CliError("no telegram in the input", 2)
    return [_capture_bytes(None, part) for part in parts]


@decode_app.command("dlms")
def decode_dlms(
    file: Annotated[
        Path | None, typer.Argument(help="Capture: hex text or raw bytes (HDLC, wrapper or APDU).")
    ] = None,
    hex_text: Annotated[str | None, typer.Option("--hex", help="The capture as hex instead of FILE.")] = None,
    key: Annotated[str | None, typer.Option("--key", help="Block cipher (encryption) key, hex.")] = None,
    auth_key: Annotated[
        str | None,
        typer.Option("--auth-key", help="Authentication key, hex (without it tags are not checked)."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print compact JSON on one line.")] = False,
) -> None:
    """Decode DLMS/COSEM push notifications and print them as a JSON list."""

    def go() -> None:
        from openami.protocols.dlms.stream import decode_stream

        data = _capture_bytes(file, hex_text)
        result = decode_stream(
            data,
            encryption_key=_hex_option(key, "--key"),
            authentication_key=_hex_option(auth_key, "--auth-key"),
        )
        if not result.notifications:
            reason = result.errors[0] if result.errors else "no DLMS notification in the input"
            raise CliError(f"undecodable: {reason}", 2)
        for error in result.errors:
            err.print(f"[yellow]warning:[/yellow] {escape(error)}", soft_wrap=True)
        rendered = [n.to_dict() for n in result.notifications]
        if as_json:
            print(json.dumps(rendered, ensure_ascii=False))
        else:
            print(json.dumps(rendered, ensure_ascii=False, indent=1))

    _run(go)


def _decode_command(name: str) -> None:
    """``openami decode <name>``: one command per offline decoder of :mod:`openami.protocols.decoders`."""

    def command(
        file: Annotated[
            Path | None, typer.Argument(help="Capture: hex text, a text telegram or raw bytes.")
        ] = None,
        hex_text: Annotated[
            str | None, typer.Option("--hex", help="The capture as hex instead of FILE.")
        ] = None,
        key: Annotated[
            str | None, typer.Option("--key", help="Decryption key, hex (where it applies).")
        ] = None,
        as_json: Annotated[bool, typer.Option("--json", help="Print compact JSON on one line.")] = False,
    ) -> None:
        def go() -> None:
            from openami.protocols.decoders import UndecodableInput, decoder

            found = decoder(name)
            try:
                if found.sequence is None:
                    results = [found.decode(_capture_bytes(file, hex_text), _hex_option(key, "--key"))]
                else:
                    results = found.decode_sequence(_capture_parts(file, hex_text), _hex_option(key, "--key"))
            except UndecodableInput as exc:
                raise CliError(f"undecodable: {exc}", 2) from None
            for result in results:  # several telegrams: one JSON document each, in input order
                print(json.dumps(result, ensure_ascii=False, indent=None if as_json else 1))

        _run(go)

    command.__doc__ = f"Decode a {name} capture and print it as JSON."
    decode_app.command(name)(command)


for _name in DECODERS:
    _decode_command(_name)


@bench_app.command("decode")
def bench_decode(
    count: Annotated[int, typer.Option(min=100, max=10_000_000, help="Telegrams per decoder.")] = 20_000,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object only.")] = False,
) -> None:
    """Telegrams per second of the M-Bus and wireless M-Bus (plain and mode 5) decoders."""

    def go() -> None:
        from openami.bench.decode import run_decode_bench

        if as_json:
            print(json.dumps(run_decode_bench(count)))
            return
        with _progress() as bar:
            task = bar.add_task("decoding", total=None)
            result = run_decode_bench(count)
            bar.update(task, total=1, completed=1)
        console.print_json(json.dumps(result))

    _run(go)


@bench_app.command("dlms")
def bench_dlms(
    meters: Annotated[
        int, typer.Option(min=1, max=20_000, help="Simulated meters (one TCP port each).")
    ] = 200,
    rounds: Annotated[int, typer.Option(min=1, max=100, help="Reads per meter.")] = 2,
    concurrency: Annotated[int, typer.Option(min=1, max=4096, help="Reads in flight at once.")] = 64,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object only.")] = False,
) -> None:
    """Read one day of 15-minute load profile from N simulated DLMS meters over TCP (HLS, ciphered)."""

    def go() -> None:
        from openami.bench.dlms import run_dlms_bench

        if as_json:
            print(json.dumps(run_dlms_bench(meters, rounds=rounds, concurrency=concurrency)))
            return
        with _progress() as bar:
            task = bar.add_task("load-profile reads", total=meters * rounds)
            result = run_dlms_bench(
                meters,
                rounds=rounds,
                concurrency=concurrency,
                progress=lambda done, total: bar.update(task, completed=done, total=total),
            )
        console.print_json(json.dumps(result))

    _run(go)


@bench_app.command("gateway")
def bench_gateway(
    meters: Annotated[
        int, typer.Option(min=2, max=20_000, help="Simulated meters, half M-Bus and half Modbus.")
    ] = 1500,
    cycles: Annotated[int, typer.Option(min=1, max=100, help="Polling rounds, back to back.")] = 3,
    interval: Annotated[
        int, typer.Option(min=1, max=86400, help="The poll interval to keep up with (s).")
    ] = 900,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object only.")] = False,
) -> None:
    """One gateway agent polling N simulated meters behind a few converters: cycle time, CPU per cycle."""

    def go() -> None:
        from openami.bench.gateway import run_gateway_bench

        with _progress() as bar:
            task = bar.add_task("polling cycles", total=cycles)
            result = run_gateway_bench(
                meters,
                cycles=cycles,
                interval_s=interval,
                progress=lambda done, total: bar.update(task, completed=done, total=total),
            )
        if as_json:
            print(json.dumps(result))
        else:
            console.print_json(json.dumps(result))

    _run(go)


class LogFormatOption(StrEnum):
    text = "text"
    json = "json"


@app.command()
def gateway(
    config: Annotated[Path, typer.Option("--config", "-c", help="The gateway's TOML configuration file.")],
    log_level: Annotated[str, typer.Option(help="DEBUG, INFO, WARNING or ERROR.")] = "INFO",
    log_format: Annotated[
        LogFormatOption, typer.Option(help="Log lines as text or JSON.")
    ] = LogFormatOption.text,
) -> None:
    """Run the gateway / data-concentrator agent: poll local meters, archive, forward to the head-end."""

    def go() -> None:
        import sqlite3

        from openami.edge.agent import run_gateway
        from openami.edge.config import GatewayConfigError, load_config
        from openami.observability.logs import configure_logging

        try:
            settings = load_config(config)
        except GatewayConfigError as exc:
            raise CliError(f"bad gateway configuration: {exc}", 2) from None
        if log_level.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR"):
            raise CliError(f"--log-level: {log_level!r} is not DEBUG, INFO, WARNING or ERROR", 2)
        configure_logging(log_level, log_format.value)
        try:
            asyncio.run(run_gateway(settings))
        except sqlite3.Error as exc:
            raise CliError(f"gateway archive {settings.archive}: {exc}", 1) from None

    with contextlib.suppress(KeyboardInterrupt):
        _run(go)


class DlmsFramingOption(StrEnum):
    wrapper = "wrapper"
    hdlc = "hdlc"


@simulate_app.command("dlms")
def simulate_dlms(
    meters: Annotated[int, typer.Option(min=1, max=20_000)] = 10,
    base_port: Annotated[
        int, typer.Option(min=0, max=65535, help="Meter i listens on base-port + i.")
    ] = 14059,
    host: Annotated[str, typer.Option()] = "127.0.0.1",
    framing: Annotated[
        DlmsFramingOption,
        typer.Option(help="IEC 62056-47 wrapper, or HDLC (meter i at upper address 1, lower 16 + i)."),
    ] = DlmsFramingOption.wrapper,
) -> None:
    """Serve simulated DLMS meters over TCP until Ctrl-C; keys are the public demo keys."""

    def go() -> None:
        from openami.simulator.dlms_server import run_simulator

        def ready(simulator: Any) -> None:
            first, last = simulator.ports[0], simulator.ports[-1]
            where = "wrapper" if framing == DlmsFramingOption.wrapper else "HDLC, addresses 1/16.."
            console.print(
                f"{meters} DLMS meters on {host}:{first}..{last} ({where}; "
                "client 1 HLS-GMAC, client 16 public)"
            )

        asyncio.run(run_simulator(meters, base_port, host=host, framing=framing.value, on_ready=ready))

    with contextlib.suppress(KeyboardInterrupt):
        _run(go)


class P1VersionOption(StrEnum):
    v5 = "5"
    v4 = "4"
    v2_2 = "2.2"


def _print_push_ports(what: str, servers: list[Any], meters: list[Any], interval_s: float) -> None:
    first, last = servers[0].port, servers[-1].port
    where = f"{servers[0].host}:{first}" + (f"..{last}" if len(servers) > 1 else "")
    console.print(f"{what} on {where}, one frame every {interval_s:g} s (Ctrl-C stops)")
    if len(servers) > 1 and last - first != len(servers) - 1:  # ephemeral ports: list them
        for server, meter in zip(servers, meters, strict=True):
            console.print(f"  {server.host}:{server.port}  seed {meter.seed}")


@simulate_app.command("p1")
def simulate_p1(
    meters: Annotated[int, typer.Option(min=1, max=10_000, help="Meter i listens on port + i.")] = 1,
    port: Annotated[int, typer.Option(min=0, max=65535, help="First TCP port; 0: ephemeral ports.")] = 18088,
    host: Annotated[str, typer.Option()] = "127.0.0.1",
    version: Annotated[
        P1VersionOption, typer.Option(help="DSMR version of the telegrams.")
    ] = P1VersionOption.v5,
    interval: Annotated[
        float | None, typer.Option(min=0.05, help="Seconds between telegrams [default: 1 for v5, 10 before].")
    ] = None,
    encryption_key: Annotated[
        str | None, typer.Option(help="Encrypt as E-MeterP1 (Luxembourg/Austria): EK, 32 hex digits.")
    ] = None,
    authentication_key: Annotated[str | None, typer.Option(help="AK for E-MeterP1, 32 hex digits.")] = None,
) -> None:
    """Serve simulated DSMR P1 ports over TCP (as ser2net or a P1 dongle would) until Ctrl-C."""

    def go() -> None:
        from openami.protocols.dsmr import P1Keys
        from openami.simulator.p1_meter import build_p1_meters
        from openami.simulator.push_port import serve_push_meters

        keys = None
        if encryption_key is not None or authentication_key is not None:
            if encryption_key is None or authentication_key is None:
                raise CliError("E-MeterP1 needs both --encryption-key and --authentication-key", 2)
            keys = P1Keys(bytes.fromhex(encryption_key), bytes.fromhex(authentication_key))
        sims = build_p1_meters(meters, version=version.value, interval_s=interval, keys=keys)
        what = f"{meters} DSMR {version.value} P1 meter(s)" + (" (encrypted)" if keys else "")
        asyncio.run(
            serve_push_meters(
                sims,
                host=host,
                base_port=port,
                on_ready=lambda servers: _print_push_ports(what, servers, sims, sims[0].interval_s),
            )
        )

    with contextlib.suppress(KeyboardInterrupt):
        _run(go)


@simulate_app.command("sml")
def simulate_sml(
    meters: Annotated[int, typer.Option(min=1, max=10_000, help="Meter i listens on port + i.")] = 1,
    port: Annotated[int, typer.Option(min=0, max=65535, help="First TCP port; 0: ephemeral ports.")] = 18188,
    host: Annotated[str, typer.Option()] = "127.0.0.1",
    interval: Annotated[float, typer.Option(min=0.05, help="Seconds between SML files.")] = 1.0,
) -> None:
    """Serve simulated eHZ meters' SML interfaces over TCP (as an optical-head bridge would) until Ctrl-C."""

    def go() -> None:
        from openami.simulator.push_port import serve_push_meters
        from openami.simulator.sml_meter import build_sml_meters

        sims = build_sml_meters(meters, interval_s=interval)
        asyncio.run(
            serve_push_meters(
                sims,
                host=host,
                base_port=port,
                on_ready=lambda servers: _print_push_ports(f"{meters} SML meter(s)", servers, sims, interval),
            )
        )

    with contextlib.suppress(KeyboardInterrupt):
        _run(go)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
