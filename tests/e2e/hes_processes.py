"""``openami worker`` processes for the scale-out tests: real processes on PostgreSQL and NATS JetStream,
each test on its own schema, stream namespace and leader lock, so runs never meet."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

LEADER_LINE = "this process is now the scheduler leader"


@dataclass
class Workers:
    """The processes of one test, started with shared settings; their logs in ``directory``."""

    directory: Path
    database_url: str
    nats_url: str
    settings: dict[str, str] = field(default_factory=dict)
    namespace: str = field(default_factory=lambda: f"t{uuid.uuid4().hex[:10]}")
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("OPENAMI_")}
        env.update(
            {
                "OPENAMI_DATABASE_URL": self.database_url,
                "OPENAMI_BUS_URL": self.nats_url,
                "OPENAMI_BUS_NAMESPACE": self.namespace,
                "OPENAMI_DATA_DIR": str(self.directory),
                "OPENAMI_HES_LEADER_NAME": f"leader-{self.namespace}",
                "OPENAMI_LOG_FORMAT": "json",
                "OPENAMI_LOG_LEVEL": "INFO",
                "OPENAMI_HES_JOBS": "false",
                **self.settings,
            }
        )
        return env

    def start(self, name: str, *roles: str) -> subprocess.Popen[bytes]:
        args = [sys.executable, "-m", "openami.cli", "worker", "--name", name]
        for role in roles:
            args += ["--role", role]
        log = (self.directory / f"{name}.log").open("wb")
        process = subprocess.Popen(args, env=self.env(), stdout=log, stderr=subprocess.STDOUT)
        self.processes[name] = process
        return process

    def log(self, name: str) -> str:
        return (self.directory / f"{name}.log").read_text(errors="replace")

    def kill(self, name: str) -> None:
        process = self.processes[name]
        process.kill()
        process.wait(timeout=10)

    def stop_all(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for name, process in self.processes.items():
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)
                raise AssertionError(
                    f"worker {name} did not stop on SIGTERM:\n{self.log(name)[-3000:]}"
                ) from None


@contextmanager
def workers(directory: Path, database_url: str, nats_url: str, **settings: Any) -> Iterator[Workers]:
    group = Workers(
        directory, database_url, nats_url, {f"OPENAMI_{k.upper()}": _env(v) for k, v in settings.items()}
    )
    try:
        yield group
    finally:
        group.stop_all()


def _env(value: Any) -> str:
    return json.dumps(value) if isinstance(value, dict | list) else str(value)


def wait_for(condition: Callable[[], bool], timeout_s: float, what: str, poll_s: float = 0.2) -> float:
    """Seconds until ``condition()`` held; AssertionError naming ``what`` after ``timeout_s``."""
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > timeout_s:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(poll_s)
    return time.monotonic() - started
