"""``openami gateways``: the head-end's side of OpenAMI gateways, from the command line.

``push-config`` stages a gateway's next CONFIG in the database, as ``POST /gateways/{id}/link/config``
does, and audits it as the OS user; the head-end process that holds the gateway link sends it at the
gateway's next HEALTH (and again until a HEALTH reports the version), so this command needs no broker.
``link`` shows the link as ``GET /gateways/{id}/link`` does, never the key.
"""

from __future__ import annotations

import getpass
import json
import tomllib
from pathlib import Path
from typing import Annotated, Any

import typer

from openami.cli.base import CliError, DatabaseOption, TenantOption, _engine, _run, _settings, app, console

gateways_app = typer.Typer(no_args_is_help=True, help="OpenAMI gateways: configuration and link.")
app.add_typer(gateways_app, name="gateways")


def _meter_file(path: Path) -> tuple[list[Any], int | None]:
    """The meters (and optional ``poll_interval_s``) of a TOML file (``[[meters]]`` tables, as in a
    gateway's own configuration) or a JSON file (``{"meters": [...]}`` or a bare list)."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise CliError(f"--file: cannot read {str(path)!r}: {exc.strerror or exc}", 2) from None
    except UnicodeDecodeError:
        raise CliError(f"--file: {str(path)!r} is not UTF-8 text", 2) from None
    try:
        data: Any = json.loads(text) if path.suffix.lower() == ".json" else tomllib.loads(text)
    except (json.JSONDecodeError, tomllib.TOMLDecodeError) as exc:
        raise CliError(
            f"--file: {path.name} is not valid {path.suffix.lstrip('.').upper() or 'TOML'}: {exc}", 2
        ) from None
    if isinstance(data, list):
        data = {"meters": data}
    if not isinstance(data, dict) or not isinstance(data.get("meters"), list):
        raise CliError(
            '--file: expected a list of meters ([[meters]] tables, or {"meters": [...]} in JSON)', 2
        )
    interval = data.get("poll_interval_s")
    if interval is not None and (
        not isinstance(interval, int) or isinstance(interval, bool) or not 1 <= interval <= 86400
    ):
        raise CliError("--file: poll_interval_s must be a whole number of seconds, 1 to 86400", 2)
    return data["meters"], interval


@gateways_app.command("push-config")
def push_config_command(
    tenant: TenantOption,
    gateway: Annotated[str, typer.Argument(help="The gateway's ident (GW-0001).")],
    file: Annotated[
        Path | None,
        typer.Option("--file", "-f", help="Meter list (TOML [[meters]] or JSON); default: the registry's."),
    ] = None,
    poll_interval: Annotated[
        int | None, typer.Option(min=1, max=86400, help="Seconds between polls.")
    ] = None,
    database_url: DatabaseOption = None,
) -> None:
    """Stage a gateway's next configuration (meter list, poll interval); the head-end delivers it."""

    def go() -> None:
        from openami.hes.gateway_link_store import UnknownGateway, config_entries, push_config
        from openami.security.audit import AuditLog
        from openami.security.errors import InvalidInput
        from openami.security.keyvault import KeyVault, load_master_key
        from openami.store.repositories import Scope, comm_devices, tenants

        meters, interval = (None, None) if file is None else _meter_file(file)
        if meters is not None:
            try:
                meters = config_entries(meters, base=file.resolve().parent if file else None)
            except InvalidInput as exc:
                raise CliError(f"--file: {exc}", 2) from None
        settings = _settings(**({"database_url": database_url} if database_url else {}))
        engine = _engine(settings)
        vault = KeyVault(engine, load_master_key(settings))
        with engine.begin() as conn:
            scope = Scope(tenants.get_by_slug(conn, tenant).id)
            device = comm_devices.get_by_key(conn, scope, gateway)
            try:
                pushed = push_config(
                    conn,
                    vault,
                    AuditLog(),
                    scope,
                    device.id,
                    f"cli:{getpass.getuser()}",
                    meters=meters,
                    poll_interval_s=poll_interval if poll_interval is not None else interval,
                )
            except UnknownGateway:
                raise CliError(
                    f"gateway {gateway!r} has no link key yet (POST /gateways/{device.id}/link/key)"
                ) from None
        console.print(
            f"gateway {pushed.ident}: configuration version {pushed.version} staged ({pushed.meters} meters);"
            " the head-end sends it at the gateway's next HEALTH and until the gateway reports it"
        )
        for serial in pushed.skipped:
            console.print(f"  not listed: meter {serial} has no address on its device")

    _run(go)


@gateways_app.command("link")
def link_command(
    tenant: TenantOption,
    gateway: Annotated[str, typer.Argument(help="The gateway's ident.")],
    json_output: Annotated[bool, typer.Option("--json", help="The link as JSON.")] = False,
    database_url: DatabaseOption = None,
) -> None:
    """Show a gateway's link: key version, last seen, backlog, configuration delivery (never the key)."""

    def go() -> None:
        from dataclasses import asdict

        from openami.hes.gateway_link_store import link_status
        from openami.store.repositories import Scope, comm_devices, tenants

        settings = _settings(**({"database_url": database_url} if database_url else {}))
        with _engine(settings).connect() as conn:
            scope = Scope(tenants.get_by_slug(conn, tenant).id)
            status = link_status(conn, scope, comm_devices.get_by_key(conn, scope, gateway).id)
        if json_output:
            console.print_json(json.dumps(asdict(status), default=str))
            return
        if not status.key_present:
            console.print(
                f"gateway {status.ident}: no link key (POST /gateways/{status.gateway_id}/link/key)"
            )
            return
        if not status.config_version:
            pending = "none pushed: the gateway runs its local file"
        else:
            pending = "pending" if status.config_pending else "applied"
        seen = status.last_seen_at or "never"
        console.print(
            f"gateway {status.ident}: key version {status.key_version}, last seen {seen}\n"
            f"  backlog {status.backlog_readings} readings, {status.unacked_batches} batches unacknowledged\n"
            f"  configuration pushed {status.config_version}, reported {status.config_reported_version}"
            f" ({pending})"
        )

    _run(go)
