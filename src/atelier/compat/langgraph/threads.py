"""LangGraph threads are a user's agent conversations, known by ids the client may choose.

A chosen id is the conversation's own id when no conversation has it yet; when another
tenant's (or user's) conversation has it, the thread gets a conversation of its own and keeps
the chosen id beside it. Either way each user has their own space of thread ids, and an id
someone else holds answers exactly as a free one does."""

from __future__ import annotations

import uuid
from typing import Any, NamedTuple

from sqlalchemy import and_, func, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from atelier.conversations import service as conversations
from atelier.conversations.models import Conversation, Message
from atelier.errors import Conflict, DomainError, NotFound
from atelier.http.scope import Principal
from atelier.runs import approvals
from atelier.runs.events import RunStatus
from atelier.runs.models import Approval, Run


class Thread(NamedTuple):
    """The conversation a thread is, and the id its user knows it by."""

    conversation_id: uuid.UUID
    thread_id: uuid.UUID

    @classmethod
    def of(cls, conversation: Conversation) -> Thread:
        return cls(conversation.id, conversation.thread_id or conversation.id)


def not_found() -> DomainError:
    return NotFound("not_found", "no such thread")


def exists() -> DomainError:
    return Conflict("thread_exists", "a thread with this id exists")


async def find(session: AsyncSession, principal: Principal, thread_id: str) -> Conversation | None:
    try:
        wanted = uuid.UUID(thread_id)
    except ValueError:
        return None
    return await session.scalar(
        select(Conversation).where(
            Conversation.tenant_id == principal.tenant_id,
            Conversation.user_id == principal.user_id,
            Conversation.kind == "agent",
            or_(
                Conversation.thread_id == wanted,
                and_(Conversation.thread_id.is_(None), Conversation.id == wanted),
            ),
        )
    )


async def get(session: AsyncSession, principal: Principal, thread_id: str) -> Conversation:
    conversation = await find(session, principal, thread_id)
    if conversation is None:
        raise not_found()
    return conversation


async def create(
    session: AsyncSession,
    principal: Principal,
    wanted: uuid.UUID | None,
    metadata: dict[str, Any] | None = None,
    *,
    limit: int,
) -> Conversation:
    """A new thread, under ``wanted`` if the client chose its id (``thread_exists`` if this
    user has a thread by that id, found now or made by a request racing this one)."""
    if wanted is not None and await find(session, principal, str(wanted)) is not None:
        raise exists()
    await conversations.room_for_one(session, principal, limit)
    own_id = wanted is not None and await session.get(Conversation, wanted) is None
    while True:
        conversation = Conversation(
            id=wanted if own_id else uuid.uuid4(),
            thread_id=wanted,
            tenant_id=principal.tenant_id,
            user_id=principal.user_id,
            kind="agent",
            metadata_=metadata or {},
        )
        try:
            async with session.begin_nested():
                session.add(conversation)
        except IntegrityError:
            if not own_id or await find(session, principal, str(wanted)) is not None:
                raise exists() from None
            own_id = False  # someone else made a conversation of that id a moment ago
            continue
        return conversation


async def active(session: AsyncSession, conversation: Conversation) -> Run | None:
    if conversation.active_run_id is None:
        return None
    return await session.get(Run, conversation.active_run_id)


async def pending(session: AsyncSession, run: Run | None) -> list[Approval]:
    if run is None or run.status != RunStatus.AWAITING_APPROVAL:
        return []
    rows = await session.scalars(
        select(Approval)
        .where(Approval.run_id == run.id, Approval.status == approvals.PENDING)
        .order_by(Approval.created_at, Approval.call_id)
    )
    return list(rows)


async def messages(session: AsyncSession, conversation_id: uuid.UUID) -> list[Message]:
    rows = await session.scalars(
        select(Message)
        .where(Message.conversation_id == conversation_id, Message.superseded.is_(False))
        .order_by(Message.seq)
    )
    return list(rows)


async def found(
    sessions: async_sessionmaker[AsyncSession], conversation_id: uuid.UUID, run_id: uuid.UUID
) -> list[Message]:
    """The thread as the run found it: its messages up to the run's question."""
    asked = (
        select(func.min(Message.seq))
        .where(Message.run_id == run_id, Message.role == "user")
        .scalar_subquery()
    )
    async with sessions() as session:
        rows = await session.scalars(
            select(Message)
            .where(
                Message.conversation_id == conversation_id,
                Message.seq <= asked,
                Message.superseded.is_(False),
            )
            .order_by(Message.seq)
        )
        return list(rows)
