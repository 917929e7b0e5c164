"""Runs in SQL. Functions flush; the caller's unit of work commits.

Every write a run makes is fenced: it applies only while the run is still its
conversation's ``active_run_id``. A run that lost its lock (or was reaped, or whose
conversation was deleted) can no longer change anything.
"""

from __future__ import annotations

import functools
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any, cast

from sqlalchemy import (
    ColumnElement,
    Exists,
    Table,
    Update,
    and_,
    bindparam,
    exists,
    insert,
    select,
    update,
)
from sqlalchemy.ext.asyncio import AsyncSession

from atelier.agents.service import ResolvedAgent
from atelier.conversations.models import Conversation, Kind, Message
from atelier.conversations.service import get_owned
from atelier.db.base import utcnow
from atelier.errors import NotFound
from atelier.llm.base import ToolSpec
from atelier.runs.events import ACTIVE_STATUSES, UNENDED_STATUSES, ErrorCode, RunError, RunStatus
from atelier.runs.models import Run
from atelier.tenants.principal import Principal
from atelier.usage.money import money_str
from atelier.webhooks import outbox
from atelier.webhooks.models import Webhook

WORKER_LOST = "the process running it stopped"


class ConversationGone(Exception):
    """No such conversation for this caller (or it was deleted)."""


class RunConflict(Exception):
    """Another run is the conversation's active run (the database's guard)."""


@dataclass(frozen=True)
class Claimed:
    """A conversation just claimed for a run, as the run needs it."""

    id: uuid.UUID
    tenant_id: uuid.UUID
    user_id: str
    kind: Kind
    title: str | None
    model_id: str | None
    agent_id: uuid.UUID | None  # None: the tenant's default agent
    agent_version: int | None  # None: the agent's latest version
    estimated_context_tokens: int
    user_seq: int  # the seq of the run's user message
    api_key_id: uuid.UUID | None = None  # the key the run was asked for with


def _owned(granted: bool) -> ColumnElement[bool]:
    """The caller's own conversation of its kind (``reachable_by``, with bound parameters)."""
    where = [
        Conversation.id == bindparam("own_id"),
        Conversation.tenant_id == bindparam("own_tenant"),
        Conversation.user_id == bindparam("own_user"),
        Conversation.kind == bindparam("own_kind"),
    ]
    if granted:
        where.append(Conversation.id.in_(bindparam("own_granted", expanding=True)))
    return and_(*where)


@functools.cache
def _claiming(queued: bool, granted: bool) -> Update:
    """The claim, built once per shape: building a statement costs more CPU than running
    it, and it is on the way to every run's first event."""
    free: ColumnElement[bool] = Conversation.active_run_id.is_(None)
    if not queued:  # a run that was not queued waits behind those that were
        free = and_(free, ~waiting_in_line(Conversation.id))
    return (
        update(Conversation)
        .where(_owned(granted), free)
        .values(
            active_run_id=bindparam("claim_run"),
            last_message_seq=Conversation.last_message_seq + 1,
            updated_at=bindparam("claim_now"),
        )
        .returning(
            Conversation.title,
            Conversation.model_id,
            Conversation.agent_id,
            Conversation.agent_version,
            Conversation.estimated_context_tokens,
            Conversation.last_message_seq,
        )
        .execution_options(synchronize_session=False)
    )


async def claim(
    session: AsyncSession,
    principal: Principal,
    conversation_id: uuid.UUID,
    kind: Kind,
    run_id: uuid.UUID,
    *,
    abandoned_after: float,
    queued: bool = False,
) -> tuple[Claimed, uuid.UUID | None]:
    """Make ``run_id`` the conversation's active run, in one statement that also checks who
    owns it and takes the user message's seq.

    The caller holds the conversation lock, so an active run found here whose heartbeat is
    older than ``abandoned_after`` seconds was left by a process that died: it is failed
    and its id returned (its watchers must be told). Raises ``ConversationGone`` or
    ``RunConflict``.
    """
    ids = principal.grant.conversation_ids if principal.grant is not None else None
    params: dict[str, Any] = {
        "own_id": conversation_id,
        "own_tenant": principal.tenant_id,
        "own_user": principal.user_id,
        "own_kind": kind,
        "claim_run": run_id,
        "claim_now": utcnow(),
        "own_granted": list(ids) if ids is not None else [],
    }
    statement = _claiming(queued, ids is not None)
    owned = _owned(ids is not None)
    abandoned = None
    row = (await session.execute(statement, params)).first()
    if row is None:
        active = await session.scalar(select(Conversation.active_run_id).where(owned), params)
        if active is None and not await session.scalar(
            select(Conversation.id).where(owned), params
        ):
            raise ConversationGone
        stale_before = utcnow() - timedelta(seconds=abandoned_after)
        if active is None or not await end_run(
            session,
            active,
            RunStatus.FAILED,
            RunError(code=ErrorCode.WORKER_LOST, message=WORKER_LOST),
            stale_before=stale_before,
        ):
            raise RunConflict
        abandoned = active
        row = (await session.execute(statement, params)).first()
        if row is None:
            raise RunConflict
    title, model_id, agent_id, agent_version, context_tokens, seq = row
    claimed = Claimed(
        conversation_id,
        principal.tenant_id,
        str(principal.user_id),
        kind,
        title,
        model_id,
        agent_id,
        agent_version,
        context_tokens,
        seq,
        principal.key_id if principal.key_id.int else None,  # 0: a queued run of no key
    )
    return claimed, abandoned


