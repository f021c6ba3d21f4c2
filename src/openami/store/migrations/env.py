"""Alembic environment: the engine comes from the caller (openami.store.migrate), never from an ini file."""

from __future__ import annotations

from alembic import context

from openami.store.schema import metadata


def run_migrations() -> None:
    engine = context.config.attributes["engine"]
    with engine.begin() as connection:
        context.configure(
            connection=connection,
            target_metadata=metadata,
            render_as_batch=connection.dialect.name == "sqlite",
            compare_type=True,
        )
        context.run_migrations()


run_migrations()
