"""A running run's two guards: its heartbeat, the proof that its process lives (a run the
reaper took for dead is stopped), and its idle timeout (no model or tool progress)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable

import structlog
from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession

from atelier.db.base import utcnow
from atelier.runs.environment import RunEnvironment
from atelier.runs.events import ACTIVE_STATUSES
from atelier.runs.models import Run
from atelier.runs.outcome import StopReason

log = structlog.get_logger("atelier.runs")


class Watchdogs:
    def __init__(
        self, env: RunEnvironment, run_id: uuid.UUID, stop: Callable[[StopReason], None]
    ) -> None:
        self.env = env
        self.run_id = run_id
        self.stop = stop
        self._loop = asyncio.get_running_loop()
        self._last_progress: float | None = None  # loop time; None until the agent starts

    def progress(self) -> None:
        self._last_progress = self._loop.time()

    async def heartbeat(self) -> None:
        while True:
            await asyncio.sleep(self.env.settings.run_lease_seconds / 3)
            try:
                async with self.env.sessions() as session:
                    alive = await heartbeat(session, self.run_id)
                    await session.commit()
            except Exception:
                log.warning("run heartbeat failed", run_id=str(self.run_id), exc_info=True)
                continue
            if not alive:
                self.stop("reaped")
                return

    async def watch_idle(self) -> None:
        """Stop the work once neither the model nor a tool made progress for too long.

        A watchdog rather than a timer moved on every token: progress costs one store.
        """
        idle = self.env.settings.run_idle_timeout_seconds
        while True:
            if self._last_progress is None:
                await asyncio.sleep(idle / 4)
                continue
            quiet = self._loop.time() - self._last_progress
            if quiet >= idle:
                self.stop("idle")
                return
            await asyncio.sleep(idle - quiet)


async def heartbeat(session: AsyncSession, run_id: uuid.UUID) -> bool:
    """Prove the run's process is alive; False if the run is no longer active (reaped)."""
    alive = await session.scalar(
        update(Run)
        .where(Run.id == run_id, Run.status.in_(ACTIVE_STATUSES))
        .values(heartbeat_at=utcnow())
        .returning(Run.id)
    )
    return alive is not None
