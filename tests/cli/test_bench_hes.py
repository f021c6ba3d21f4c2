"""``openami bench hes`` end to end at a tiny scale: worker processes over NATS JetStream and PostgreSQL
collect a simulated fleet with flaky and dead meters, and the run leaves no schema or stream behind."""

from __future__ import annotations

import asyncio
import json

import pytest
from sqlalchemy import text
from typer.testing import CliRunner

from openami.cli import app
from openami.store.engine import make_engine

pytestmark = [pytest.mark.postgres, pytest.mark.nats, pytest.mark.slow, pytest.mark.timeout(240)]


async def _stream_names(nats_url: str) -> set[str]:
    import nats

    client = await nats.connect(nats_url, connect_timeout=5, max_reconnect_attempts=0)
    try:
        return {info.config.name or "" for info in await client.jsm().streams_info()}
    finally:
        await client.close()


def _bench_schemas(postgres_url: str) -> set[str]:
    engine = make_engine(postgres_url)
    try:
        with engine.connect() as conn:
            names = conn.scalars(text("SELECT nspname FROM pg_namespace WHERE nspname LIKE 'bench_hes_%'"))
            return set(names)
    finally:
        engine.dispose()


def test_a_small_fleet_is_collected_by_worker_processes(postgres_url: str, nats_url: str) -> None:
    streams, schemas = asyncio.run(_stream_names(nats_url)), _bench_schemas(postgres_url)
    result = CliRunner().invoke(
        app,
        ["bench", "hes", "--meters", "200", "--pollers", "2", "--flaky", "0.02", "--dead", "0.01",
         "--database-url", postgres_url, "--nats-url", nats_url, "--json"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    figures = json.loads(result.output.strip().splitlines()[-1])
    assert figures["jobs"] == 200 and figures["done"] + figures["failed"] == 200
    assert figures["dead_meters"] == 2 and figures["dead_reported"] == 2
    assert figures["failed_not_dead"] <= figures["flaky_meters"] == 4
    assert figures["read_success"] == figures["done"] / 200 >= 0.97
    assert figures["readings"] > figures["done"]  # every meter answers several registers
    assert figures["sessions"] >= 200 and figures["meters_per_s"] > 0
    assert set(figures["cpu_s"]) >= {"simulators", "scheduler", "poller", "ingest"}
    assert "projected_s" in figures["goal"]
    left = asyncio.run(_stream_names(nats_url)) - streams
    assert not {name for name in left if name.startswith("OPENAMI_B")}  # the run's streams are dropped
    assert _bench_schemas(postgres_url) <= schemas  # and its schema
