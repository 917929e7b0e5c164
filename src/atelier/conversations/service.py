"""Conversations of one (tenant, user). Services flush; the caller's unit of work commits."""

from __future__ import annotations

import uuid

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from atelier import ownership
from atelier.conversations.models import Conversation
from atelier.conversations.schemas import ConversationOut, ConversationPage, ConversationWrite
from atelier.http.scope import Principal
from atelier.llm.context import context_usage
from atelier.llm.models import CatalogModel


async def get_owned(
    session: AsyncSession, principal: Principal, conversation_id: uuid.UUID
) -> Conversation:
    return await ownership.get_owned(
        session, principal, Conversation, conversation_id, "conversation"
    )


async def create(
    session: AsyncSession, principal: Principal, data: ConversationWrite
) -> Conversation:
    conversation = ownership.new_owned(Conversation, principal, data)
    session.add(conversation)
    await session.flush()
    return conversation


async def update(
    session: AsyncSession, principal: Principal, conversation_id: uuid.UUID, data: ConversationWrite
) -> Conversation:
    conversation = await get_owned(session, principal, conversation_id)
    ownership.apply_write(conversation, data)
    await session.flush()
    return conversation


async def list_page(
    session: AsyncSession, principal: Principal, limit: int, cursor: str | None
) -> tuple[list[Conversation], str | None]:
    return await ownership.list_owned(session, principal, Conversation, limit, cursor)


async def context_windows(session: AsyncSession, model_ids: set[str]) -> dict[str, int | None]:
    if not model_ids:
        return {}
    rows = await session.execute(
        select(CatalogModel.id, CatalogModel.context_window).where(CatalogModel.id.in_(model_ids))
    )
    return {model_id: window for model_id, window in rows}


async def present(
    session: AsyncSession, conversations: list[Conversation], default_model: str
) -> list[ConversationOut]:
    """Context usage is against the model runs will use: the conversation's, or the default."""
    windows = await context_windows(session, {c.model_id or default_model for c in conversations})
    return [present_one(c, windows.get(c.model_id or default_model)) for c in conversations]


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
    session: AsyncSession,
    conversations: list[Conversation],
    next_cursor: str | None,
    default_model: str,
) -> ConversationPage:
    return ConversationPage(
        data=await present(session, conversations, default_model), next_cursor=next_cursor
    )
