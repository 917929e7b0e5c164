"""Storage clean-up jobs: every process runs them, but each job is worked on once at a time."""

from __future__ import annotations

import asyncio
from collections import Counter

from sqlalchemy import func, select

from atelier.db.base import utcnow
from atelier.workspace import cleanup
from atelier.workspace.base import StorageError
from atelier.workspace.models import StorageCleanup


async def due_jobs(app, count: int) -> list[str]:  # type: ignore[no-untyped-def]
    prefixes = [f"workspaces/t/gone-{n}/" for n in range(count)]
    async with app.state.resources.sessionmaker() as session:
        session.add_all(
            StorageCleanup(prefix=p, attempts=0, next_attempt_at=utcnow()) for p in prefixes
        )
        await session.commit()
    return prefixes


async def test_processes_running_the_jobs_at_once_take_each_job_once(app, monkeypatch) -> None:
    prefixes = await due_jobs(app, 20)
    storage, sessions = app.state.resources.storage, app.state.resources.sessionmaker
    calls: Counter[str] = Counter()

    async def delete_prefix(prefix: str) -> int:
        calls[prefix] += 1
        await asyncio.sleep(0.01)  # the others run meanwhile
        return 0

    monkeypatch.setattr(storage, "delete_prefix", delete_prefix)
    finished = await asyncio.gather(
        *(cleanup.run_due(sessions, storage, limit=7) for _ in range(4))
    )
    finished += await asyncio.gather(*(cleanup.run_due(sessions, storage) for _ in range(4)))
    assert sum(finished) == 20
    assert calls == Counter(prefixes)  # every one, each once
    async with sessions() as session:
        assert await session.scalar(select(func.count()).select_from(StorageCleanup)) == 0


async def test_attempts_are_counted_in_sql_by_whoever_claims(app, monkeypatch) -> None:
    await due_jobs(app, 5)
    storage, sessions = app.state.resources.storage, app.state.resources.sessionmaker

    async def failing(prefix: str) -> int:
        raise StorageError("storage is down")

    monkeypatch.setattr(storage, "delete_prefix", failing)
    await asyncio.gather(*(cleanup.run_due(sessions, storage) for _ in range(3)))
    async with sessions() as session:
        jobs = list(await session.scalars(select(StorageCleanup)))
    assert [job.attempts for job in jobs] == [1] * 5  # claimed once each, not three times
    assert all(job.next_attempt_at > utcnow() for job in jobs)  # backing off
    assert all("storage is down" in (job.last_error or "") for job in jobs)