# Core inserts, made once: the ORM's insert builds its statement again on every call.
_INSERT_RUN = insert(cast(Table, Run.__table__))
_INSERT_MESSAGE = insert(cast(Table, Message.__table__))


async def open_run(
    session: AsyncSession,
    conversation: Claimed,
    *,
    run_id: uuid.UUID,
    model_id: str,
    agent: ResolvedAgent | None,
    text: str,
    owner_id: str,
    queued: bool = False,
    supersedes: uuid.UUID | None = None,
    instructions: str | None = None,
    webhook: dict[str, str] | None = None,
    client_tools: tuple[ToolSpec, ...] = (),
) -> None:
    """Insert the run (already running, with the agent version it runs) -- or start the
    queued one -- and the user's message it answers; a regenerated run's earlier messages
    are marked superseded."""
    now = utcnow()
    if queued:
        started = await session.scalar(
            update(Run)
            .where(Run.id == run_id, Run.status == RunStatus.QUEUED)
            .values(
                status=RunStatus.RUNNING,
                model_id=model_id,
                agent_id=agent.agent_id if agent else None,
                agent_version=agent.version if agent else None,
                owner_id=owner_id,
                heartbeat_at=now,
                started_at=now,
            )
            .returning(Run.id)
        )
        if started is None:  # cancelled while it waited
            raise ConversationGone
    else:
        await session.execute(
            _INSERT_RUN,
            dict(
                id=run_id,
                conversation_id=conversation.id,
                tenant_id=conversation.tenant_id,
                user_id=conversation.user_id,
                model_id=model_id,
                agent_id=agent.agent_id if agent else None,
                agent_version=agent.version if agent else None,
                input=text,
                api_key_id=conversation.api_key_id,
                status=RunStatus.RUNNING,
                input_tokens=0,
                output_tokens=0,
                cost=Decimal(0),
                owner_id=owner_id,
                heartbeat_at=now,
                created_at=now,
                started_at=now,
                supersedes=supersedes,
                instructions=instructions,
                client_tools=[tool.as_dict() for tool in client_tools] or None,
            ),
        )
        if webhook is not None:
            await add_run_webhook(session, conversation.tenant_id, run_id, webhook, now)
    if supersedes is not None:
        await session.execute(
            update(Message)
            .where(Message.conversation_id == conversation.id, Message.run_id == supersedes)
            .values(superseded=True)
        )
    await session.execute(
        _INSERT_MESSAGE,
        dict(
            id=uuid.uuid4(),
            conversation_id=conversation.id,
            seq=conversation.user_seq,
            role="user",
            content=text,
            run_id=run_id,
            incomplete=False,
            superseded=False,
            created_at=now,
        ),
    )


async def add_run_webhook(
    session: AsyncSession,
    tenant_id: uuid.UUID,
    run_id: uuid.UUID,
    webhook: dict[str, str],
    now: datetime,
) -> None:
    """The run's own endpoint, committed with the run: it cannot miss the run's end."""
    await session.execute(
        insert(Webhook).values(
            id=uuid.uuid4(),
            tenant_id=tenant_id,
            run_id=run_id,
            enabled=True,
            created_at=now,
            updated_at=now,
            **webhook,
        )
    )


