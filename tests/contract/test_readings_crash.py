"""kill -9 in the middle of a batch loses that batch and nothing else, and a replay completes the job.

A subprocess writes batches through ReadingWriter and reports each one before and after it is written.
Once one batch is committed and the next is under way, the test SIGKILLs it (no cleanup, no rollback
handler runs) and checks that the database is intact and holds only whole batches. Re-running the entire
ingest then stores exactly what was missing: the committed batches come back "unchanged".
"""

from __future__ import annotations

import json
import os
import queue
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest
from sqlalchemy import Engine, text

from openami.store.readings import count_readings

BATCHES = 10
BATCH_ROWS = 20_000
CHANNELS_PER_BATCH = 20  # x 1000 intervals of 15 minutes, from 25 January: every batch spans two months

WRITER = """
import json, sys
from datetime import UTC, datetime, timedelta
from openami.store.engine import make_engine
from openami.store.readings import NewReading, ReadingWriter

url, batches, channels = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
start = datetime(2025, 1, 25, tzinfo=UTC)
writer = ReadingWriter(make_engine(url))
for b in range(batches):
    rows = [
        NewReading(b * channels + c + 1, start + i * timedelta(minutes=15), float(i % 97), 0, "crash")
        for i in range(1000)
        for c in range(channels)
    ]
    print(json.dumps({"writing": b}), flush=True)
    result = writer.write("interval", rows)
    done = {"committed": b, "inserted": result.inserted, "unchanged": result.unchanged}
    print(json.dumps(done), flush=True)
"""

SRC = Path(__file__).resolve().parents[2] / "src"


def start_writer(database_url: str) -> tuple[subprocess.Popen[str], queue.Queue[dict[str, int] | None]]:
    """The writer subprocess and a queue of its progress lines (None once its output ends)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen(
        [sys.executable, "-c", WRITER, database_url, str(BATCHES), str(CHANNELS_PER_BATCH)],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    lines: queue.Queue[dict[str, int] | None] = queue.Queue()

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.put(json.loads(line))
        lines.put(None)

    threading.Thread(target=pump, daemon=True).start()
    return proc, lines


def writer_is_mid_transaction(engine: Engine, app: str) -> bool:
    """Whether the writer is inside a write transaction: it holds SQLite's write lock, or its
    PostgreSQL backend has a transaction id (assigned by the first row it writes)."""
    if engine.dialect.name == "sqlite":
        probe = sqlite3.connect(str(engine.url.database), timeout=0)
        try:
            probe.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError:  # database is locked
            return True
        finally:
            probe.close()  # rolls back: the writer was kept waiting for microseconds at most
        return False
    with engine.connect() as conn:
        return bool(
            conn.execute(
                text(
                    "SELECT count(*) FROM pg_stat_activity "
                    "WHERE application_name = :app AND backend_xid IS NOT NULL"
                ),
                {"app": app},
            ).scalar_one()
        )


def next_line(lines: queue.Queue[dict[str, int] | None], deadline: float) -> dict[str, int]:
    line = lines.get(timeout=max(0.0, deadline - time.monotonic()))
    assert line is not None, "the writer exited early"
    return line


@pytest.mark.timeout(60)
def test_kill_9_mid_batch_keeps_whole_batches_and_a_replay_completes(
    database_url: str, engine: Engine
) -> None:
    deadline = time.monotonic() + 25
    app = f"crash-writer-{uuid.uuid4().hex[:8]}"
    url = database_url if engine.dialect.name == "sqlite" else f"{database_url}&application_name={app}"
    proc, lines = start_writer(url)
    try:
        assert next_line(lines, deadline) == {"writing": 0}
        assert next_line(lines, deadline)["committed"] == 0
        assert next_line(lines, deadline) == {"writing": 1}
        while not writer_is_mid_transaction(engine, app):
            assert time.monotonic() < deadline, "never caught the writer inside a transaction"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL
    reported = []
    while (line := lines.get(timeout=5)) is not None:
        reported.append(line)
    last_started = max([1] + [line["writing"] for line in reported if "writing" in line])

    if engine.dialect.name == "sqlite":
        with engine.connect() as conn:
            assert conn.execute(text("PRAGMA integrity_check")).scalar_one() == "ok"
    stored = count_readings(engine, "interval")  # PostgreSQL: it answers, and shows no half batch
    assert stored % BATCH_ROWS == 0, f"{stored} rows: a batch was stored in part"
    # Batches 0..last_started-1 are committed; the one under way is either wholly in or wholly out.
    assert stored // BATCH_ROWS in (last_started, last_started + 1)
    assert stored < BATCHES * BATCH_ROWS

    replay, replay_lines = start_writer(database_url)
    assert replay.wait(timeout=max(1.0, deadline - time.monotonic())) == 0
    results = []
    while (line := replay_lines.get(timeout=5)) is not None:
        results.append(line)
    committed = [line for line in results if "committed" in line]
    assert len(committed) == BATCHES
    assert sum(line["unchanged"] for line in committed) == stored
    assert sum(line["inserted"] for line in committed) == BATCHES * BATCH_ROWS - stored
    assert count_readings(engine, "interval") == BATCHES * BATCH_ROWS
    with engine.connect() as conn:
        assert conn.execute(text("SELECT max(version) FROM interval_read")).scalar_one() == 1
