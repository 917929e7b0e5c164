"""Engine and session factory, created once per app in the lifespan."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from atelier.settings import Settings


def _on_sqlite_connect(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=15000")
    finally:
        cursor.close()


def create_engine(settings: Settings) -> AsyncEngine:
    url = make_url(settings.resolved_database_url)
    if url.get_backend_name() == "sqlite":
        if url.database and url.database != ":memory:":
            Path(url.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_async_engine(url, echo=settings.database_echo)
        # Bound to *this* engine's pool only, never to the global Pool class (BUG-013).
        event.listen(engine.sync_engine, "connect", _on_sqlite_connect)
        return engine
    return create_async_engine(
        url,
        echo=settings.database_echo,
        pool_size=settings.database_pool_size,
        max_overflow=settings.database_pool_size,
        # No pre-ping: on asyncpg it costs three round trips per checkout (a run checks
        # out several times). A connection found dead raises a disconnect error instead;
        # SQLAlchemy then invalidates the whole pool, so one unit of work fails (and is
        # answered or retried as any database error is), not every later one.
        pool_pre_ping=False,
        pool_recycle=1800,
    )


def create_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False)