def waiting_in_line(conversation_id: Any) -> Exists:
    """Whether runs are queued on the conversation (``conversation_id``: value or column)."""
    return exists().where(Run.conversation_id == conversation_id, Run.status == RunStatus.QUEUED)


async def count_usage(
    session: AsyncSession, run_id: uuid.UUID, input_tokens: int, output_tokens: int, cost: Decimal
) -> None:
    """Add a model call to the run's totals, in SQL (BUG-009)."""
    await session.execute(
        _COUNT_USAGE,
        {
            "counted_run": run_id,
            "more_input": input_tokens,
            "more_output": output_tokens,
            "more_cost": cost,
        },
    )


_COUNT_USAGE = (  # built once: every model call counts its usage
    update(Run)
    .where(Run.id == bindparam("counted_run"))
    .values(
        input_tokens=Run.input_tokens + bindparam("more_input"),
        output_tokens=Run.output_tokens + bindparam("more_output"),
        cost=Run.cost + bindparam("more_cost", type_=Run.__table__.c.cost.type),
    )
    .execution_options(synchronize_session=False)
)


async def end_run(
    session: AsyncSession,
    run_id: uuid.UUID,
    status: RunStatus,
    error: RunError | None = None,
    *,
    last_event_id: int | None = None,
    stale_before: datetime | None = None,
    unheld: str | None = None,
) -> bool:
    """Give an active (or waiting) run its final status and free its conversation; False
    if it had one (or, with ``stale_before``, if it proved it was alive since then -- a
    run waiting for approvals has no process, so it is never stale)."""
    still_active: ColumnElement[bool] = Run.status.in_(UNENDED_STATUSES)
    if stale_before is not None:
        still_active = and_(Run.status.in_(ACTIVE_STATUSES), Run.heartbeat_at < stale_before)
    if unheld is not None:  # only while it is still waiting or queued: held by no process
        still_active = Run.status == unheld
    ended = (
        await session.execute(
            update(Run)
            .where(Run.id == run_id, still_active)
            .values(
                status=status,
                ended_at=utcnow(),
                error_code=error.code if error else None,
                error_message=error.message if error else None,
                last_event_id=last_event_id,
            )
            .returning(
                Run.conversation_id,
                Run.tenant_id,
                Run.user_id,
                Run.model_id,
                Run.agent_id,
                Run.agent_version,
                Run.input_tokens,
                Run.output_tokens,
                Run.cost,
            )
        )
    ).first()
    if ended is None:
        return False
    await session.execute(
        update(Conversation)
        .where(Conversation.id == ended.conversation_id, Conversation.active_run_id == run_id)
        .values(active_run_id=None)
        .execution_options(synchronize_session=False)
    )
    # Told in the same transaction: if this commits, the webhooks will hear of it.
    report = {
        "run_id": str(run_id),
        "conversation_id": str(ended.conversation_id),
        "user_id": ended.user_id,
        "status": str(status),
        "model_id": ended.model_id,
        "agent_id": str(ended.agent_id) if ended.agent_id else None,
        "agent_version": ended.agent_version,
        "error": error.model_dump(mode="json") if error else None,
        "input_tokens": ended.input_tokens,
        "output_tokens": ended.output_tokens,
        "cost": money_str(ended.cost),
    }
    await outbox.record(session, ended.tenant_id, f"run.{status}", report, run_id=run_id)
    return True


async def owned_run(
    session: AsyncSession,
    principal: Principal,
    conversation_id: uuid.UUID,
    run_id: uuid.UUID,
    kind: Kind = "agent",
) -> Run:
    """A run of the caller's conversation (or chat): ``NotFound`` otherwise."""
    conversation = await get_owned(session, principal, conversation_id, kind)
    run = await get_run(session, conversation.id, run_id)
    if run is None:
        raise NotFound("not_found", "no such run")
    return run


async def get_run(
    session: AsyncSession, conversation_id: uuid.UUID, run_id: uuid.UUID
) -> Run | None:
    return await session.scalar(
        select(Run).where(Run.id == run_id, Run.conversation_id == conversation_id)
    )


async def list_runs(
    session: AsyncSession,
    conversation_id: uuid.UUID,
    limit: int,
    run_ids: list[uuid.UUID] | None = None,
) -> list[Run]:
    query = select(Run).where(Run.conversation_id == conversation_id)
    if run_ids:
        query = query.where(Run.id.in_(run_ids))
    rows = await session.scalars(query.order_by(Run.created_at.desc(), Run.id.desc()).limit(limit))
    return list(rows)
