"""``openami bench dlms``: how fast the head-end reads load profiles from DLMS meters over TCP.

Each read is what a scheduled collection does per meter: connect, associate (HLS-GMAC with ciphering,
the common production setting), read one day of the 15-minute load profile by range, release. The
simulated meters run in a separate process, so ``client_cpu_ms_per_read`` is the client's own CPU (this
process's ``time.process_time``) divided by the reads; ``reads_per_s`` is wall-clock with both processes
sharing the machine.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from openami.drivers.dlms.client import DlmsClient
from openami.protocols.dlms.acse import Mechanism
from openami.protocols.dlms.association import MANAGEMENT_CLIENT, MANAGEMENT_SERVER, ClientAssociation
from openami.protocols.dlms.obis import Obis
from openami.protocols.dlms.security import SecurityControl
from openami.simulator.dlms_meter import MeterKeys
from openami.simulator.dlms_server import build_meters, run_simulator

LOAD_PROFILE = Obis(1, 0, 99, 1, 0, 255)
CLIENT_TITLE = b"OPENAMIB"
CIPHERED = SecurityControl(suite=0, authenticated=True, encrypted=True)

Progress = Callable[[int, int], None]


def _serve(meters: int, ports: Any) -> None:
    """Child process: run the simulator and send its ports back through the pipe."""
    asyncio.run(run_simulator(meters, 0, on_ready=lambda sim: ports.send(sim.ports)))


def _association(serial: str) -> ClientAssociation:
    keys = MeterKeys.demo(serial)
    return ClientAssociation(
        MANAGEMENT_CLIENT,
        MANAGEMENT_SERVER,
        mechanism=Mechanism.HIGH_GMAC,
        system_title=CLIENT_TITLE,
        encryption_key=keys.encryption_key,
        authentication_key=keys.authentication_key,
        security=CIPHERED,
    )


async def _read_all(
    targets: list[tuple[str, int]],
    start: datetime,
    end: datetime,
    concurrency: int,
    progress: Progress | None,
) -> int:
    limit = asyncio.Semaphore(concurrency)
    rows = 0
    done = 0

    async def read(serial: str, port: int) -> None:
        nonlocal rows, done
        async with limit, DlmsClient("127.0.0.1", port, _association(serial)) as client:
            read_rows = await client.read_profile(LOAD_PROFILE, start, end)
        rows += len(read_rows)  # after the await: `rows += len(await ...)` would lose concurrent updates
        done += 1
        if progress is not None:
            progress(done, len(targets))

    await asyncio.gather(*(read(serial, port) for serial, port in targets))
    return rows


def run_dlms_bench(
    meters: int, *, concurrency: int = 64, rounds: int = 1, progress: Progress | None = None
) -> dict[str, Any]:
    """Read one day of load profile from each of ``meters`` meters ``rounds`` times; report the rates."""
    context = multiprocessing.get_context("spawn")
    receive, send = context.Pipe(duplex=False)
    server = context.Process(target=_serve, args=(meters, send), daemon=True)
    server.start()
    try:
        if not receive.poll(60):
            raise RuntimeError("the DLMS simulator did not start within 60 s")
        ports: list[int] = receive.recv()
        serials = [meter.serial for meter in build_meters(meters)]
        targets = [(serial, port) for _ in range(rounds) for serial, port in zip(serials, ports, strict=True)]
        end = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
        start = end - timedelta(days=1)
        cpu, wall = time.process_time(), time.perf_counter()
        rows = asyncio.run(_read_all(targets, start, end, concurrency, progress))
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    finally:
        server.terminate()
        server.join(10)
    reads = len(targets)
    return {
        "meters": meters,
        "reads": reads,
        "rows": rows,
        "seconds": round(wall, 3),
        "reads_per_s": round(reads / wall, 1),
        "client_cpu_ms_per_read": round(cpu * 1000 / reads, 3),
    }
