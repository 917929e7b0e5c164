"""A conversation's messages in SQL, and as the model sees them. Functions flush; the
caller's unit of work commits."""

from __future__ import annotations

import functools
import uuid
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Literal, cast

from sqlalchemy import Table, Update, bindparam, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from atelier.conversations.models import Conversation, Message
from atelier.db.base import utcnow
from atelier.llm.base import ChatMessage, ToolCall, ToolResult


class Fenced(Exception):
    """The run is no longer its conversation's active run; it must not write."""


@dataclass(frozen=True)
class Counted:
    """A model call's share of the conversation's totals."""

    input_tokens: int
    output_tokens: int
    cost: Decimal
    context_tokens: int  # what the next call will carry: this call's prompt and answer


async def append(
    session: AsyncSession,
    conversation_id: uuid.UUID,
    run_id: uuid.UUID,
    role: str,
    content: str,
    *,
    parts: list[dict[str, Any]] | None = None,
    incomplete: bool = False,
    stop_reason: str | None = None,
    event_id: int | None = None,
    counted: Counted | None = None,
) -> Message:
    """Store a message with the next seq, taken in SQL only now (gapless, unique; BUG-019),
    adding ``counted`` to the conversation's totals in the same statement (BUG-009).
    Fenced: only the conversation's active run writes."""
    params: dict[str, Any] = {"next_of": conversation_id, "next_for": run_id, "next_at": utcnow()}
    if counted is not None:
        params |= {
            "more_input": counted.input_tokens,
            "more_output": counted.output_tokens,
            "more_cost": counted.cost,
            "context": counted.context_tokens,
        }
    seq = await session.scalar(_next_seq(counted is not None), params)
    if seq is None:
        raise Fenced
    # Inserted in Core and returned unattached: the session's unit of work would cost a
    # run's reply more CPU than the statement itself.
    message = Message(
        id=uuid.uuid4(),
        conversation_id=conversation_id,
        seq=seq,
        role=role,
        content=content,
        parts=parts,
        run_id=run_id,
        incomplete=incomplete,
        superseded=False,
        stop_reason=stop_reason,
        event_id=event_id,
        created_at=utcnow(),
    )
    await session.execute(
        _INSERT, {column: getattr(message, column) for column in _INSERTED_COLUMNS}
    )
    return message


_INSERT = insert(cast(Table, Message.__table__))
_INSERTED_COLUMNS = (
    "id",
    "conversation_id",
    "seq",
    "role",
    "content",
    "parts",
    "run_id",
    "incomplete",
    "superseded",
    "stop_reason",
    "event_id",
    "created_at",
)


@functools.cache
def _next_seq(counted: bool) -> Update:
    """``append``'s seq (and totals), built once per shape."""
    values: dict[str, Any] = {
        "last_message_seq": Conversation.last_message_seq + 1,
        "updated_at": bindparam("next_at"),
    }
    if counted:
        values |= {
            "total_input_tokens": Conversation.total_input_tokens + bindparam("more_input"),
            "total_output_tokens": Conversation.total_output_tokens + bindparam("more_output"),
            "total_cost": Conversation.total_cost
            + bindparam("more_cost", type_=Conversation.__table__.c.total_cost.type),
            "estimated_context_tokens": bindparam("context"),
        }
    return (
        update(Conversation)
        .where(
            Conversation.id == bindparam("next_of"),
            Conversation.active_run_id == bindparam("next_for"),
        )
        .values(values)
        .returning(Conversation.last_message_seq)
        .execution_options(synchronize_session=False)
    )


@dataclass(frozen=True)
class Turn:
    """An earlier turn a client keeps and sends (a message, or tool calls and results)."""

    role: Literal["user", "assistant", "tool"]
    content: str
    parts: list[dict[str, Any]] | None = None


async def seed(session: AsyncSession, conversation: Conversation, turns: list[Turn]) -> None:
    """A new conversation's history, as its client sent it (numbered 1..n; no run has
    started on it yet, so nothing else writes it)."""
    assert conversation.last_message_seq == 0
    assert conversation.active_run_id is None
    now = utcnow()
    for seq, turn in enumerate(turns, start=1):
        session.add(
            Message(
                id=uuid.uuid4(),
                conversation_id=conversation.id,
                seq=seq,
                role=turn.role,
                content=turn.content,
                parts=turn.parts,
                run_id=None,
                incomplete=False,
                created_at=now,
            )
        )
    conversation.last_message_seq = len(turns)
    await session.flush()


