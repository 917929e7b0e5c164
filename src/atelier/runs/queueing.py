"""Queued runs: a run asked for while another is active waits in its row (``queued``)
and starts, in order, once its conversation is free -- handed over at once by the
process whose run let go of the conversation, or by any process's upkeep (a process
died). Its followers in the process that starts it read it from memory, not from the
shared log's batches."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import TYPE_CHECKING, Protocol

from sqlalchemy import insert, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession

import atelier.runs.pausing as pausing
import atelier.runs.service as service
from atelier.conversations.models import Conversation, reachable_by
from atelier.coordination.base import CoordinationUnavailable
from atelier.coordination.lease import LeaseHeld
from atelier.db.base import utcnow
from atelier.errors import DomainError, NotFound
from atelier.llm.base import ToolSpec
from atelier.observability.metrics import Metrics
from atelier.runs.environment import RunEnvironment, RunRequest
from atelier.runs.events import ErrorCode, Numbered, RunError, RunFailed, RunStatus
from atelier.runs.follow import follow_local, follow_shared
from atelier.runs.models import Run
from atelier.runs.recorder import Opened
from atelier.tenants.principal import Principal

if TYPE_CHECKING:
    from atelier.runs.supervision import RunTask

QUEUED_LOOK_SECONDS = 1.0  # a follower of a queued run looks whether it started elsewhere


class Runs(Protocol):
    """What the queue needs of the run manager that owns it."""

    env: RunEnvironment
    metrics: Metrics
    local: dict[uuid.UUID, RunTask]
    accepting: bool

    async def accept(self, request: RunRequest) -> tuple[RunTask, Opened]: ...

    async def cancel(self, run_id: uuid.UUID) -> None: ...


class RunQueue:
    """The run manager's queue."""

    def __init__(self, manager: Runs) -> None:
        self.manager = manager
        self.env = manager.env
        self._starting: dict[uuid.UUID, asyncio.Future[RunTask]] = {}  # followed here

    async def add(self, request: RunRequest) -> uuid.UUID:
        """Queue the run behind the active one (interrupting it, or rolling it back, if
        asked): it starts when the conversation is free, in this process or whichever hands
        over first."""
        cuts_in = request.strategy in ("interrupt", "rollback")
        try:
            async with self.env.sessions() as session:
                active = await session.scalar(
                    select(Conversation.active_run_id).where(
                        Conversation.id == request.conversation_id
                    )
                )
                run_id = await enqueue(
                    session,
                    request,
                    first=cuts_in,
                    rolls_back=active if request.strategy == "rollback" else None,
                )
                await session.commit()
        except service.ConversationGone as exc:
            raise NotFound("not_found", "no such conversation") from exc
        if cuts_in and active is not None:
            await self.manager.cancel(active)
        # The active run may have ended while this one was queued: it did not see it.
        self.env.supervisor.spawn(self.start_next(request.conversation_id), name="run-queue")
        return run_id

    async def start_next(self, conversation_id: uuid.UUID) -> None:
        """Start the conversation's next queued run, if it is free; a run that cannot start
        when its turn comes (its model or agent is gone, say) ends ``not_started``."""
        while self.manager.accepting:
            async with self.env.sessions() as session:
                queued = await next_in_line(session, conversation_id)
            if queued is None:
                return
            key = queued.api_key_id or uuid.UUID(int=0)  # 0: no key (the key was deleted)
            owner = Principal(queued.tenant_id, "", key, queued.user_id)
            request = RunRequest(
                owner,
                conversation_id,
                "agent",
                queued.input,
                queued.model_id or None,
                queued_run_id=queued.id,
                supersedes=queued.supersedes,
                rolls_back=queued.rolls_back,
                instructions=queued.instructions,
                client_tools=tuple(ToolSpec.of(t) for t in queued.client_tools or []),
            )
            try:
                run, _ = await self.manager.accept(request)
            except (LeaseHeld, service.RunConflict, CoordinationUnavailable):
                return  # busy: whoever holds it hands over when it ends
            except service.ConversationGone:
                continue  # cancelled (or its conversation deleted) meanwhile
            except DomainError as refused:
                await self._not_started(queued.id, refused.detail)
                continue
            self.manager.metrics.runs_started.inc()
            self.manager.metrics.runs_active.inc()
            if (following := self._starting.pop(queued.id, None)) is not None:
                following.set_result(run)  # its followers here read it from memory
            return

    async def _not_started(self, run_id: uuid.UUID, why: str) -> None:
        error = RunError(code=ErrorCode.NOT_STARTED, message=why)
        async with self.env.sessions() as session:
            ended = await service.end_run(session, run_id, RunStatus.FAILED, error, last_event_id=1)
            await session.commit()
        if ended:
            await pausing.announce_first(
                self.env, run_id, RunFailed(run_id=str(run_id), error=error)
            )

    def hand_over(self, run: RunTask) -> None:
        """The conversation is free: its next queued run starts here, at once (once)."""
        if run.on_free is not None:
            run.on_free = None
            self.env.supervisor.spawn(self.start_next(run.conversation_id), name="run-queue")

    async def follow(self, run_id: uuid.UUID, after: int) -> AsyncIterator[list[Numbered]]:
        """A run of another process -- or a queued one, which may start here: then from
        its memory, without the shared log's delay."""
        run = _accepted(self.manager.local.get(run_id))
        while run is None:
            try:
                async with self.env.sessions() as session:
                    status = await session.scalar(select(Run.status).where(Run.id == run_id))
            except SQLAlchemyError:  # the shared log's follower asks the row again itself
                status = None
            if status != RunStatus.QUEUED:
                if (gone := self._starting.get(run_id)) is not None and not gone.done():
                    del self._starting[run_id]  # it started elsewhere, or ended queued
                run = _accepted(self.manager.local.get(run_id))
                break
            started = self._starting.setdefault(run_id, asyncio.get_running_loop().create_future())
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(QUEUED_LOOK_SECONDS):
                    run = await asyncio.shield(started)
        events = (
            follow_local(run.events, self.env.coordination, self.env.sessions, after)
            if run is not None
            else follow_shared(
                self.env.coordination,
                self.env.sessions,
                run_id,
                after,
                settle_seconds=self.env.settings.title_wait_seconds + 5,
            )
        )
        async for batch in events:
            yield batch


