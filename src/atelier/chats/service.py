"""Plain chats: conversations of kind ``chat``, whose turns are runs of the chat agent (no
tools, one model call) on the one run engine; ``chats.translate`` is their stream."""

from __future__ import annotations

import uuid

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from atelier.chats.schemas import ChatMessageOut, ChatOut
from atelier.conversations.models import Conversation, Message
from atelier.runs.models import Run


def present(chat: Conversation) -> ChatOut:
    return ChatOut(
        id=chat.id,
        title=chat.title,
        model_id=chat.model_id,
        metadata=chat.metadata_,
        created_at=chat.created_at,
        updated_at=chat.updated_at,
        total_input_tokens=chat.total_input_tokens,
        total_output_tokens=chat.total_output_tokens,
        total_cost=chat.total_cost,
    )


async def history(session: AsyncSession, chat_id: uuid.UUID) -> list[ChatMessageOut]:
    rows = await session.execute(
        select(Message, Run.model_id)
        .outerjoin(Run, Run.id == Message.run_id)
        .where(Message.conversation_id == chat_id)
        .order_by(Message.seq)
    )
    return [_message(message, model_id) for message, model_id in rows]


async def message(session: AsyncSession, message_id: uuid.UUID) -> ChatMessageOut:
    row = (
        await session.execute(
            select(Message, Run.model_id)
            .outerjoin(Run, Run.id == Message.run_id)
            .where(Message.id == message_id)
        )
    ).one()
    return _message(*row)


def _message(message: Message, model_id: str | None) -> ChatMessageOut:
    return ChatMessageOut(
        id=message.id,
        seq=message.seq,
        role=message.role,
        content=message.content,
        model_id=model_id,
        incomplete=message.incomplete,
        stop_reason=message.stop_reason,
        created_at=message.created_at,
    )
