"""Starts, stops, watches over and reaps runs: one per process, built in the lifespan.

Any process can accept a run (the conversation lock decides), stream any run (the
event log is shared), cancel any run (a signal reaches the process executing it), and
reap a run whose process died (its heartbeat stopped and its lock ran out).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import socket
import uuid
from datetime import timedelta
from typing import TYPE_CHECKING

import structlog
from sqlalchemy import select, update

from atelier.conversations.models import Conversation
from atelier.coordination.base import CoordinationUnavailable
from atelier.coordination.lease import Lease, LeaseHeld
from atelier.db.base import utcnow
from atelier.http.errors import ProblemError
from atelier.llm.models import CatalogModel
from atelier.runs import events, service
from atelier.runs.execution import RunTask, ToolsFactory, lock_key
from atelier.runs.tools import WorkspaceTools

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from atelier.resources import Resources

log = structlog.get_logger("atelier.runs")
CANCEL_CHANNEL = "run-cancel"
GONE_CHANNEL = "conversation-deleted"


def _busy(detail: str, retry_after_seconds: float) -> ProblemError:
    retry = str(max(1, round(retry_after_seconds)))
    return ProblemError(409, "conversation_busy", detail, headers={"retry-after": retry})


def _unavailable(detail: str) -> ProblemError:
    return ProblemError(503, "coordination_unavailable", detail, headers={"retry-after": "5"})


class RunManager:
    def __init__(self, resources: Resources) -> None:
        self.resources = resources
        self.metrics = resources.metrics
        self.owner_id = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.local: dict[uuid.UUID, RunTask] = {}
        self.accepting = True
        # Tests swap in tools that block or fail; production always uses the workspace's.
        self.tools_factory: ToolsFactory = WorkspaceTools
        self._background: list[asyncio.Task[None]] = []

    # -- starting and stopping runs -----------------------------------------------------

    async def start(
        self, conversation: Conversation, model: CatalogModel, text: str, *, wants_title: bool
    ) -> uuid.UUID:
        """Accept a run or refuse it as plain HTTP; once accepted it runs on its own."""
        if not self.accepting:
            raise ProblemError(
                503, "shutting_down", "this server is shutting down", headers={"retry-after": "1"}
            )
        run_id = uuid.uuid4()
        run = RunTask(
            self,
            run_id=run_id,
            conversation=conversation,
            model=model,
            text=text,
            wants_title=wants_title,
        )
        self.local[run_id] = run
        task = self.resources.supervisor.spawn(run.execute(), name=f"run-{run_id}")
        task.add_done_callback(lambda _: self.local.pop(run_id, None))
        try:
            # Shielded: a client that leaves now does not stop a run that is being accepted.
            await asyncio.shield(run.accepted)
        except (LeaseHeld, service.RunConflict) as exc:
            self.metrics.run_lock_contention.inc()
            retry = exc.retry_after_seconds if isinstance(exc, LeaseHeld) else 1
            raise _busy("a run is active on this conversation", retry) from exc
        except service.ConversationGone as exc:
            raise ProblemError(404, "not_found", "no such conversation") from exc
        except CoordinationUnavailable as exc:
            raise _unavailable("the conversation lock cannot be taken now") from exc
        self.metrics.runs_started.inc()
        self.metrics.runs_active.inc()
        return run_id

    async def cancel(self, run_id: uuid.UUID) -> None:
        """Stop the run wherever it executes; a run that already ended is not affected."""
        run = self.local.get(run_id)
        if run is not None:
            run.stop("cancelled")
            return
        try:
            await self.resources.coordination.publish(CANCEL_CHANNEL, str(run_id))
        except CoordinationUnavailable as exc:
            raise _unavailable("the cancel request cannot reach the run now") from exc

    @contextlib.asynccontextmanager
    async def exclusive(
        self, conversation_id: uuid.UUID, wait_seconds: float = 10.0
    ) -> AsyncIterator[None]:
        """Hold the conversation's lock (no run in flight, none can start), waiting a little."""
        loop = asyncio.get_running_loop()
        give_up = loop.time() + wait_seconds
        while True:
            lease = Lease(
                self.resources.coordination,
                lock_key(conversation_id),
                ttl_seconds=self.resources.settings.run_lease_seconds,
            )
            try:
                async with lease:
                    yield
                    return
            except LeaseHeld as exc:
                if loop.time() >= give_up:
                    detail = "a run is still active on this conversation"
                    raise _busy(detail, exc.retry_after_seconds) from exc
                await asyncio.sleep(0.05)
            except CoordinationUnavailable as exc:
                raise _unavailable("the conversation lock cannot be taken now") from exc

    async def forget_workspace(self, conversation_id: uuid.UUID) -> None:
        """Remove every process's copy of a deleted conversation's workspace: this one's now,
        the others' when they hear of it (or, if they miss it, at their next sweep)."""
        await self.resources.workspaces.forget([conversation_id])
        with contextlib.suppress(CoordinationUnavailable):
            await self.resources.coordination.publish(GONE_CHANNEL, str(conversation_id))

    def finished(self, status: str) -> None:
        self.metrics.runs_finished.labels(status).inc()
        self.metrics.runs_active.dec()

    def first_event(self, seconds: float) -> None:
        self.metrics.run_time_to_first_event.observe(seconds)

    def reaped(self, run_id: uuid.UUID) -> None:
        log.warning("run reaped: its process stopped", run_id=str(run_id))
        self.metrics.runs_reaped.inc()

    async def title(self, conversation_id: uuid.UUID, model: CatalogModel, text: str) -> str | None:
        """Title an untitled conversation after its first run; wait only briefly for it."""
        task = self.resources.supervisor.spawn(
            self._make_title(conversation_id, model, text), name=f"title-{conversation_id}"
        )
        done, _ = await asyncio.wait({task}, timeout=self.resources.settings.title_wait_seconds)
        if task in done and not task.cancelled() and task.exception() is None:
            return task.result()
        return None

    async def _make_title(
        self, conversation_id: uuid.UUID, model: CatalogModel, text: str
    ) -> str | None:
        try:
            title = await self.resources.titles.generate(model, text, "")
        except Exception:
            log.warning("title generation failed", conversation_id=str(conversation_id))
            return None
        async with self.resources.sessionmaker() as session:
            named = await session.execute(
                update(Conversation)
                .where(Conversation.id == conversation_id, Conversation.title.is_(None))
                .values(title=title)
            )
            await session.commit()
        return title if named.rowcount else None  # type: ignore[attr-defined]

    # -- background duties of every process ---------------------------------------------

    def start_background(self) -> None:
        self._background = [
            asyncio.create_task(self._listen_for_cancels(), name="run-cancel-listener"),
            asyncio.create_task(self._listen_for_deletions(), name="workspace-deletions"),
            asyncio.create_task(self._reap_forever(), name="run-reaper"),
            asyncio.create_task(self._sweep_workspaces_forever(), name="workspace-sweep"),
        ]

    async def shutdown(self, grace_seconds: float) -> None:
        """Refuse new runs; the supervisor then gives running ones the grace period."""
        self.accepting = False
        for task in self._background:
            task.cancel()
        for task in self._background:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.resources.supervisor.shutdown(grace_seconds)

    async def _listen_for_cancels(self) -> None:
        while True:
            try:
                async for message in self.resources.coordination.subscribe(CANCEL_CHANNEL):
                    with contextlib.suppress(ValueError):
                        run = self.local.get(uuid.UUID(message))
                        if run is not None:
                            run.stop("cancelled")
            except CoordinationUnavailable:
                log.warning("cancel signals unavailable; retrying")
                await asyncio.sleep(1.0)

    async def _listen_for_deletions(self) -> None:
        while True:
            try:
                async for message in self.resources.coordination.subscribe(GONE_CHANNEL):
                    with contextlib.suppress(ValueError):
                        await self.resources.workspaces.forget([uuid.UUID(message)])
            except CoordinationUnavailable:
                await asyncio.sleep(1.0)

    async def _sweep_workspaces_forever(self) -> None:
        while True:
            await asyncio.sleep(self.resources.settings.storage_cleanup_interval_seconds)
            try:
                await self.sweep_workspaces()
            except Exception:
                log.warning("workspace sweep failed; retrying", exc_info=True)

    async def sweep_workspaces(self) -> int:
        """Remove the copies of conversations that no longer exist (an announcement missed)."""
        copies = self.resources.workspaces.copies()
        if not copies:
            return 0
        async with self.resources.sessionmaker() as session:
            existing = set(
                await session.scalars(select(Conversation.id).where(Conversation.id.in_(copies)))
            )
        return await self.resources.workspaces.forget(c for c in copies if c not in existing)

    async def _reap_forever(self) -> None:
        interval = self.resources.settings.run_lease_seconds / 3
        while True:
            await asyncio.sleep(interval * random.uniform(0.8, 1.2))
            try:
                await self.reap()
            except Exception:
                log.warning("reaping failed; retrying", exc_info=True)

    async def reap(self) -> int:
        """Fail runs whose process stopped: no heartbeat for a lease, and the lock is free."""
        settings = self.resources.settings
        coordination = self.resources.coordination
        async with self.resources.sessionmaker() as session:
            stale = await service.stale_runs(session, settings.run_lease_seconds)
        reaped = 0
        for run_id, conversation_id in stale:
            if run_id in self.local or await coordination.lease_ttl_ms(lock_key(conversation_id)):
                continue
            async with self.resources.sessionmaker() as session:
                ended = await service.end_run(
                    session,
                    run_id,
                    "failed",
                    "worker_lost",
                    service.WORKER_LOST,
                    stale_before=utcnow() - timedelta(seconds=settings.run_lease_seconds),
                )
                await session.commit()
            if ended:
                reaped += 1
                self.reaped(run_id)
                await events.announce_end(
                    coordination,
                    run_id,
                    "failed",
                    {"code": "worker_lost", "message": service.WORKER_LOST},
                    settings.run_event_retention_seconds,
                )
        return reaped
