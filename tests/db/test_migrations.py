import asyncio
import json
import os
import subprocess
import sys
import uuid
from datetime import UTC, datetime
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


class TestChatsBecomeConversations:
    """0003: existing chats, their messages and usage move onto conversations and runs,
    on both backends, and back again on a downgrade."""

    @pytest.fixture(params=["sqlite", "postgresql"])
    def url(self, request: pytest.FixtureRequest, tmp_path: Path) -> str:
        if request.param == "sqlite":
            return f"sqlite+aiosqlite:///{tmp_path / 'm.db'}"
        return request.getfixturevalue("postgres").create(f"chats_{uuid.uuid4().hex[:6]}")

    async def test_upgrade_moves_chats_and_downgrade_brings_them_back(self, url: str) -> None:
        from alembic import command
        from sqlalchemy import text

        engine = create_async_engine(url)
        tenant, chat, usage = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
        now: object = datetime(2026, 11, 1, 10, tzinfo=UTC)
        if url.startswith("sqlite"):
            now = "2026-11-01 10:00:00.000000"  # how SQLAlchemy stores a time in SQLite
        try:
            async with engine.connect() as connection:
                await connection.run_sync(lambda c: command.upgrade(alembic_config(c), "0002"))
                rows = [
                    ("INSERT INTO tenants (id, name, created_at) VALUES (:t, 'acme', :now)"),
                    (
                        "INSERT INTO chats (id, tenant_id, user_id, title, model_id, metadata,"
                        " last_message_seq, total_input_tokens, total_output_tokens, total_cost,"
                        " created_at, updated_at) VALUES (:c, :t, 'ann', 'Trip', 'offline', '{}',"
                        " 3, 10, 20, 0.5, :now, :now)"
                    ),
                    (
                        "INSERT INTO usage_records (id, tenant_id, user_id, chat_id, model_id,"
                        " provider, input_tokens, output_tokens, cost, currency,"
                        " input_price_per_mtok, output_price_per_mtok, created_at) VALUES (:u, :t,"
                        " 'ann', :c, 'offline', 'offline', 10, 20, 0.5, 'USD', 0, 0, :now)"
                    ),
                ]
                values = {"t": _id(url, tenant), "c": _id(url, chat), "u": _id(url, usage)}
                for sql in rows:
                    await connection.execute(text(sql), {**values, "now": now})
                for seq, role, content, incomplete in (
                    (1, "user", "Plan a trip", False),
                    (2, "assistant", "Go to Kyoto", False),
                    (3, "user", "And then?", False),
                ):
                    await connection.execute(
                        text(
                            "INSERT INTO chat_messages (id, chat_id, seq, role, content, model_id,"
                            " incomplete, created_at) VALUES (:id, :c, :seq, :role, :content,"
                            " 'offline', :incomplete, :now)"
                        ),
                        {
                            **values,
                            "id": _id(url, uuid.uuid4()),
                            "seq": seq,
                            "role": role,
                            "content": content,
                            "incomplete": incomplete,
                            "now": now,
                        },
                    )
                await connection.commit()
            await migrate(engine)
            async with engine.connect() as connection:
                kind = (
                    await connection.execute(text("SELECT kind, title FROM conversations"))
                ).one()
                messages = (
                    await connection.execute(
                        text("SELECT seq, role, run_id FROM messages ORDER BY seq")
                    )
                ).all()
                runs = (await connection.execute(text("SELECT id, status, input FROM runs"))).all()
                linked = (
                    await connection.execute(text("SELECT conversation_id FROM usage_records"))
                ).scalar_one()
            assert tuple(kind) == ("chat", "Trip")
            assert [(s, r) for s, r, _ in messages] == [(1, "user"), (2, "assistant"), (3, "user")]
            ((run_id, status, asked),) = runs
            assert (status, asked) == ("completed", "Plan a trip")
            assert [str(r) for _, _, r in messages] == [str(run_id), str(run_id), "None"]
            assert uuid.UUID(str(linked)) == chat
            assert "chats" not in await _tables(url)
            async with engine.connect() as connection:
                if url.startswith("sqlite"):  # as migrate() does: a table copy must not cascade
                    await connection.exec_driver_sql("PRAGMA foreign_keys=OFF")
                await connection.run_sync(lambda c: command.downgrade(alembic_config(c), "0002"))
                await connection.commit()
                back = (
                    await connection.execute(
                        text("SELECT role, content FROM chat_messages ORDER BY seq")
                    )
                ).all()
                chat_link = (
                    await connection.execute(text("SELECT chat_id FROM usage_records"))
                ).scalar_one()
                left = (
                    await connection.execute(text("SELECT count(*) FROM conversations"))
                ).scalar()
            assert [tuple(r) for r in back] == [
                ("user", "Plan a trip"),
                ("assistant", "Go to Kyoto"),
                ("user", "And then?"),
            ]
            assert uuid.UUID(str(chat_link)) == chat
            assert left == 0
        finally:
            await engine.dispose()


def _id(url: str, value: uuid.UUID) -> str:
    """How sqlalchemy's Uuid type stores an id: 32 hex digits on SQLite."""
    return value.hex if url.startswith("sqlite") else str(value)


class TestTenantsGetTheirDefaultAgent:
    """0004: a tenant from before agents gets its ``default`` agent, version 1 (what every
    run did before), so its conversations run exactly as they did."""

    @pytest.fixture(params=["sqlite", "postgresql"])
    def url(self, request: pytest.FixtureRequest, tmp_path: Path) -> str:
        if request.param == "sqlite":
            return f"sqlite+aiosqlite:///{tmp_path / 'm.db'}"
        return request.getfixturevalue("postgres").create(f"agents_{uuid.uuid4().hex[:6]}")

    async def test_upgrade_gives_each_tenant_a_default_agent(self, url: str) -> None:
        from alembic import command
        from sqlalchemy import text

        engine = create_async_engine(url)
        tenants = [uuid.uuid4(), uuid.uuid4()]
        now: object = datetime(2026, 11, 1, 10, tzinfo=UTC)
        if url.startswith("sqlite"):
            now = "2026-11-01 10:00:00.000000"
        try:
            async with engine.connect() as connection:
                await connection.run_sync(lambda c: command.upgrade(alembic_config(c), "0003"))
                for number, tenant in enumerate(tenants):
                    await connection.execute(
                        text("INSERT INTO tenants (id, name, created_at) VALUES (:t, :n, :now)"),
                        {"t": _id(url, tenant), "n": f"t{number}", "now": now},
                    )
                await connection.commit()
            await migrate(engine)
            async with engine.connect() as connection:
                agents = (
                    await connection.execute(
                        text(
                            "SELECT a.tenant_id, a.name, v.version, v.definition FROM agents a"
                            " JOIN agent_versions v ON v.agent_id = a.id"
                        )
                    )
                ).all()
        finally:
            await engine.dispose()
        assert sorted(str(uuid.UUID(str(t))) for t, _, _, _ in agents) == sorted(map(str, tenants))
        assert {(name, version) for _, name, version, _ in agents} == {("default", 1)}
        from atelier.agents.schemas import AgentDefinition

        for *_, definition in agents:
            stored = json.loads(definition) if isinstance(definition, str) else definition
            assert AgentDefinition.model_validate(stored) == AgentDefinition()
