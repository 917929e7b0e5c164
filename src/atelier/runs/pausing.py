"""A run that waits for a person: how it leaves (its files uploaded, the calls to decide
stored, its row ``awaiting_approval`` with the id of its last event), how any process
takes it up again once every call is decided, and how it is cancelled while no process
holds it."""

from __future__ import annotations

import contextlib
import uuid
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Literal

from sqlalchemy import Row, exists, select, update
from sqlalchemy.ext.asyncio import AsyncSession

import atelier.runs.approvals as approvals
import atelier.runs.closing as closing
import atelier.runs.service as service
from atelier.agents import service as agents
from atelier.budgets import enforcement as budgets
from atelier.conversations import messages
from atelier.conversations.messages import Fenced
from atelier.conversations.models import Conversation
from atelier.coordination.base import CoordinationUnavailable
from atelier.db.base import utcnow
from atelier.llm.base import ToolCall, ToolSpec
from atelier.llm.catalog import ModelCatalog
from atelier.runs.admission import payer
from atelier.runs.approvals import Decision
from atelier.runs.environment import RunEnvironment
from atelier.runs.events import (
    WAITING_STATUSES,
    ApprovalRequested,
    ApprovalResolved,
    FileChanged,
    RunCancelled,
    RunEnded,
    RunStatus,
    ToolRequested,
)
from atelier.runs.log import log_name
from atelier.runs.models import Approval, Run
from atelier.runs.recorder import Opened, Recorder
from atelier.webhooks import outbox
from atelier.workspace.service import file_etags
from atelier.workspace.sync import Collected, WorkspaceSync


@dataclass(frozen=True)
class Waiting:
    """A run that waited for approvals, to be taken up again."""

    run_id: uuid.UUID
    conversation_id: uuid.UUID
    paused_event_id: int


class NotResumed(Exception):
    """Another process took the waiting run up, or it ended meanwhile."""


async def suspend(
    recorder: Recorder,
    calls: list[ToolCall],
    *,
    sync: WorkspaceSync | None,
    directory: Path | None,
    expires_at: datetime,
    client_tools: frozenset[str] = frozenset(),
) -> bool:
    """Leave the run waiting for approval of ``calls`` (for the results of those to
    ``client_tools``), in one unit of work (retried while the database is unreachable);
    then announce its files and the calls. False if storage refused files: the run then
    ends as any run does."""
    events = recorder.events

    async def suspend_once() -> Collected | None:
        async with recorder.sessions() as session:
            collected, _, _ = await closing.collect(
                recorder, session, sync, directory, RunStatus.RUNNING, None
            )
            if collected.error is not None:
                return None
            first_call = events.last_id + len(collected.changes) + 1
            paused = first_call + len(calls) - 1
            await approvals.request(
                session,
                recorder.run_id,
                calls,
                expires_at,
                first_event_id=first_call,
                client_tools=client_tools,
            )
            asks_client = any(call.name in client_tools for call in calls)
            status = RunStatus.AWAITING_TOOL_RESULT if asks_client else RunStatus.AWAITING_APPROVAL
            run = await _pause_run(session, recorder.run_id, paused, status)
            if run is None:
                raise Fenced
            waiting = {
                "run_id": str(recorder.run_id),
                "conversation_id": str(run.conversation_id),
                "user_id": run.user_id,
                "calls": [{"call_id": c.id, "name": c.name, "input": c.arguments} for c in calls],
                "expires_at": expires_at.isoformat(),
            }
            await outbox.record(session, run.tenant_id, "approval.requested", waiting)
            await session.commit()
        return collected

    collected = await recorder.persisting("run could not wait for approval", suspend_once)
    if collected is None:
        return False
    if sync is not None and directory is not None:
        await sync.remember(directory, collected)
    for change in collected.changes:
        events.emit(FileChanged(path=change.path, size=change.size, change=change.change))
    for call in calls:
        asked = ToolRequested if call.name in client_tools else ApprovalRequested
        events.emit(asked(call_id=call.id, name=call.name, input=call.arguments))
    return True


