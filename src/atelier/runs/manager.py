"""Starts, stops, watches over and reaps runs: one per process, built in the lifespan.

Any process can accept a run (the conversation lock decides), stream any run (the
event log is shared), cancel any run (a signal reaches the process executing it), and
reap a run whose process died (its heartbeat stopped and its lock ran out).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable

import structlog
from sqlalchemy import select

import atelier.runs.approvals as approvals
import atelier.runs.pausing as pausing
import atelier.runs.service as service
from atelier.conversations import service as conversations
from atelier.conversations.models import Conversation, Kind
from atelier.conversations.service import get_owned
from atelier.coordination.base import CoordinationUnavailable
from atelier.coordination.lease import Lease, LeaseHeld
from atelier.errors import ConversationBusy, DomainError, NotFound, Unavailable
from atelier.observability.metrics import Metrics
from atelier.runs.environment import RunEnvironment, RunRequest, lock_key
from atelier.runs.events import UNENDED_STATUSES, WAITING_STATUSES, Numbered, RunStatus
from atelier.runs.follow import follow_local
from atelier.runs.models import Run
from atelier.runs.outcome import Outcome
from atelier.runs.pausing import NotResumed, Waiting
from atelier.runs.queueing import RunQueue
from atelier.runs.recorder import Opened
from atelier.runs.starting import StartGate
from atelier.runs.supervision import RunTask
from atelier.runs.tools import ToolsFactory
from atelier.runs.upkeep import Upkeep
from atelier.tenants.principal import Principal
from atelier.workspace import cleanup
from atelier.workspace.service import conversation_prefix, undo_prefix

log = structlog.get_logger("atelier.runs")
CANCEL_CHANNEL = "run-cancel"
LOCK_HANDOVER_TRIES, LOCK_HANDOVER_PAUSE = 50, 0.02
GONE_CHANNEL = "conversation-deleted"


def busy(detail: str, retry_after_seconds: float) -> DomainError:
    return ConversationBusy(detail, max(1, round(retry_after_seconds)))


def unavailable(detail: str) -> DomainError:
    return Unavailable("coordination_unavailable", detail, retry_after=5)


class RunManager:
    def __init__(self, env: RunEnvironment, metrics: Metrics) -> None:
        self.env = env
        self.metrics = metrics
        self.local: dict[uuid.UUID, RunTask] = {}
        self.accepting = True
        self.queue = RunQueue(self)
        self.gate = StartGate(env.settings, metrics)
        self.upkeep = Upkeep(env, metrics, self.local, self.resume, self.queue.start_next)

    @property
    def tools_factory(self) -> ToolsFactory:
        return self.env.tools_factory

    @tools_factory.setter
    def tools_factory(self, factory: ToolsFactory) -> None:
        # Tests swap in tools that block or fail; production always uses the workspace's.
        self.env.tools_factory = factory

    # -- starting and stopping runs -----------------------------------------------------

    async def start(self, request: RunRequest) -> uuid.UUID:
        """Accept a run (or queue it, if the request says so and the conversation is busy)
        or refuse it as plain HTTP; once accepted it runs on its own."""
        if request.model_id is not None:
            self.env.catalog.resolve(request.model_id)  # 400 before anything is taken
        if not self.accepting:
            raise Unavailable("shutting_down", "this server is shutting down", retry_after=1)
        try:
            async with self.gate.admitted(len(self.local)):
                run, opened = await self.accept(request)
        except (LeaseHeld, service.RunConflict) as exc:
            self.metrics.run_lock_contention.inc()
            if request.strategy != "reject":
                return await self.queue.add(request)
            retry = exc.retry_after_seconds if isinstance(exc, LeaseHeld) else 1
            raise busy("a run is active on this conversation", retry) from exc
        except service.ConversationGone as exc:
            raise NotFound("not_found", f"no such {_what(request.kind)}") from exc
        except CoordinationUnavailable as exc:
            raise unavailable("the conversation lock cannot be taken now") from exc
        self.metrics.runs_started.inc()
        self.metrics.runs_active.inc()
        if opened.abandoned is not None:
            await self.upkeep.reaped(opened.abandoned)
        return run.run_id

    async def accept(self, request: RunRequest) -> tuple[RunTask, Opened]:
        for attempt in range(LOCK_HANDOVER_TRIES):
            run = RunTask(self.env, request)
            if request.kind == "agent":
                run.on_free = functools.partial(self.queue.hand_over, run)
            self.local[run.run_id] = run
            task = self.env.supervisor.spawn(run.execute(), name=f"run-{run.run_id}")
            task.add_done_callback(functools.partial(self._finished, run))
            try:
                # Shielded: a client that leaves now does not stop a run being accepted.
                return run, await asyncio.shield(run.accepted)
            except LeaseHeld:
                # The run before may have ended a moment ago and be letting go of the lock
                # now: a client that saw it end is not refused for that moment.
                if attempt + 1 == LOCK_HANDOVER_TRIES or not await self._idle(request):
                    raise
                await asyncio.sleep(LOCK_HANDOVER_PAUSE)
        raise AssertionError("unreachable")

    async def _idle(self, request: RunRequest) -> bool:
        async with self.env.sessions() as session:
            active = await session.execute(
                select(Conversation.active_run_id).where(Conversation.id == request.conversation_id)
            )
            row = active.first()
        return row is not None and row.active_run_id is None

    def _finished(self, run: RunTask, task: asyncio.Task[Outcome | None]) -> None:
        if self.local.get(run.run_id) is run:
            del self.local[run.run_id]
        if task.cancelled() or task.exception() is not None:
            outcome: Outcome | None = Outcome(RunStatus.CANCELLED)
        else:
            outcome = task.result()
        if outcome is not None:  # None: never accepted
            self.metrics.runs_finished.labels(outcome.status).inc()
            self.metrics.runs_active.dec()
        if outcome is not None and outcome.status == RunStatus.AWAITING_APPROVAL:
            # Its decisions may have come while it was still letting go of its lock.
            self.env.supervisor.spawn(self.resume(run.run_id), name=f"run-resume-{run.run_id}")
        elif outcome is not None and run.on_free is not None:
            run.on_free()  # if the run ended without letting go of its lock in order

    async def resume(self, run_id: uuid.UUID) -> None:
        """Go on with a run whose approvals are all decided, here (any process may; the
        first to take it up runs it). One that cannot start now is taken up later by
        whichever process's upkeep finds it first."""
        async with self.env.sessions() as session:
            row = (
                await session.execute(
                    select(Run.conversation_id, Run.paused_event_id).where(
                        Run.id == run_id,
                        Run.status.in_(WAITING_STATUSES),
                        ~approvals.undecided(run_id),
                    )
                )
            ).first()
        if row is None or row.paused_event_id is None or run_id in self.local:
            return
        run = RunTask(self.env, None, Waiting(run_id, row.conversation_id, row.paused_event_id))
        run.on_free = functools.partial(self.queue.hand_over, run)
        self.local[run_id] = run
        task = self.env.supervisor.spawn(run.execute(), name=f"run-{run_id}")
        task.add_done_callback(functools.partial(self._finished, run))
        try:
            await asyncio.shield(run.accepted)
        except (LeaseHeld, NotResumed, CoordinationUnavailable):
            return
        self.metrics.runs_active.inc()

    async def decide(self, run: Run, call_id: str, approved: bool, reason: str | None) -> None:
        """A person's decision on a call the run waits with; the run goes on once every
        call of it is decided."""
        async with self.env.sessions() as session:
            await approvals.decide(session, run.id, call_id, approved, reason)
            await session.commit()
        await self.resume(run.id)

    async def answer(self, run: Run, results: list[tuple[str, str, bool]]) -> None:
        """Results of the client tools the run waits on (``(call_id, output, is_error)``),
        recorded together; the run goes on once every call of it is answered or decided."""
        async with self.env.sessions() as session:
            for call_id, output, is_error in results:
                await approvals.answer(session, run.id, call_id, output, is_error)
            await session.commit()
        await self.resume(run.id)

    async def cancel(self, run_id: uuid.UUID) -> None:
        """Stop the run wherever it executes; a run that already ended is not affected."""
        run = self.local.get(run_id)
        if run is not None:
            run.stop("cancelled")
            if _runs(run):
                return
            # Still being accepted here: a queued run's turn may be tried now and fail (its
            # conversation still busy), and the stop with it: its row must say cancelled.
        if await pausing.cancel_waiting(self.env, run_id):
            return
        try:
            await self.env.coordination.publish(CANCEL_CHANNEL, str(run_id))
        except CoordinationUnavailable as exc:
            raise unavailable("the cancel request cannot reach the run now") from exc

    async def cancel_owned(
        self, principal: Principal, conversation_id: uuid.UUID, run_id: uuid.UUID, kind: Kind
    ) -> Run:
        """Stop a run of the caller's, from any process; one that ended is left as it is."""
        async with self.env.sessions() as session:
            run = await service.owned_run(session, principal, conversation_id, run_id, kind)
        if run.status in UNENDED_STATUSES:
            await self.cancel(run_id)
        return run

    async def remove_conversation(
        self, principal: Principal, conversation_id: uuid.UUID, kind: Kind
    ) -> Callable[[], Awaitable[None]]:
        """Delete a conversation (or chat): its active run is cancelled first, then its rows
        go and its workspace is scheduled for deletion, in one transaction. Returns what to
        do once the caller has answered: delete the objects, and every process's copies."""
        env = self.env
        async with env.sessions() as session:
            active = (await get_owned(session, principal, conversation_id, kind)).active_run_id
        if active is not None:
            await self.cancel(active)
        # Under the conversation lock: the cancelled run has saved and let go, and no run can
        # start (or upload into the prefix) while the rows go.
        async with self.exclusive(conversation_id), env.sessions() as session:
            conversation = await get_owned(session, principal, conversation_id, kind)
            prefixes = [
                conversation_prefix(env.settings, conversation.tenant_id, conversation.id),
                undo_prefix(env.settings, conversation.tenant_id, conversation.id),
            ]
            # Rows go (messages, runs, files cascade), answers kept for Idempotency-Keys
            # about it or its runs with them, and the prefixes are remembered, together.
            await conversations.delete(session, conversation)
            for prefix in prefixes:
                await cleanup.schedule(session, prefix)
            await session.commit()

        async def after() -> None:
            # Failures stay scheduled for the periodic task.
            for prefix in prefixes:
                await cleanup.run_prefix(env.sessions, env.storage, prefix)
            await self.forget_workspace(conversation_id)

        return after

    def events(self, run_id: uuid.UUID, after: int) -> AsyncIterator[list[Numbered]]:
        """The run's events numbered above ``after``, up to its terminal one, in batches
        that are ready together: from memory if it executes in this process, else from the
        shared log (or the database); ``Waiting`` (no id) when it stops to wait in its row."""
        run = self.local.get(run_id)
        if run is not None:
            return follow_local(run.events, self.env.coordination, self.env.sessions, after)
        return self.queue.follow(run_id, after)

    @contextlib.asynccontextmanager
    async def exclusive(
        self, conversation_id: uuid.UUID, wait_seconds: float = 10.0
    ) -> AsyncIterator[None]:
        """Hold the conversation's lock (no run in flight, none can start), waiting a little."""
        loop = asyncio.get_running_loop()
        give_up = loop.time() + wait_seconds
        while True:
            lease = Lease(
                self.env.coordination,
                lock_key(conversation_id),
                ttl_seconds=self.env.settings.run_lease_seconds,
            )
            try:
                async with lease:
                    yield
                    return
            except LeaseHeld as exc:
                if loop.time() >= give_up:
                    detail = "a run is still active on this conversation"
                    raise busy(detail, exc.retry_after_seconds) from exc
                await asyncio.sleep(0.05)
            except CoordinationUnavailable as exc:
                raise unavailable("the conversation lock cannot be taken now") from exc

    async def forget_workspace(self, conversation_id: uuid.UUID) -> None:
        """Remove every process's copy of a deleted conversation's workspace: this one's now,
        the others' when they hear of it (or, if they miss it, at their next sweep)."""
        await self.env.workspaces.forget([conversation_id])
        with contextlib.suppress(CoordinationUnavailable):
            await self.env.coordination.publish(GONE_CHANNEL, str(conversation_id))

    # -- background duties of every process ---------------------------------------------

    def start_background(self) -> None:
        self.upkeep.start(CANCEL_CHANNEL, GONE_CHANNEL)

    async def reap(self) -> int:
        return await self.upkeep.reap()

    async def sweep_workspaces(self) -> int:
        return await self.upkeep.sweep_workspaces()

    async def shutdown(self, grace_seconds: float) -> None:
        """Refuse new runs; running ones get the grace period, then are cancelled and saved."""
        self.accepting = False
        await self.env.supervisor.shutdown(grace_seconds)


def _runs(run: RunTask) -> bool:
    """Whether ``run`` was accepted here (it hears a stop), not merely being accepted."""
    accepted = run.accepted
    return accepted.done() and not accepted.cancelled() and accepted.exception() is None


def _what(kind: Kind) -> str:
    return "chat" if kind == "chat" else "conversation"
