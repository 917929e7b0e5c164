import asyncio
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from atelier.db.engine import create_engine
from atelier.settings import Settings


async def _pragma(engine, name: str) -> object:
    async with engine.connect() as connection:
        return (await connection.execute(text(f"PRAGMA {name}"))).scalar()


class TestSqliteEngine:
    async def test_our_engine_runs_wal_with_foreign_keys(self, tmp_path: Path) -> None:
        engine = await asyncio.to_thread(
            create_engine, Settings(environment="test", data_dir=tmp_path)
        )
        try:
            assert await _pragma(engine, "journal_mode") == "wal"
            assert await _pragma(engine, "foreign_keys") == 1
            assert await _pragma(engine, "busy_timeout") == 15000
        finally:
            await engine.dispose()

    async def test_a_second_engine_does_not_fire_our_listener(self, tmp_path: Path) -> None:
        """BUG-013: our connect listener is bound to our engine, not the global Pool class."""
        ours = await asyncio.to_thread(
            create_engine, Settings(environment="test", data_dir=tmp_path)
        )
        other = create_async_engine(f"sqlite+aiosqlite:///{tmp_path / 'other.db'}")
        try:
            assert await _pragma(ours, "foreign_keys") == 1
            assert await _pragma(other, "foreign_keys") == 0
            assert await _pragma(other, "journal_mode") == "delete"
        finally:
            await ours.dispose()
            await other.dispose()

    async def test_embedded_database_lives_under_the_data_dir(self, tmp_path: Path) -> None:
        settings = Settings(environment="test", data_dir=tmp_path / "nested" / ".atelier")
        engine = await asyncio.to_thread(create_engine, settings)  # it creates the directory
        try:
            await _pragma(engine, "user_version")
            assert (tmp_path / "nested" / ".atelier" / "atelier.db").exists()
        finally:
            await engine.dispose()


class TestPostgresEngine:
    async def test_idle_ping_listeners_are_bound_to_our_pool_only(self) -> None:
        """BUG-013 for the pool events: another engine in the process is not affected."""
        url = "postgresql+asyncpg://postgres@127.0.0.1:5432/unused"
        ours = create_engine(Settings(environment="test", database_url=url))
        other = create_async_engine(url)
        try:
            for name in ("checkin", "checkout"):
                assert len(getattr(ours.sync_engine.pool.dispatch, name)) == 1
                assert len(getattr(other.sync_engine.pool.dispatch, name)) == 0
        finally:
            await ours.dispose()
            await other.dispose()


class TestSqliteWriters:
    async def test_concurrent_writers_queue_in_process_instead_of_failing(
        self, tmp_path: Path
    ) -> None:
        """With no busy wait at all, 20 overlapping write transactions still all commit:
        they queue on the engine's writer lock, never on SQLite's busy handler."""
        from sqlalchemy import event

        engine = await asyncio.to_thread(
            create_engine, Settings(environment="test", data_dir=tmp_path)
        )

        def no_busy_wait(dbapi_connection, _record) -> None:  # type: ignore[no-untyped-def]
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA busy_timeout=0")  # a locked database fails at once
            cursor.close()

        event.listen(engine.sync_engine, "connect", no_busy_wait)
        try:
            async with engine.begin() as connection:
                await connection.execute(text("CREATE TABLE counter (n INTEGER)"))
                await connection.execute(text("INSERT INTO counter VALUES (0)"))

            async def write() -> None:
                async with engine.connect() as connection:
                    await connection.execute(text("UPDATE counter SET n = n + 1"))
                    await asyncio.sleep(0.01)  # the transaction stays open a while
                    await connection.commit()

            await asyncio.gather(*(write() for _ in range(20)))
            async with engine.connect() as connection:
                assert (await connection.execute(text("SELECT n FROM counter"))).scalar() == 20
        finally:
            await engine.dispose()


class TestPostgresConnectionsLeftMidOperation:
    """A connection whose protocol is still inside another operation (what a connection
    terminated mid-query, or a query abandoned half way, leaves behind) is thrown away
    at its first error, never handed out again: the error counts as a lost connection,
    so a run's unit of work retries on a fresh one."""

    async def test_it_is_discarded_and_the_error_is_a_lost_connection(self, postgres) -> None:
        from sqlalchemy.exc import DBAPIError

        from atelier.db.engine import create_sessionmaker, unreachable

        url = str(await asyncio.to_thread(postgres.create, "midop"))
        engine = create_engine(Settings(environment="test", database_url=url))
        sessions = create_sessionmaker(engine)
        try:
            async with sessions() as session:
                connection = await session.connection()
                raw = (await connection.get_raw_connection()).driver_connection
                broken_pid = raw.get_server_pid()
                # Its protocol is now busy with an operation nobody will finish reading.
                busy = asyncio.ensure_future(raw.execute("SELECT pg_sleep(0.3)"))
                await asyncio.sleep(0.05)
                with pytest.raises(DBAPIError) as refused:
                    await session.execute(text("SAVEPOINT sa_savepoint_1"))
                assert unreachable(refused.value)
                assert refused.value.connection_invalidated
                await asyncio.gather(busy, return_exceptions=True)
            for _ in range(3):
                async with sessions() as session:
                    pid = (await session.execute(text("SELECT pg_backend_pid()"))).scalar()
                    assert pid != broken_pid
        finally:
            await engine.dispose()
