"""Schema migrations, safe to run from N processes at once (BUG-017).

On PostgreSQL the upgrade runs under a session-level advisory lock held on the same
connection for the whole upgrade: the first process migrates, the others wait and then
find the schema already at head.
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, text
from sqlalchemy.ext.asyncio import AsyncEngine

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
# Any constant unique to this application; pg advisory locks are keyed by a bigint.
MIGRATION_LOCK_KEY = 0x41_74_65_6C_69_65_72  # "Atelier"


def alembic_config(connection: Connection | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.attributes["connection"] = connection
    return config


def head_revision() -> str:
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None
    return head


def current_revision(connection: Connection) -> str | None:
    return MigrationContext.configure(connection).get_current_revision()


def _upgrade(connection: Connection) -> None:
    command.upgrade(alembic_config(connection), "head")


async def migrate(engine: AsyncEngine) -> None:
    async with engine.connect() as connection:
        if connection.dialect.name == "postgresql":
            await connection.execute(
                text("SELECT pg_advisory_lock(:key)"), {"key": MIGRATION_LOCK_KEY}
            )
            await connection.commit()
            try:
                await connection.run_sync(_upgrade)
                await connection.commit()
            finally:
                await connection.execute(
                    text("SELECT pg_advisory_unlock(:key)"), {"key": MIGRATION_LOCK_KEY}
                )
                await connection.commit()
        else:
            # SQLite alters a table by copying it and dropping the old one; with foreign keys
            # enforced, that drop would cascade and delete every row that refers to it.
            await connection.exec_driver_sql("PRAGMA foreign_keys=OFF")
            try:
                await connection.run_sync(_upgrade)
                await connection.commit()
            finally:
                await connection.exec_driver_sql("PRAGMA foreign_keys=ON")


async def schema_revision(engine: AsyncEngine) -> str | None:
    async with engine.connect() as connection:
        return await connection.run_sync(current_revision)
