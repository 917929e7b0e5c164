"""Storage clean-ups that must not be forgotten (BUG-011).

Deleting a conversation records its storage prefix in ``storage_cleanups`` in the same
transaction as the row deletes; the objects are then deleted at once and, if storage
fails, again by a periodic task in every process until the prefix is empty.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

import structlog
from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from atelier.db.base import utcnow
from atelier.workspace.base import Storage, StorageError
from atelier.workspace.models import StorageCleanup

log = structlog.get_logger("atelier.cleanup")
MAX_BACKOFF_SECONDS = 300


async def schedule(session: AsyncSession, prefix: str) -> None:
    if (
        await session.scalar(select(StorageCleanup.id).where(StorageCleanup.prefix == prefix))
        is None
    ):
        session.add(StorageCleanup(prefix=prefix))
        await session.flush()


async def run_prefix(
    sessions: async_sessionmaker[AsyncSession], storage: Storage, prefix: str
) -> bool:
    """Delete everything under ``prefix``; True when done (and its record removed)."""
    try:
        deleted = await storage.delete_prefix(prefix)
    except StorageError as exc:
        async with sessions() as session:
            job = await session.scalar(
                select(StorageCleanup).where(StorageCleanup.prefix == prefix)
            )
            if job is not None:
                job.attempts += 1
                job.last_error = str(exc)[:2000]
                job.next_attempt_at = utcnow() + timedelta(
                    seconds=min(2**job.attempts, MAX_BACKOFF_SECONDS)
                )
                await session.commit()
        log.warning("storage clean-up failed; will retry", prefix=prefix, error=str(exc))
        return False
    async with sessions() as session:
        await session.execute(delete(StorageCleanup).where(StorageCleanup.prefix == prefix))
        await session.commit()
    log.info("storage clean-up done", prefix=prefix, deleted=deleted)
    return True


async def run_due(
    sessions: async_sessionmaker[AsyncSession], storage: Storage, limit: int = 100
) -> int:
    """Retry every clean-up whose time has come; returns how many finished."""
    async with sessions() as session:
        prefixes = list(
            await session.scalars(
                select(StorageCleanup.prefix)
                .where(StorageCleanup.next_attempt_at <= utcnow())
                .order_by(StorageCleanup.next_attempt_at)
                .limit(limit)
            )
        )
    finished = 0
    for prefix in prefixes:
        finished += await run_prefix(sessions, storage, prefix)
    return finished


async def run_forever(
    sessions: async_sessionmaker[AsyncSession], storage: Storage, interval: float
) -> None:
    while True:
        try:
            await run_due(sessions, storage)
        except Exception:
            log.exception("storage clean-up pass failed")
        await asyncio.sleep(interval)
