"""``openami bench``: benchmarks behind the performance goals, JSON on stdout."""

from __future__ import annotations

import json
from collections.abc import Callable
from enum import StrEnum
from typing import Annotated, Any

import typer

from openami.cli.base import (
    CliError,
    _progress,
    _run,
    _settings,
    bench_app,
    console,
)


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
    new_channels: Annotated[
        bool,
        typer.Option(
            "--new-channels",
            help="service only: a first day, one message per meter with ROWS/CHANNELS new register channels.",
        ),
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object only.")] = False,
) -> None:
    """Write N synthetic interval readings through the real ingest path and report the rate."""

    def go() -> None:
        from openami.bench.ingest import run_ingest_bench
        from openami.bench.ingest_service import run_service_bench

        if new_channels and through is not BenchPath.service:
            raise CliError("--new-channels needs --through service", 2)
        url = database_url or _settings().effective_database_url

        def bench(progress: Callable[[int, int], None] | None) -> dict[str, Any]:
            if through is BenchPath.service:
                return run_service_bench(
                    url,
                    rows,
                    meters=channels,
                    message_rows=min(batch_rows, 50_000),
                    new_channels=new_channels,
                    progress=progress,
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


@bench_app.command("hes")
def bench_hes(
    meters: Annotated[
        int, typer.Option(min=1, max=1_000_000, help="Simulated meters, half M-Bus and half Modbus.")
    ] = 100_000,
    pollers: Annotated[int, typer.Option(min=1, max=16, help="Poller worker processes.")] = 1,
    flaky: Annotated[
        float, typer.Option(min=0.0, max=1.0, help="Share of meters that fail some sessions.")
    ] = 0.0,
    flaky_rate: Annotated[
        float, typer.Option(min=0.0, max=1.0, help="How often a flaky meter stays silent in a session.")
    ] = 0.5,
    dead: Annotated[float, typer.Option(min=0.0, max=1.0, help="Share of meters that never answer.")] = 0.0,
    simulators: Annotated[int, typer.Option(min=1, max=16, help="Processes serving the fleet.")] = 1,
    database_url: Annotated[
        str | None, typer.Option("--database-url", help="PostgreSQL server (a private schema per run).")
    ] = None,
    nats_url: Annotated[
        str, typer.Option("--nats-url", help="NATS JetStream server.")
    ] = "nats://127.0.0.1:4222",
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object only.")] = False,
) -> None:
    """One day's schedule of N simulated meters collected by scheduler, poller and ingest worker processes."""

    def go() -> None:
        from openami.bench.hes import run_hes_bench

        url = database_url or _settings().effective_database_url

        def bench(progress: Callable[[int, int], None] | None) -> dict[str, Any]:
            return run_hes_bench(
                url,
                meters,
                pollers=pollers,
                flaky=flaky,
                flaky_rate=flaky_rate,
                dead=dead,
                nats_url=nats_url,
                simulator_processes=simulators,
                progress=progress,
            )

        if as_json:
            print(json.dumps(bench(None)))
            return
        with _progress() as bar:
            task = bar.add_task(f"daily reads, {pollers} poller(s)", total=meters)
            result = bench(lambda done, total: bar.update(task, completed=done, total=total))
        console.print_json(json.dumps(result))

    _run(go)
