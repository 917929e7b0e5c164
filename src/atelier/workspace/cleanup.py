"""Storage clean-ups that must not be forgotten (BUG-011).

Deleting a conversation records its storage prefix in ``storage_cleanups`` in the same
transaction as the row deletes; the objects are then deleted at once and, if storage
fails, again by a periodic task in every process until the prefix is empty.

A job is worked on by one process at a time: it is claimed in one statement that moves
its next attempt past a claim period and counts the attempt (in SQL, never read and
written back); on PostgreSQL the rows being claimed are skipped by the other processes
(``FOR UPDATE SKIP LOCKED``), and SQLite takes one writer at a time.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

import structlog
from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from atelier.db.base import utcnow
from atelier.workspace.base import Storage, StorageError
from atelier.workspace.models import StorageCleanup

log = structlog.get_logger("atelier.cleanup")
MAX_BACKOFF_SECONDS = 300
CLAIM_SECONDS = 300  # a claimed job is someone's for this long, then anyone's again


async def schedule(session: AsyncSession, prefix: str) -> None:
    """Remember ``prefix`` for deletion, claimed by the caller (who tries it at once)."""
    if (
        await session.scalar(select(StorageCleanup.id).where(StorageCleanup.prefix == prefix))
        is None
    ):
        claimed_until = utcnow() + timedelta(seconds=CLAIM_SECONDS)
        session.add(StorageCleanup(prefix=prefix, attempts=1, next_attempt_at=claimed_until))
        await session.flush()


async def claim_due(
    sessions: async_sessionmaker[AsyncSession], limit: int
) -> list[tuple[str, int]]:
    """Claim the jobs whose time has come: (prefix, attempt number), for this process only."""
    now = utcnow()
    due = (
        select(StorageCleanup.id)
        .where(StorageCleanup.next_attempt_at <= now)
        .order_by(StorageCleanup.next_attempt_at)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    async with sessions() as session:
        claimed = await session.execute(
            update(StorageCleanup)
            .where(StorageCleanup.id.in_(due.scalar_subquery()))
            .values(
                next_attempt_at=now + timedelta(seconds=CLAIM_SECONDS),
                attempts=StorageCleanup.attempts + 1,
            )
            .returning(StorageCleanup.prefix, StorageCleanup.attempts)
            .execution_options(synchronize_session=False)
        )
        jobs = [(prefix, attempts) for prefix, attempts in claimed]
        await session.commit()
    return jobs


async def run_prefix(
    sessions: async_sessionmaker[AsyncSession], storage: Storage, prefix: str, attempt: int = 1
) -> bool:
    """Delete everything under a claimed ``prefix``; True when done (and its job removed)."""
    try:
        deleted = await storage.delete_prefix(prefix)
    except StorageError as exc:
        retry_at = utcnow() + timedelta(seconds=min(2**attempt, MAX_BACKOFF_SECONDS))
        async with sessions() as session:
            await session.execute(
                update(StorageCleanup)
                .where(StorageCleanup.prefix == prefix)
                .values(last_error=str(exc)[:2000], next_attempt_at=retry_at)
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
    """Claim every clean-up whose time has come and try it; returns how many finished."""
    finished = 0
    for prefix, attempt in await claim_due(sessions, limit):
        finished += await run_prefix(sessions, storage, prefix, attempt)
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
