"""Engine and session factory, created once per app in the lifespan."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, DisconnectionError, InterfaceError, OperationalError
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.util import await_only

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


def _begin_before_a_first_savepoint(connection: Any, _name: str) -> None:
    """The SQLite driver opens a transaction only before DML: a SAVEPOINT that comes first
    opened none, and its RELEASE committed what was written inside it (an upload whose
    request then failed kept its file row). Open the transaction first. (Not at every
    BEGIN: a transaction that reads before it writes would then fail to upgrade its lock
    when another writer went first.)"""
    adapted = connection.connection.dbapi_connection  # SQLAlchemy's aiosqlite adapter
    if not adapted._connection.in_transaction:  # aiosqlite's, which asks sqlite3's
        connection.exec_driver_sql("BEGIN")


def create_engine(settings: Settings) -> AsyncEngine:
    url = make_url(settings.resolved_database_url)
    if url.get_backend_name() == "sqlite":
        if url.database and url.database != ":memory:":
            Path(url.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_async_engine(url, echo=settings.database_echo)
        # Bound to *this* engine's pool only, never to the global Pool class (BUG-013).
        event.listen(engine.sync_engine, "connect", _on_sqlite_connect)
        event.listen(engine.sync_engine, "savepoint", _begin_before_a_first_savepoint)
        _one_writer_at_a_time(engine)
        return engine
    engine = create_async_engine(
        url,
        echo=settings.database_echo,
        pool_size=settings.database_pool_size,
        max_overflow=settings.database_pool_size,
        pool_recycle=1800,
    )
    _ping_when_idle(engine)
    _discard_connections_left_mid_operation(engine)
    return engine


# What asyncpg says of a connection whose protocol is still inside an earlier operation: a
# connection terminated mid-query (it got the server's error, never its end), or a query
# abandoned half way. The socket may still look open, so SQLAlchemy would hand it out
# again, where every statement fails the same way.
_LEFT_MID_OPERATION = ("another operation is in progress", "cannot switch to state")


def _discard_connections_left_mid_operation(engine: AsyncEngine) -> None:
    def on_error(context: Any) -> None:
        if any(sign in str(context.original_exception) for sign in _LEFT_MID_OPERATION):
            context.is_disconnect = True  # invalidated: closed, and replaced in the pool

    event.listen(engine.sync_engine, "handle_error", on_error)


# A connection that sat idle this long is pinged before use: idle is when a database
# restart, a failover or a firewall's idle timeout leaves it dead. A busy pool's
# connections come back within milliseconds and are not pinged: on asyncpg a ping costs
# three round trips, and a run checks out a connection several times.
PING_AFTER_IDLE_SECONDS = 5.0


def _ping_when_idle(engine: AsyncEngine) -> None:
    pool = engine.sync_engine.pool
    dialect = engine.sync_engine.dialect

    def checked_in(_dbapi_connection: Any, record: Any) -> None:
        record.info["idle_since"] = time.monotonic()

    def checked_out(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        idle_since = record.info.get("idle_since")
        if idle_since is None or time.monotonic() - idle_since < PING_AFTER_IDLE_SECONDS:
            return
        try:
            dialect.do_ping(dbapi_connection)
        except Exception as exc:
            # The pool discards this connection and checks out another (or a new one).
            raise DisconnectionError("an idle pooled connection was dead") from exc

    event.listen(pool, "checkin", checked_in)
    event.listen(pool, "checkout", checked_out)


_WRITES = ("INSERT", "UPDATE", "DELETE", "REPLACE")


def _one_writer_at_a_time(engine: AsyncEngine) -> None:
    """SQLite takes one writer at a time; the others wait in its busy handler, which sleeps
    in growing steps (a 10-run burst spent ~190 ms there). Writers of this process queue
    on an asyncio lock instead, taken at a transaction's first write and given back once
    its COMMIT or ROLLBACK is done; readers never wait (WAL)."""
    lock = asyncio.Lock()
    writing: set[int] = set()  # the DBAPI connections holding the lock
    dialect = engine.sync_engine.dialect

    def before_write(conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        dbapi_connection = conn.connection.dbapi_connection
        if id(dbapi_connection) in writing or not statement.lstrip().upper().startswith(_WRITES):
            return
        await_only(lock.acquire())  # in SQLAlchemy's greenlet, on the event loop
        writing.add(id(dbapi_connection))

    def let_go(dbapi_connection: Any) -> None:
        if id(dbapi_connection) in writing:
            writing.discard(id(dbapi_connection))
            lock.release()

    def ending(step: Any) -> Any:
        def end(dbapi_connection: Any) -> None:
            try:
                step(dbapi_connection)
            finally:
                let_go(dbapi_connection)

        return end

    # This engine's dialect only (BUG-013): the commit and rollback themselves, then the lock.
    dialect.do_commit = ending(dialect.do_commit)  # type: ignore[method-assign]
    dialect.do_rollback = ending(dialect.do_rollback)  # type: ignore[method-assign]
    event.listen(engine.sync_engine, "before_cursor_execute", before_write)
    # A connection given back some other way (invalidated) lets go too.
    event.listen(engine.sync_engine.pool, "checkin", lambda dbapi, _record: let_go(dbapi))


def create_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False)


def unreachable(exc: DBAPIError) -> bool:
    """The database did not answer (lost connection, refused, down): worth retrying, unlike
    what it refused for a reason."""
    return bool(exc.connection_invalidated) or isinstance(exc, OperationalError | InterfaceError)
