"""Plain chats of one (tenant, user). Services flush; the caller commits."""

from __future__ import annotations

import uuid

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from atelier import ownership
from atelier.chats.models import Chat, ChatMessage
from atelier.chats.schemas import ChatOut, ChatWrite
from atelier.http.errors import ProblemError
from atelier.http.scope import Principal
from atelier.llm.models import CatalogModel


async def get_owned(session: AsyncSession, principal: Principal, chat_id: uuid.UUID) -> Chat:
    return await ownership.get_owned(session, principal, Chat, chat_id, "chat")


async def create(session: AsyncSession, principal: Principal, data: ChatWrite) -> Chat:
    chat = ownership.new_owned(Chat, principal, data)
    session.add(chat)
    await session.flush()
    return chat


async def update_chat(
    session: AsyncSession, principal: Principal, chat_id: uuid.UUID, data: ChatWrite
) -> Chat:
    chat = await get_owned(session, principal, chat_id)
    ownership.apply_write(chat, data)
    await session.flush()
    return chat


async def list_page(
    session: AsyncSession, principal: Principal, limit: int, cursor: str | None
) -> tuple[list[Chat], str | None]:
    return await ownership.list_owned(session, principal, Chat, limit, cursor)


async def resolve_model(session: AsyncSession, model_id: str) -> CatalogModel:
    model = await session.get(CatalogModel, model_id)
    if model is None or not model.enabled:
        raise ProblemError(
            400, "unknown_model", f"no enabled model {model_id!r}; see GET /v1/models"
        )
    return model


async def append_message(
    session: AsyncSession,
    chat_id: uuid.UUID,
    role: str,
    content: str,
    *,
    model_id: str | None,
    incomplete: bool = False,
    stop_reason: str | None = None,
) -> ChatMessage:
    """Store a message with the next seq, taken atomically in SQL (gapless, unique)."""
    seq = await session.scalar(
        update(Chat)
        .where(Chat.id == chat_id)
        .values(last_message_seq=Chat.last_message_seq + 1)
        .returning(Chat.last_message_seq)
    )
    if seq is None:
        raise ProblemError(404, "not_found", "no such chat")
    message = ChatMessage(
        chat_id=chat_id,
        seq=seq,
        role=role,
        content=content,
        model_id=model_id,
        incomplete=incomplete,
        stop_reason=stop_reason,
    )
    session.add(message)
    await session.flush()
    return message


async def history(session: AsyncSession, chat_id: uuid.UUID) -> list[ChatMessage]:
    return list(
        await session.scalars(
            select(ChatMessage).where(ChatMessage.chat_id == chat_id).order_by(ChatMessage.seq)
        )
    )


def present(chat: Chat) -> ChatOut:
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
