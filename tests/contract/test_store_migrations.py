"""The schema migrates on every supported database, and the migrated schema matches the code's."""

from __future__ import annotations

from alembic import command
from sqlalchemy import Engine, inspect, text

from openami.store.migrate import alembic_config, current_revision, upgrade
from openami.store.schema import metadata


def test_migrated_schema_has_every_table_and_no_drift(engine: Engine) -> None:
    assert current_revision(engine) is not None
    tables = set(inspect(engine).get_table_names())
    assert set(metadata.tables) <= tables
    command.check(alembic_config(engine))  # raises if models and migrations disagree


def test_upgrade_is_idempotent(engine: Engine) -> None:
    before = current_revision(engine)
    upgrade(engine)
    assert current_revision(engine) == before


def test_audit_log_refuses_update_and_delete(engine: Engine) -> None:
    import pytest
    from sqlalchemy.exc import DBAPIError

    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO audit_log (ts, actor, action, detail, prev_hash, hash) "
                "VALUES (CURRENT_TIMESTAMP, 'system', 'test', '{}', '', 'h1')"
            )
        )
    for statement in ("UPDATE audit_log SET actor = 'mallory'", "DELETE FROM audit_log"):
        with pytest.raises(DBAPIError, match="append-only"), engine.begin() as conn:
            conn.execute(text(statement))
    with engine.connect() as conn:
        assert conn.execute(text("SELECT actor FROM audit_log")).scalar_one() == "system"
