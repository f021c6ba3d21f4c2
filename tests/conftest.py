"""Shared test fixtures.

Suites that need a real service (PostgreSQL, NATS JetStream, an external MQTT broker) get its URL from
``OPENAMI_TEST_*`` variables, defaulting to the services on a developer machine. When the service does not
answer they skip with the reason, except under ``CI=true``, where a missing service is a failure: CI must
run every suite.
"""

from __future__ import annotations

import contextlib
import os
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from sqlalchemy import Engine

IN_CI = os.environ.get("CI", "").lower() == "true"

SERVICE_DEFAULTS = {
    "postgres": ("OPENAMI_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"),
    "nats": ("OPENAMI_TEST_NATS_URL", "nats://127.0.0.1:4222"),
    "mosquitto": ("OPENAMI_TEST_MQTT_URL", "mqtt://127.0.0.1:1883"),
}


def _reachable(url: str) -> bool:
    parts = urlsplit(url.replace("postgresql+psycopg", "postgresql"))
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 0), timeout=2):
            return True
    except OSError:
        return False


def service_url(name: str) -> str:
    """The URL of a real service for a test, or skip (fail under CI) when it is not there."""
    env, default = SERVICE_DEFAULTS[name]
    url = os.environ.get(env, default)
    if not _reachable(url):
        message = f"{name} not reachable at {url} (set {env})"
        if IN_CI:
            pytest.fail(f"CI must run the {name} suite: {message}")
        pytest.skip(message)
    return url


@pytest.fixture
def postgres_url() -> str:
    return service_url("postgres")


@pytest.fixture
def nats_url() -> str:
    return service_url("nats")


@pytest.fixture
def mosquitto_url() -> str:
    return service_url("mosquitto")


@pytest.fixture
def free_port() -> int:
    """A free TCP port on loopback (the OS may still hand it to someone else; bind promptly)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def corpora_dir() -> Path:
    """The shared corpora (``../shared/corpora`` or ``OPENAMI_CORPORA``); skip, or fail in CI, if absent."""
    default = Path(__file__).resolve().parents[1] / ".." / "shared" / "corpora"
    path = Path(os.environ.get("OPENAMI_CORPORA", default))
    if not path.is_dir():
        if IN_CI:
            pytest.fail(f"CI must run the corpus tests: {path} not found")
        pytest.skip(f"corpora not found at {path} (set OPENAMI_CORPORA)")
    return path


def _pg_schema_url(base: str, schema: str) -> str:
    sep = "&" if "?" in base else "?"
    return f"{base}{sep}options=-csearch_path%3D{schema}"


@contextlib.contextmanager
def postgres_schema_url() -> Iterator[str]:
    """A migrated private schema on the real PostgreSQL, dropped afterwards.

    Every test gets its own schema, so PostgreSQL tests can run beside others on the same server and
    leave nothing behind.
    """
    from sqlalchemy import text

    from openami.store.engine import make_engine
    from openami.store.migrate import upgrade

    base = service_url("postgres")
    schema = f"t_{uuid.uuid4().hex[:12]}"
    admin = make_engine(base)
    with admin.begin() as conn:
        conn.execute(text(f"CREATE SCHEMA {schema}"))
    url = _pg_schema_url(base, schema)
    engine = make_engine(url)
    try:
        upgrade(engine)
        engine.dispose()
        yield url
    finally:
        engine.dispose()
        with admin.begin() as conn:
            conn.execute(text(f"DROP SCHEMA IF EXISTS {schema} CASCADE"))
        admin.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A migrated, empty database: a SQLite file, or a private schema on the real PostgreSQL."""
    from openami.store.engine import make_engine
    from openami.store.migrate import upgrade

    if request.param == "postgres":
        with postgres_schema_url() as url:
            yield url
        return
    url = f"sqlite:///{tmp_path / 'openami.sqlite3'}"
    engine = make_engine(url)
    upgrade(engine)
    engine.dispose()
    yield url


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    from openami.store.engine import make_engine

    eng = make_engine(database_url)
    yield eng
    eng.dispose()
