"""``openami worker --role …`` (scale-out processes) and ``openami read METER`` (one read, now)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import time
from datetime import UTC, datetime
from typing import Annotated, Any

import typer

from openami.cli.base import CliError, DatabaseOption, TenantOption, _engine, _run, _settings, app, console
from openami.hes.roles import Role


@app.command()
def worker(
    role: Annotated[
        list[Role], typer.Option("--role", "-r", help="scheduler, poller or ingest; repeat for several.")
    ],
    name: Annotated[str | None, typer.Option(help="This worker's name in jobs (default host-pid).")] = None,
    database_url: DatabaseOption = None,
    bus_url: Annotated[str | None, typer.Option(help="Overrides OPENAMI_BUS_URL (nats://host:4222).")] = None,
) -> None:
    """Run head-end roles until SIGTERM or Ctrl-C (docs/operations/scaling-out.md)."""

    def go() -> None:
        from openami.hes.roles import WorkerProcess

        overrides: dict[str, Any] = {"database_url": database_url}
        if bus_url is not None:
            overrides["bus_url"] = bus_url
        process = WorkerProcess(_settings(**overrides), frozenset(role), name=name)
        asyncio.run(_serve(process))

    _run(go)


async def _serve(process: Any) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await process.start()
    console.print(f"worker running: {', '.join(sorted(process.roles))}")
    try:
        await stop.wait()
    finally:
        await process.stop()


@app.command()
def read(
    tenant: TenantOption,
    serial: Annotated[str, typer.Argument(help="Meter serial.")],
    what: Annotated[str, typer.Option(help="registers, load_profile, events or clock_check.")] = "registers",
    queue: Annotated[
        bool, typer.Option("--queue", help="Leave the read to the running pollers instead of reading here.")
    ] = False,
    wait_s: Annotated[
        float, typer.Option("--wait", min=0, help="With --queue: seconds to wait for it.")
    ] = 60,
    database_url: DatabaseOption = None,
) -> None:
    """Read one meter now, as an on-demand job (lane before every schedule), and print how it went."""

    def go() -> None:
        from openami.cli.admin import _scope
        from openami.hes.job_queries import get_job, submit_read
        from openami.store.repositories import meters

        settings = _settings(database_url=database_url)
        engine = _engine(settings)
        with engine.connect() as conn:
            scope = _scope(conn, tenant)
            found = meters.get_by_key(conn, scope, serial)
        job_id = submit_read(engine, scope.tenant_id, found.id, datetime.now(UTC), what)
        if queue:
            record = _wait(engine, scope.tenant_id, job_id, wait_s)
        else:
            asyncio.run(_read_here(settings, engine, job_id))
            record = get_job(engine, scope.tenant_id, job_id)
        console.print_json(
            json.dumps(
                {
                    "job": record.id,
                    "meter": serial,
                    "state": record.state,
                    "attempts": record.attempts,
                    "error": record.error,
                }
            )
        )
        if record.state != "done":
            raise CliError(f"read of {serial} {record.state}: {record.error or 'not finished'}", 1)

    _run(go)


def _wait(engine: Any, tenant_id: int, job_id: int, wait_s: float) -> Any:
    from openami.hes.job_queries import get_job

    deadline = time.monotonic() + wait_s
    while True:
        record = get_job(engine, tenant_id, job_id)
        if record.state in ("done", "failed", "cancelled") or time.monotonic() >= deadline:
            return record
        time.sleep(0.5)


async def _read_here(settings: Any, engine: Any, job_id: int) -> None:
    """Claim the job and run it in this process, storing what it reads before returning."""
    from openami.bus.memory import MemoryBus
    from openami.hes import job_store
    from openami.hes.job_worker import JobWorker
    from openami.hes.meter_reader import MeterReader, PullCollectors
    from openami.hes.roles import command_service, worker_options
    from openami.mdm.ingest import IngestService
    from openami.observability.metrics import Metrics
    from openami.security.keyvault import KeyVault, load_master_key

    bus = MemoryBus()
    await bus.start()
    ingest = IngestService(engine, bus, Metrics(), flush_ms=50)
    await ingest.start()
    try:
        vault = KeyVault(engine, load_master_key(settings))
        options = worker_options(settings)
        collectors = PullCollectors.build(settings, engine, bus, vault)
        reader = MeterReader(engine, collectors, vault, command_service(settings, engine, vault))
        runner = JobWorker(engine, bus, [reader])
        claimed = job_store.claim_group(
            engine, [job_id], f"{runner.name}#cli", datetime.now(UTC), options.lease
        )
        if claimed == job_store.BUSY or not claimed:
            raise CliError(f"job {job_id} is not free to run here (a poller may have taken it)", 1)
        await runner.run_claimed(claimed)
        await bus.drain()
    finally:
        with contextlib.suppress(Exception):
            await ingest.stop()
        await bus.close()
