"""Conversations of one (tenant, user). Services flush; the caller's unit of work commits."""

from __future__ import annotations

import base64
import binascii
import uuid
from datetime import datetime

from sqlalchemy import and_, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from atelier.conversations.models import Conversation
from atelier.conversations.schemas import ConversationOut, ConversationPage, ConversationWrite
from atelier.http.errors import ProblemError
from atelier.http.scope import Principal
from atelier.llm.context import context_usage
from atelier.llm.models import CatalogModel


def not_found(what: str = "conversation") -> ProblemError:
    return ProblemError(404, "not_found", f"no such {what}")


async def get_owned(
    session: AsyncSession, principal: Principal, conversation_id: uuid.UUID
) -> Conversation:
    """The caller's conversation; another user's or tenant's is indistinguishable from none."""
    conversation = await session.scalar(
        select(Conversation).where(
            Conversation.id == conversation_id,
            Conversation.tenant_id == principal.tenant_id,
            Conversation.user_id == principal.user_id,
        )
    )
    if conversation is None:
        raise not_found()
    return conversation


async def create(
    session: AsyncSession, principal: Principal, data: ConversationWrite
) -> Conversation:
    assert principal.user_id is not None
    conversation = Conversation(
        tenant_id=principal.tenant_id,
        user_id=principal.user_id,
        title=data.title,
        model_id=data.model_id,
        metadata_=data.metadata or {},
    )
    session.add(conversation)
    await session.flush()
    return conversation


async def update(
    session: AsyncSession, principal: Principal, conversation_id: uuid.UUID, data: ConversationWrite
) -> Conversation:
    conversation = await get_owned(session, principal, conversation_id)
    fields = data.model_fields_set
    if "title" in fields:
        conversation.title = data.title
    if "model_id" in fields:
        conversation.model_id = data.model_id
    if "metadata" in fields:
        conversation.metadata_ = data.metadata or {}
    await session.flush()
    return conversation


async def list_page(
    session: AsyncSession, principal: Principal, limit: int, cursor: str | None
) -> tuple[list[Conversation], str | None]:
    query = select(Conversation).where(
        Conversation.tenant_id == principal.tenant_id, Conversation.user_id == principal.user_id
    )
    if cursor is not None:
        created_at, last_id = decode_cursor(cursor)
        query = query.where(
            or_(
                Conversation.created_at < created_at,
                and_(Conversation.created_at == created_at, Conversation.id < last_id),
            )
        )
    rows = list(
        await session.scalars(
            query.order_by(Conversation.created_at.desc(), Conversation.id.desc()).limit(limit + 1)
        )
    )
    last = rows[limit - 1] if len(rows) > limit else None
    next_cursor = encode_cursor(last.created_at, last.id) if last is not None else None
    return rows[:limit], next_cursor


def encode_cursor(created_at: datetime, row_id: uuid.UUID) -> str:
    """An opaque position in a newest-first listing (shared by conversations and chats)."""
    raw = f"{created_at.isoformat()}|{row_id}"
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, uuid.UUID]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        created_at, last_id = raw.split("|")
        parsed = datetime.fromisoformat(created_at)
        if parsed.tzinfo is None:
            raise ValueError("naive")
        return parsed, uuid.UUID(last_id)
    except (ValueError, binascii.Error, UnicodeDecodeError) as exc:
        raise ProblemError(
            400, "invalid_cursor", "the cursor is not one this API returned"
        ) from exc


async def context_windows(session: AsyncSession, model_ids: set[str]) -> dict[str, int | None]:
    if not model_ids:
        return {}
    rows = await session.execute(
        select(CatalogModel.id, CatalogModel.context_window).where(CatalogModel.id.in_(model_ids))
    )
    return {model_id: window for model_id, window in rows}


async def present(
    session: AsyncSession, conversations: list[Conversation]
) -> list[ConversationOut]:
    windows = await context_windows(session, {c.model_id for c in conversations if c.model_id})
    return [present_one(c, windows.get(c.model_id) if c.model_id else None) for c in conversations]


def present_one(conversation: Conversation, context_window: int | None) -> ConversationOut:
    usage = context_usage(conversation.estimated_context_tokens, context_window)
    return ConversationOut(
        id=conversation.id,
        title=conversation.title,
        model_id=conversation.model_id,
        metadata=conversation.metadata_,
        created_at=conversation.created_at,
        updated_at=conversation.updated_at,
        active_run_id=conversation.active_run_id,
        total_input_tokens=conversation.total_input_tokens,
        total_output_tokens=conversation.total_output_tokens,
        total_cost=conversation.total_cost,
        estimated_context_tokens=conversation.estimated_context_tokens,
        context_window=context_window,
        context_usage_percent=usage.percent,
        context_status=usage.status,
    )


async def present_page(
    session: AsyncSession, conversations: list[Conversation], next_cursor: str | None
) -> ConversationPage:
    return ConversationPage(data=await present(session, conversations), next_cursor=next_cursor)
