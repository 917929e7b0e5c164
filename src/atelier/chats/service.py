"""Plain chats: conversations of kind ``chat``, whose turns are runs of the chat agent (no
tools, one model call) on the one run engine. This module only translates."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from atelier.chats.schemas import ChatMessageOut, ChatOut
from atelier.conversations.models import Conversation, Message
from atelier.http.sse import EventBatch, ServerSentEvent
from atelier.runs.events import TERMINAL_TYPES, ErrorCode
from atelier.runs.models import Run

# A chat turn's error codes, as chats have always named them.
_CHAT_CODES = {"run.timed_out": "model_timeout", "run.cancelled": "cancelled"}


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


async def chat_events(run_events: AsyncIterator[EventBatch]) -> AsyncIterator[EventBatch]:
    """A run's events as a chat stream: no ``run.started``, ids one lower (so a chat's
    first event is 1), and the run's end as ``done`` or ``error``."""
    async for batch in run_events:
        events = []
        for event in batch.events:
            if event.event == "run.started":
                continue
            number = event.id - 1 if isinstance(event.id, int) else event.id
            if event.event in TERMINAL_TYPES and event.event != "error":
                error = json.loads(event.data).get("error")
                if event.event == "run.completed":
                    events.append(ServerSentEvent("{}", "done", number))
                    continue
                code = _CHAT_CODES.get(event.event or "") or (error or {}).get("code")
                data = {
                    "code": code or ErrorCode.INTERNAL_ERROR,
                    "message": (error or {}).get("message", ""),
                }
                events.append(ServerSentEvent(json.dumps(data), "error", number))
                continue
            events.append(ServerSentEvent(event.data, event.event, number))
        if events:
            yield EventBatch(events)
