"""Alembic environment: migrates the connection `migrate()` hands over, or the configured URL."""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection

from churnwatch.store.models import Base, open_engine


def _migrate(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        # SQLite cannot ALTER most things: later revisions recreate tables instead.
        render_as_batch=connection.dialect.name == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()


def run() -> None:
    config = context.config
    url: str | None = config.attributes.get("url")
    if context.is_offline_mode():  # `--sql`: print the DDL for a DBA to run
        context.configure(url=url, target_metadata=Base.metadata, literal_binds=True)
        with context.begin_transaction():
            context.run_migrations()
        return
    connection: Connection | None = config.attributes.get("connection")
    if connection is not None:
        _migrate(connection)
        return
    if url is None:
        raise RuntimeError("alembic_config() needs a database URL or a connection")
    engine = open_engine(url)
    try:
        with engine.begin() as opened:
            _migrate(opened)
    finally:
        engine.dispose()


run()
