"""Fixtures of the API tests: a populated two-tenant database (see ``support``) and a client on it.

Users are created through the real services with a cheap Argon2 hasher, so the suite stays fast
without changing any code path.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from argon2 import PasswordHasher
from fastapi.testclient import TestClient
from sqlalchemy import Engine

from openami.api.app import create_api
from openami.api.deps import ApiContext
from openami.config import Settings
from openami.security.passwords import Passwords
from openami.security.service import AuthService, UserService

from .support import Clock, World, populate


@pytest.fixture
def passwords() -> Passwords:
    return Passwords(PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1))


@pytest.fixture
def world(engine: Engine, database_url: str, tmp_path: Path, passwords: Passwords) -> Iterator[World]:
    clock = Clock()
    auth = AuthService(engine, token_ttl=timedelta(hours=12), passwords=passwords, clock=clock)
    users = UserService(engine, passwords=passwords)
    context = ApiContext(
        engine=engine,
        settings=Settings(database_url=database_url, data_dir=tmp_path),
        auth_service=auth,
        metrics_text=lambda: (b"openami_up 1\n", "text/plain; version=0.0.4"),
    )
    ids = populate(engine, users)
    with TestClient(create_api(context)) as client:
        yield World(client=client, context=context, auth=auth, users=users, clock=clock, ids=ids)
