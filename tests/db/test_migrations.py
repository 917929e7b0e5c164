import asyncio
import os
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import inspect
from sqlalchemy.ext.asyncio import create_async_engine

from atelier.db.migrate import alembic_config, head_revision, migrate, schema_revision
from atelier.db.models import Base
from tests.conftest import PostgresDatabases


async def _tables(url: str) -> set[str]:
    engine = create_async_engine(url)
    try:
        async with engine.connect() as connection:
            return set(await connection.run_sync(lambda c: inspect(c).get_table_names()))
    finally:
        await engine.dispose()


async def _revision(url: str) -> str | None:
    engine = create_async_engine(url)
    try:
        return await schema_revision(engine)
    finally:
        await engine.dispose()


EXPECTED_TABLES = {table.name for table in Base.metadata.sorted_tables} | {"alembic_version"}


class TestMigrationsOnSqlite:
    async def test_upgrade_creates_every_table_and_is_idempotent(self, tmp_path: Path) -> None:
        url = f"sqlite+aiosqlite:///{tmp_path / 'm.db'}"
        engine = create_async_engine(url)
        try:
            await migrate(engine)
            await migrate(engine)
        finally:
            await engine.dispose()
        assert await _tables(url) == EXPECTED_TABLES
        assert await _revision(url) == head_revision()

    async def test_downgrade_to_base_and_back(self, tmp_path: Path) -> None:
        from alembic import command

        url = f"sqlite+aiosqlite:///{tmp_path / 'm.db'}"
        engine = create_async_engine(url)
        try:
            await migrate(engine)
            async with engine.connect() as connection:
                await connection.run_sync(lambda c: command.downgrade(alembic_config(c), "base"))
                await connection.commit()
            assert await _tables(url) == {"alembic_version"}
            await migrate(engine)
        finally:
            await engine.dispose()
        assert await _tables(url) == EXPECTED_TABLES


class TestMigrationsOnPostgres:
    def test_schema_matches_the_models(self, postgres: PostgresDatabases) -> None:
        url = postgres.create("models_match")

        async def check() -> list[object]:
            from alembic.autogenerate import compare_metadata
            from alembic.runtime.migration import MigrationContext

            engine = create_async_engine(url)
            try:
                await migrate(engine)
                async with engine.connect() as connection:
                    return await connection.run_sync(
                        lambda c: compare_metadata(MigrationContext.configure(c), Base.metadata)
                    )
            finally:
                await engine.dispose()

        assert asyncio.run(check()) == []

    def test_eight_concurrent_migrate_processes_all_succeed(
        self, postgres: PostgresDatabases, tmp_path: Path
    ) -> None:
        """BUG-017: N containers running `atelier migrate` at once on an empty database."""
        url = postgres.create("concurrent")
        env = {**os.environ, "ATELIER_DATABASE_URL": url, "ATELIER_ENVIRONMENT": "test"}
        processes = [
            subprocess.Popen(
                [sys.executable, "-m", "atelier", "migrate"],
                env=env,
                cwd=tmp_path,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
            )
            for _ in range(8)
        ]
        outputs = [process.communicate(timeout=120)[0].decode() for process in processes]
        codes = [process.returncode for process in processes]
        assert codes == [0] * 8, "\n---\n".join(outputs)
        assert asyncio.run(_revision(url)) == head_revision()
        assert asyncio.run(_tables(url)) == EXPECTED_TABLES


@pytest.mark.parametrize("name", ["tenants", "messages", "runs", "usage_records"])
def test_every_table_has_a_named_primary_key(name: str) -> None:
    assert Base.metadata.tables[name].primary_key.name == f"pk_{name}"
