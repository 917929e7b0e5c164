"""What every process does in the background for the runs of the whole deployment: it
hears cancel requests and deletions, reaps the runs of processes that died, denies
approvals nobody gave in time and takes up the runs that waited for them, and sweeps
away its copies of deleted conversations' workspaces."""

from __future__ import annotations

import asyncio
import contextlib
import random
import uuid
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

import structlog
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

import atelier.runs.approvals as approvals
import atelier.runs.queueing as queueing
import atelier.runs.service as service
from atelier.budgets import enforcement as budgets
from atelier.conversations.models import Conversation
from atelier.coordination.base import CoordinationUnavailable
from atelier.db.base import utcnow
from atelier.idempotency.store import IdempotencyStore
from atelier.observability.metrics import Metrics
from atelier.runs.environment import RunEnvironment, lock_key
from atelier.runs.events import ACTIVE_STATUSES, ErrorCode, RunError, RunFailed, RunStatus
from atelier.runs.log import announce_end
from atelier.runs.models import Run

if TYPE_CHECKING:
    from atelier.runs.supervision import RunTask

log = structlog.get_logger("atelier.runs")
WORKER_LOST_ERROR = RunError(code=ErrorCode.WORKER_LOST, message=service.WORKER_LOST)


class Upkeep:
    def __init__(
        self,
        env: RunEnvironment,
        metrics: Metrics,
        local: dict[uuid.UUID, RunTask],
        resume: Callable[[uuid.UUID], Awaitable[None]],
        start_next: Callable[[uuid.UUID], Awaitable[None]],
    ) -> None:
        self.env = env
        self.metrics = metrics
        self.local = local  # the runs this process executes
        self.resume = resume  # takes up a run whose approvals are decided
        self.start_next = start_next  # starts a conversation's next queued run

    def start(self, cancel_channel: str, gone_channel: str) -> None:
        supervisor = self.env.supervisor
        supervisor.daemon(self.env.lag.watch(self.metrics.event_loop_lag), "event-loop-lag")
        supervisor.daemon(self._listen(cancel_channel, self._cancel_here), "run-cancel-listener")
        supervisor.daemon(self._listen(gone_channel, self._forget_here), "workspace-deletions")
        supervisor.daemon(self._every(self._reap_interval, self.reap), "run-reaper")
        supervisor.daemon(
            self._every(self._sweep_interval, self.sweep_workspaces), "workspace-sweep"
        )
        supervisor.daemon(self._every(self._reap_interval, self.decided), "approval-expiry")
        supervisor.daemon(self._every(self._reap_interval, self.queued), "run-queue")
        supervisor.daemon(self._every(self._reap_interval, self.abandoned_holds), "budget-holds")
        keys = IdempotencyStore(
            self.env.sessions, self.env.sealer, self.env.settings.max_idempotency_records
        )
        supervisor.daemon(
            self._every(self._sweep_interval, keys.forget_expired), "idempotency-expiry"
        )

    async def _listen(self, channel: str, handle: Callable[[uuid.UUID], Awaitable[None]]) -> None:
        while True:
            try:
                async for message in self.env.coordination.subscribe(channel):
                    with contextlib.suppress(ValueError):
                        await handle(uuid.UUID(message))
            except CoordinationUnavailable:
                log.warning("signals unavailable; retrying", channel=channel)
                await asyncio.sleep(1.0)

    async def _every(
        self, interval: Callable[[], float], duty: Callable[[], Awaitable[int]]
    ) -> None:
        while True:
            await asyncio.sleep(interval())
            try:
                await duty()
            except Exception:
                log.warning("background duty failed; retrying", duty=duty.__name__, exc_info=True)

    def _reap_interval(self) -> float:
        return self.env.settings.run_lease_seconds / 3 * random.uniform(0.8, 1.2)

    def _sweep_interval(self) -> float:
        return self.env.settings.storage_cleanup_interval_seconds

    async def _cancel_here(self, run_id: uuid.UUID) -> None:
        run = self.local.get(run_id)
        if run is not None:
            run.stop("cancelled")

    async def _forget_here(self, conversation_id: uuid.UUID) -> None:
        await self.env.workspaces.forget([conversation_id])

    async def sweep_workspaces(self) -> int:
        """Remove the copies of conversations that no longer exist (an announcement missed)."""
        copies = self.env.workspaces.copies()
        if not copies:
            return 0
        async with self.env.sessions() as session:
            existing = set(
                await session.scalars(select(Conversation.id).where(Conversation.id.in_(copies)))
            )
        return await self.env.workspaces.forget(c for c in copies if c not in existing)

    async def reap(self) -> int:
        """Fail runs whose process stopped: no heartbeat for a lease, and the lock is free."""
        settings, coordination = self.env.settings, self.env.coordination
        async with self.env.sessions() as session:
            stale = await stale_runs(session, settings.run_lease_seconds)
        reaped = 0
        for run_id, conversation_id in stale:
            if run_id in self.local or await coordination.lease_ttl_ms(lock_key(conversation_id)):
                continue
            async with self.env.sessions() as session:
                ended = await service.end_run(
                    session,
                    run_id,
                    RunStatus.FAILED,
                    WORKER_LOST_ERROR,
                    stale_before=utcnow() - timedelta(seconds=settings.run_lease_seconds),
                )
                await session.commit()
            if ended:
                reaped += 1
                await self.reaped(run_id)
        return reaped

    async def decided(self) -> int:
        """Deny the calls nobody decided in time, and take up every waiting run whose calls
        are all decided (its decision may have come while no process could resume it)."""
        timeout = self.env.settings.approval_timeout_seconds
        async with self.env.sessions() as session:
            await approvals.expire(session, f"no decision within {timeout:g} s")
            ready = await approvals.decided_runs(session)
            await session.commit()
        for run_id in ready:
            await self.resume(run_id)
        return len(ready)

    async def abandoned_holds(self) -> int:
        """Release what dead runs' model calls held of their budgets."""
        async with self.env.sessions() as session:
            released = await budgets.release_abandoned(session)
            await session.commit()
        return released

    async def queued(self) -> int:
        """Start the queued runs of conversations nobody handed over (a process died)."""
        async with self.env.sessions() as session:
            idle = await queueing.idle_with_a_line(session)
        for conversation_id in idle:
            await self.start_next(conversation_id)
        return len(idle)

    async def reaped(self, run_id: uuid.UUID) -> None:
        """Its process died: count it, and end its event log for whoever watches it."""
        log.warning("run reaped: its process stopped", run_id=str(run_id))
        self.metrics.runs_reaped.inc()
        await announce_end(
            self.env.coordination,
            run_id,
            RunFailed(run_id=str(run_id), error=WORKER_LOST_ERROR),
            self.env.settings.run_event_retention_seconds,
        )


async def stale_runs(
    session: AsyncSession, lease_seconds: float
) -> list[tuple[uuid.UUID, uuid.UUID]]:
    """Active runs whose process has not proved it is alive for a whole lease."""
    cutoff: datetime = utcnow() - timedelta(seconds=lease_seconds)
    rows = await session.execute(
        select(Run.id, Run.conversation_id)
        .where(Run.status.in_(ACTIVE_STATUSES), Run.heartbeat_at < cutoff)
        .limit(100)
    )
    return [(run_id, conversation_id) for run_id, conversation_id in rows]
