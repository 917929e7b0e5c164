"""A running run's heartbeat: the proof that its process lives (a run the reaper took for
dead is stopped).

Heartbeats are the process's, not each run's: one statement every third of a lease for
all the runs it executes (hundreds of runs cost the database one update every few
seconds, not hundreds, and no connection is opened for each)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable

import structlog
from sqlalchemy import bindparam, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from atelier.db.base import utcnow
from atelier.runs.events import ACTIVE_STATUSES
from atelier.runs.models import Run
from atelier.runs.outcome import StopReason

log = structlog.get_logger("atelier.runs")


class Heartbeats:
    """The heartbeats of every run this process executes, in one statement."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession], lease_seconds: float) -> None:
        self.sessions = sessions
        self.interval = lease_seconds / 3
        self._beating: dict[uuid.UUID, Callable[[StopReason], None]] = {}
        self._task: asyncio.Task[None] | None = None

    def __len__(self) -> int:
        """How many runs it beats for."""
        return len(self._beating)

    def watch(self, run_id: uuid.UUID, stop: Callable[[StopReason], None]) -> None:
        """Keep ``run_id`` alive until ``forget``; ``stop`` it if it was reaped."""
        self._beating[run_id] = stop
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._beat(), name="run-heartbeat-process")

    def forget(self, run_id: uuid.UUID) -> None:
        self._beating.pop(run_id, None)
        if not self._beating and self._task is not None:
            self._task.cancel()  # no run left: nothing pending at shutdown
            self._task = None

    async def _beat(self) -> None:
        while self._beating:
            await asyncio.sleep(self.interval)
            runs = list(self._beating)
            try:
                async with self.sessions() as session:
                    alive = await heartbeat(session, runs)
                    await session.commit()
            except Exception:
                log.warning("run heartbeats failed", runs=len(runs), exc_info=True)
                continue
            for run_id in runs:
                stop = self._beating.get(run_id)
                if run_id not in alive and stop is not None:
                    del self._beating[run_id]
                    stop("reaped")


async def heartbeat(session: AsyncSession, run_ids: list[uuid.UUID]) -> set[uuid.UUID]:
    """Prove the runs' process is alive; the ones still active (the others were reaped)."""
    rows = await session.scalars(_HEARTBEAT, {"beating": run_ids, "beat_at": utcnow()})
    return set(rows)


_HEARTBEAT = (
    update(Run)
    .where(Run.id.in_(bindparam("beating", expanding=True)), Run.status.in_(ACTIVE_STATUSES))
    .values(heartbeat_at=bindparam("beat_at"))
    .returning(Run.id)
    .execution_options(synchronize_session=False)
)
