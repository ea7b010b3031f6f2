"""Alembic migrations of the store, configured in code: no alembic.ini is needed to run them.

`migrate(url)` upgrades a database to the newest revision; workers and `churnwatch report` call
it on start. To add a revision (e.g. alert tables), change `churnwatch/store/models.py`, then:

    from alembic import command
    from churnwatch.store.migrations import alembic_config
    config = alembic_config("sqlite:///var/dev.sqlite3")
    command.revision(config, "alert tables", autogenerate=True, rev_id="0002")

and review the generated file in `versions/` (autogenerate misses renames and data moves).
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, Engine, text

from churnwatch.store.models import open_engine

MIGRATIONS_DIR = Path(__file__).resolve().parent
# pg_advisory_xact_lock key: workers starting together migrate one after the other.
MIGRATION_LOCK_KEY = 0x63687572  # "chur"


def alembic_config(url: str | None = None, connection: Connection | None = None) -> Config:
    """Alembic's configuration for a database URL, or for an open connection (which wins)."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("path_separator", "os")
    config.set_main_option("file_template", "%%(rev)s_%%(slug)s")
    # Attributes, not options: a URL's %-escapes would trip ConfigParser's interpolation.
    config.attributes["url"] = url
    config.attributes["connection"] = connection
    return config


def upgrade(engine: Engine) -> None:
    """Upgrade the database behind `engine` to the newest revision, in one transaction."""
    with engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            connection.execute(
                text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK_KEY}
            )
        command.upgrade(alembic_config(connection=connection), "head")


def migrate(url: str) -> None:
    """Upgrade the database at `url` to the newest revision (SQLite or PostgreSQL)."""
    engine = open_engine(url)
    try:
        upgrade(engine)
    finally:
        engine.dispose()