async def visible(session: AsyncSession, conversation_id: uuid.UUID, up_to: int) -> list[Message]:
    """The conversation's messages (not superseded) numbered up to ``up_to``."""
    rows = await session.scalars(
        _CURRENT.where(Message.seq <= up_to), {"conversation_id": conversation_id}
    )
    return list(rows)


async def history(session: AsyncSession, conversation_id: uuid.UUID) -> list[ChatMessage]:
    """The conversation as the model sees it: every stored message that was not superseded,
    tool parts included."""
    return as_history(await session.scalars(_CURRENT, {"conversation_id": conversation_id}))


async def waiting_history(
    session: AsyncSession, conversation_id: uuid.UUID
) -> tuple[list[ChatMessage], tuple[ToolCall, ...]]:
    """The conversation of a run that waited for approvals, and the calls it waited with:
    the last message's, still without results."""
    rows = list(await session.scalars(_CURRENT, {"conversation_id": conversation_id}))
    calls = as_chat_message(rows[-1]).tool_calls if rows and rows[-1].role == "assistant" else ()
    history = as_history(rows)
    return (history[:-1] if calls else history), calls


# Built once: it is on every run's way to its start.
_CURRENT = (
    select(Message)
    .where(Message.conversation_id == bindparam("conversation_id"), Message.superseded.is_(False))
    .order_by(Message.seq)
)


def as_history(rows: Any) -> list[ChatMessage]:
    history: list[ChatMessage] = []
    for message in map(as_chat_message, rows):
        unanswered = _unanswered(history)
        if unanswered and message.role != "tool":
            history.append(_not_run(unanswered))
        history.append(message)
    if unanswered := _unanswered(history):
        history.append(_not_run(unanswered))
    return history


def _unanswered(history: list[ChatMessage]) -> tuple[ToolCall, ...]:
    last = history[-1] if history else None
    return last.tool_calls if last is not None and last.role == "assistant" else ()


def _not_run(calls: tuple[ToolCall, ...]) -> ChatMessage:
    """Results for tool calls a dead process never answered: providers require them."""
    return ChatMessage(
        "tool",
        tool_results=tuple(ToolResult(c.id, "not run: the run ended first", True) for c in calls),
    )


def as_chat_message(row: Message) -> ChatMessage:
    calls = tuple(
        ToolCall(part["id"], part["name"], part["arguments"])
        for part in row.parts or ()
        if part.get("type") == "tool_call"
    )
    results = tuple(
        ToolResult(part["call_id"], part["content"], part["is_error"])
        for part in row.parts or ()
        if part.get("type") == "tool_result"
    )
    return ChatMessage(row.role, row.content, tool_calls=calls, tool_results=results)  # type: ignore[arg-type]


def call_parts(calls: list[ToolCall]) -> list[dict[str, Any]]:
    return [
        {"type": "tool_call", "id": c.id, "name": c.name, "arguments": c.arguments} for c in calls
    ]


def result_parts(results: list[ToolResult]) -> list[dict[str, Any]]:
    return [
        {
            "type": "tool_result",
            "call_id": r.call_id,
            "content": r.content,
            "is_error": r.is_error,
            **({} if r.duration_ms is None else {"duration_ms": r.duration_ms}),
            **({} if r.decision is None else {"decision": r.decision}),
        }
        for r in results
    ]


SEQ_MAX = 2**31 - 1


async def page(
    session: AsyncSession,
    conversation_id: uuid.UUID,
    after_seq: int,
    limit: int,
    before_seq: int | None = None,
) -> list[Message]:
    """Up to ``limit`` messages after ``after_seq`` in order -- or, with ``before_seq``,
    the last ``limit`` before it (still in order): a long conversation opens at its
    newest messages and pages back."""
    # The numbers are 32-bit in the table; a client may name any (2**53 for "the newest").
    after_seq, before_seq = min(after_seq, SEQ_MAX), before_seq and min(before_seq, SEQ_MAX)
    query = select(Message).where(
        Message.conversation_id == conversation_id, Message.seq > after_seq
    )
    if before_seq is None:
        return list(await session.scalars(query.order_by(Message.seq).limit(limit)))
    newest = query.where(Message.seq < before_seq).order_by(Message.seq.desc()).limit(limit)
    return list(reversed(list(await session.scalars(newest))))