async def enqueue(
    session: AsyncSession, request: RunRequest, *, first: bool, rolls_back: uuid.UUID | None
) -> uuid.UUID:
    """A run that starts when the ones before it have ended (``first``: before the other
    queued runs -- it cut in on the active one). Raises ``ConversationGone``."""
    principal = request.principal
    owned = await session.scalar(
        select(Conversation.id).where(
            Conversation.id == request.conversation_id,
            *reachable_by(principal),
            Conversation.kind == "agent",
        )
    )
    if owned is None:
        raise service.ConversationGone
    run_id, now = uuid.uuid4(), utcnow()
    await session.execute(
        insert(Run).values(
            id=run_id,
            conversation_id=request.conversation_id,
            tenant_id=principal.tenant_id,
            user_id=principal.user_id,
            api_key_id=principal.key_id,
            model_id=request.model_id or "",  # chosen when it starts
            input=request.text,
            status=RunStatus.QUEUED,
            input_tokens=0,
            output_tokens=0,
            cost=Decimal(0),
            priority=1 if first else 0,
            supersedes=request.supersedes,
            rolls_back=rolls_back,
            instructions=request.instructions,
            client_tools=[tool.as_dict() for tool in request.client_tools] or None,
            created_at=now,
        )
    )
    if request.webhook is not None:
        await service.add_run_webhook(session, principal.tenant_id, run_id, request.webhook, now)
    return run_id


async def next_in_line(session: AsyncSession, conversation_id: uuid.UUID) -> Run | None:
    """The conversation's queued run to start next: interrupting ones first, then in order."""
    return await session.scalar(
        select(Run)
        .where(Run.conversation_id == conversation_id, Run.status == RunStatus.QUEUED)
        .order_by(Run.priority.desc(), Run.created_at, Run.id)
        .limit(1)
    )


async def idle_with_a_line(session: AsyncSession, limit: int = 100) -> list[uuid.UUID]:
    """Conversations with queued runs and none running: whoever ended last did not hand
    over (its process died, or the hand-over failed)."""
    rows = await session.scalars(
        select(Conversation.id)
        .where(Conversation.active_run_id.is_(None), service.waiting_in_line(Conversation.id))
        .limit(limit)
    )
    return list(rows)


def _accepted(run: RunTask | None) -> RunTask | None:
    """``run`` if it was accepted (an attempt to start it may still be refused)."""
    if run is None or not run.accepted.done() or run.accepted.cancelled():
        return None
    return run if run.accepted.exception() is None else None
