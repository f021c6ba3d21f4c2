"""``openami simulate gateways``: virtual gateways with their meters, against a running head-end.

The gateways and meters are registered in the head-end's database first (``--database-url``, the
head-end's master key from its settings), then each gateway's agent polls its simulated meters and
forwards over the broker, through a link the ``--outage-every`` / ``--outage-for`` plan cuts in turn.
A live table shows each gateway's link, backlog and acknowledgements until Ctrl-C (or ``--duration``).
"""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.live import Live
from rich.table import Table

from openami.cli.base import (
    CliError,
    DatabaseOption,
    TenantOption,
    _engine,
    _run,
    _settings,
    console,
    simulate_app,
)


def _table(rows: list[dict[str, Any]]) -> Table:
    table = Table("gateway", "meters", "link", "cuts", "connected", "readings", "backlog", "unacked")
    for row in rows:
        table.add_row(
            row["gateway"],
            str(row["meters"]),
            row.get("link", "-"),
            str(row.get("cuts", "-")),
            "yes" if row.get("connected") else "no",
            str(row.get("readings", "-")),
            str(row.get("backlog", "-")),
            str(row.get("unacked", "-")),
        )
    return table


@simulate_app.command("gateways")
def simulate_gateways(
    tenant: TenantOption,
    mqtt_url: Annotated[
        str | None, typer.Option(help="The head-end's broker (default: the mqtt_url setting).")
    ] = None,
    count: Annotated[int, typer.Option(min=1, max=999, help="Gateways.")] = 3,
    mbus: Annotated[int, typer.Option(min=0, max=5000, help="M-Bus meters per gateway.")] = 8,
    modbus: Annotated[int, typer.Option(min=0, max=5000, help="Modbus meters per gateway.")] = 4,
    poll_interval: Annotated[int, typer.Option(min=1, max=86400, help="Seconds between polls.")] = 60,
    outage_every: Annotated[
        float, typer.Option(min=0, help="Cut each gateway's link once per this many seconds (0: never).")
    ] = 0.0,
    outage_for: Annotated[float, typer.Option(min=0, help="How long each outage lasts, in seconds.")] = 0.0,
    mqtt_version: Annotated[str, typer.Option(help="5, or 3.1.1 for the embedded broker.")] = "5",
    directory: Annotated[
        Path, typer.Option("--dir", help="Where the gateways keep their configuration, keys and archives.")
    ] = Path("sim-gateways"),
    duration: Annotated[
        float, typer.Option(min=0, help="Stop after this many seconds (0: at Ctrl-C).")
    ] = 0.0,
    database_url: DatabaseOption = None,
) -> None:
    """Run virtual gateways (the real agent, simulated meters) against the head-end, with link outages."""
    from openami.security.keyvault import KeyVault, load_master_key
    from openami.simulator.gateway_fleet import GatewayFleet, OutagePlan, register_fleet

    def check() -> tuple[Any, str, Any]:
        if mqtt_version not in ("5", "3.1.1"):
            raise CliError("--mqtt-version: 5 or 3.1.1", 2)
        overrides = {"database_url": database_url} if database_url else {}
        settings = _settings(**overrides)
        url = mqtt_url or settings.mqtt_url
        if url == "embedded":
            raise CliError(
                "--mqtt-url: give the head-end's broker (mqtt://host:port); 'embedded' is in-process", 2
            )
        plan = None
        if outage_every:
            try:
                plan = OutagePlan(outage_every, outage_for)
            except ValueError as exc:
                raise CliError(f"--outage-for: {exc}", 2) from None
        return settings, url, plan

    settings, url, plan = _run(check)

    async def run() -> None:
        fleet = GatewayFleet(
            tenant=tenant,
            directory=directory.resolve(),
            mqtt_url=url,
            count=count,
            mbus=mbus,
            modbus=modbus,
            mqtt_version=mqtt_version,
            prefix=settings.mqtt_topic_prefix,
            poll_interval_s=poll_interval,
            outage=plan,
        )
        engine = _engine(settings)
        try:
            await fleet.start_sites()
            vault = KeyVault(engine, load_master_key(settings))
            created = await asyncio.to_thread(register_fleet, engine, vault, fleet)
            console.print(
                f"registered {created['gateways']} gateways, {created['meters']} meters,"
                f" {created['keys']} link keys (tenant {tenant})"
            )
            await fleet.start_agents()
            loop = asyncio.get_running_loop()
            end = loop.time() + duration if duration else None
            with Live(_table(await fleet.status()), console=console, refresh_per_second=2) as live:
                while end is None or loop.time() < end:
                    await asyncio.sleep(1.0)
                    live.update(_table(await fleet.status()))
        finally:
            await fleet.stop()
            engine.dispose()

    with contextlib.suppress(KeyboardInterrupt):
        _run(lambda: asyncio.run(run()))
