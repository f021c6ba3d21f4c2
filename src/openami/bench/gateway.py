"""``openami bench gateway``: can one gateway agent poll N meters within a 15-minute interval?

One agent (:class:`openami.edge.agent.GatewayAgent`, exactly as ``openami gateway`` runs it) polls a
simulated site of N meters, half wired M-Bus behind M-Bus-to-TCP converters (250 per converter), half
Modbus behind Modbus TCP gateways (247 per gateway), for several cycles back to back. Each cycle is a
full polling round: every meter read by the head-end's collectors, every reading archived (SQLite,
WAL), then the forwarder's work on it: the new readings cut into batches and each batch compressed and
sealed (no broker: the network is not what is measured).

The site runs in a child process, so ``cpu_s_per_cycle`` is the agent's own CPU (this process's
``time.process_time``, worker threads included); ``cycle_s`` is wall-clock time with both processes
sharing the machine. The simulated buses answer at once: on a real M-Bus at 2400 baud a meter takes
0.3-1 s, so a real cycle is bounded by the buses, not by this CPU (``docs/operations/gateway.md``).
``margin`` is the interval divided by the cycle time: how many times over the agent would fit.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from openami.edge.agent import GatewayAgent
from openami.edge.config import GatewayConfig
from openami.protocols.edge import Kind, seal
from openami.simulator.edge_site import SimulatedSite, serve_site

__all__ = ["run_gateway_bench"]

Progress = Callable[[int, int], None]


def _serve(mbus: int, modbus: int, meters: Any) -> None:
    """Child process: serve the site and send its meter entries back through the pipe."""
    asyncio.run(serve_site(SimulatedSite(mbus=mbus, modbus=modbus), on_ready=meters.send))


def _config(directory: Path, meters: list[dict[str, str]], interval_s: int) -> GatewayConfig:
    return GatewayConfig.model_validate(
        {
            "id": "bench-gw",
            "tenant": "bench",
            "archive": str(directory / "archive.db"),
            "poll_interval_s": interval_s,
            "compression": "zstd",
            "uplink": {"url": "mqtt://127.0.0.1:1", "key": os.urandom(32).hex()},
            "meters": meters,
        }
    )


def _forward(agent: GatewayAgent, now: datetime) -> tuple[int, int, int]:
    """Cut every unsent reading into batches and seal each, as the forwarder does: (batches, plain
    bytes, sealed bytes). Blocking."""
    config, archive = agent.config, agent.archive
    batches = plain = sealed = 0
    while (batch := archive.cut_batch(now, max_readings=config.batch_readings)) is not None:
        envelope = seal(
            config.uplink.link_key, config.id, Kind.BATCH, batch.seq, batch.payload,
            compression=config.compression_code,
        )  # fmt: skip
        archive.acknowledge([batch.seq], now)
        batches, plain, sealed = batches + 1, plain + len(batch.payload), sealed + len(envelope)
    return batches, plain, sealed


class _CycleClock:
    """Each cycle's reads stamped at its own interval boundary (plus the time into the cycle), as if
    the cycles were an interval apart: back to back, they would fall into the same second, and the
    archive keeps a reading once per meter, channel and second."""

    def __init__(self, interval_s: int) -> None:
        self.interval_s = interval_s
        now = time.time()
        self.base = now - now % interval_s
        self.cycle = 0
        self.started = time.monotonic()

    def begin(self, cycle: int) -> None:
        self.cycle, self.started = cycle, time.monotonic()

    def __call__(self) -> datetime:
        at = self.base + self.cycle * self.interval_s + (time.monotonic() - self.started)
        return datetime.fromtimestamp(at, UTC)


async def _cycles(
    agent: GatewayAgent, clock: _CycleClock, cycles: int, progress: Progress | None
) -> list[dict[str, Any]]:
    results = []
    for cycle in range(cycles):
        clock.begin(cycle)
        cpu, wall = time.process_time(), time.perf_counter()
        report = await agent.poll_once()
        poll_s, poll_cpu = time.perf_counter() - wall, time.process_time() - cpu
        batches, plain, sealed = await asyncio.to_thread(_forward, agent, clock())
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        results.append(
            {
                "cycle_s": round(wall, 3),
                "cpu_s": round(cpu, 3),
                "poll_s": round(poll_s, 3),
                "poll_cpu_s": round(poll_cpu, 3),
                "readings": report.readings,
                "meters_ok": report.succeeded,
                "meters_failed": report.failed,
                "batches": batches,
                "batch_bytes": plain,
                "sealed_bytes": sealed,
            }
        )
        if progress is not None:
            progress(cycle + 1, cycles)
    return results


def run_gateway_bench(
    meters: int, *, cycles: int = 3, interval_s: int = 900, progress: Progress | None = None
) -> dict[str, Any]:
    """Poll ``meters`` simulated meters ``cycles`` times with one agent; report per cycle and overall."""
    mbus, modbus = meters - meters // 2, meters // 2
    context = multiprocessing.get_context("spawn")
    receive, send = context.Pipe(duplex=False)
    server = context.Process(target=_serve, args=(mbus, modbus, send), daemon=True)
    server.start()
    try:
        if not receive.poll(120):
            raise RuntimeError("the simulated site did not start within 120 s")
        entries: list[dict[str, str]] = receive.recv()
        with tempfile.TemporaryDirectory(prefix="openami-bench-gw-") as directory:
            clock = _CycleClock(interval_s)
            agent = GatewayAgent(_config(Path(directory), entries, interval_s), now=clock)
            try:
                results = asyncio.run(_cycles(agent, clock, cycles, progress))
            finally:
                agent.archive.close()
            archive_bytes = sum(f.stat().st_size for f in Path(directory).iterdir())
    finally:
        server.terminate()
        server.join(10)
    cycle_s = sum(r["cycle_s"] for r in results) / len(results)
    worst = max(r["cycle_s"] for r in results)
    return {
        "meters": meters,
        "mbus_meters": mbus,
        "modbus_meters": modbus,
        "mbus_converters": len({e["address"].split("?")[0] for e in entries if e["protocol"] == "mbus"}),
        "modbus_gateways": len({e["address"].split("?")[0] for e in entries if e["protocol"] == "modbus"}),
        "cycles": cycles,
        "cycle_s": round(cycle_s, 3),
        "worst_cycle_s": round(worst, 3),
        "cpu_s_per_cycle": round(sum(r["cpu_s"] for r in results) / len(results), 3),
        "readings_per_cycle": round(sum(r["readings"] for r in results) / len(results), 1),
        "meters_failed": sum(r["meters_failed"] for r in results),
        "interval_s": interval_s,
        "margin": round(interval_s / worst, 1),
        "keeps_up": worst < interval_s,
        "archive_bytes": archive_bytes,
        "per_cycle": results,
    }