async def reopen(
    recorder: Recorder, owner_id: str, catalog: ModelCatalog
) -> tuple[Opened, list[ToolCall], dict[str, Decision]] | None:
    """Take up a waiting run whose calls are all decided, with those calls and the
    decisions on them; None if one is not, another process took it, or it ended."""
    async with recorder.sessions() as session:
        found = await _unpause_run(session, recorder.run_id, owner_id)
        if found is None:
            return None
        run, claimed = found
        agent = await agents.resolve(
            session, claimed.tenant_id, run.agent_id, run.agent_version or 1
        )
        model = catalog.resolve(run.model_id)
        # Spent meanwhile: it does not go on (its next call could not hold anything).
        bindings = await budgets.admit(session, payer(claimed, agent), model.currency)
        history, calls = await messages.waiting_history(session, claimed.id)
        files = await file_etags(session, claimed)
        decided = await approvals.decisions(session, recorder.run_id)
        await session.commit()
    client_tools = tuple(ToolSpec.of(tool) for tool in run.client_tools or [])
    recorder.opened = Opened(
        claimed, model, agent, history, files, None, bindings, run.instructions, client_tools
    )
    for call in calls:
        if (decision := decided.get(call.id)) is not None and not decision.client:
            verdict: Literal["approve", "deny"] = "approve" if decision.approved else "deny"
            recorder.events.emit(ApprovalResolved(call_id=call.id, decision=verdict))
    return recorder.opened, list(calls), decided


async def cancel_waiting(env: RunEnvironment, run_id: uuid.UUID) -> bool:
    """End a run no process holds -- waiting for approvals, or queued -- in its row and in
    its log. False if it is neither: it runs somewhere (and hears the cancel signal), or
    it ended."""
    async with env.sessions() as session:
        row = (
            await session.execute(
                select(Run.status, Run.paused_event_id).where(
                    Run.id == run_id,
                    Run.status.in_((*WAITING_STATUSES, RunStatus.QUEUED)),
                )
            )
        ).first()
        if row is None:
            return False
        final = (row.paused_event_id or 0) + 1
        if not await service.end_run(
            session, run_id, RunStatus.CANCELLED, last_event_id=final, unheld=row.status
        ):
            return False  # taken up (or started) a moment ago
        await approvals.deny_pending(session, run_id, "the run was cancelled")
        await session.commit()
    await announce_first(env, run_id, RunCancelled(run_id=str(run_id)), final)
    return True


async def announce_first(
    env: RunEnvironment, run_id: uuid.UUID, end: RunEnded, number: int = 1
) -> None:
    """The terminal event of a run no process holds, under the id its row recorded."""
    with contextlib.suppress(CoordinationUnavailable):  # followers fall back to the row
        await env.coordination.append_events(
            log_name(run_id), [(end.type, end.data)], first_id=number
        )
        await env.coordination.expire_log(
            log_name(run_id), env.settings.run_event_retention_seconds
        )


async def _pause_run(
    session: AsyncSession, run_id: uuid.UUID, paused_event_id: int, status: RunStatus
) -> Row[uuid.UUID, uuid.UUID, str] | None:
    """The running run now waits, held by no process; None if it no longer runs."""
    paused = await session.execute(
        update(Run)
        .where(Run.id == run_id, Run.status == RunStatus.RUNNING)
        .values(
            status=status,
            paused_event_id=paused_event_id,
            owner_id=None,
            heartbeat_at=utcnow(),
        )
        .returning(Run.tenant_id, Run.conversation_id, Run.user_id)
    )
    return paused.first()


async def _unpause_run(
    session: AsyncSession, run_id: uuid.UUID, owner_id: str
) -> tuple[Run, service.Claimed] | None:
    """The waiting run, now running in this process -- only once every call is decided."""
    resumed = await session.scalar(
        update(Run)
        .where(
            Run.id == run_id,
            Run.status.in_(WAITING_STATUSES),
            ~exists().where(Approval.run_id == run_id, Approval.status == approvals.PENDING),
        )
        .values(status=RunStatus.RUNNING, owner_id=owner_id, heartbeat_at=utcnow())
        .returning(Run.id)
    )
    if resumed is None:
        return None
    run = await session.get(Run, run_id, populate_existing=True)
    assert run is not None
    conversation = await session.get(Conversation, run.conversation_id)
    assert conversation is not None, "a run goes with its conversation"
    claimed = service.Claimed(
        conversation.id,
        conversation.tenant_id,
        conversation.user_id,
        "agent",
        conversation.title,
        conversation.model_id,
        run.agent_id,
        run.agent_version,
        conversation.estimated_context_tokens,
        0,  # not a new exchange: no title to make
        run.api_key_id,
    )
    return run, claimed
