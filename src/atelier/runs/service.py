"""Runs and their messages in SQL. Functions flush; the caller's unit of work commits.

Every write a run makes is fenced: it applies only while the run is still its
conversation's ``active_run_id``. A run that lost its lock (or was reaped, or whose
conversation was deleted) can no longer change anything.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import ColumnElement, and_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from atelier.conversations.models import Conversation, Message
from atelier.db.base import utcnow
from atelier.llm.base import ChatMessage, ToolCall, ToolResult
from atelier.runs.models import ACTIVE_RUN_STATUSES, Run
from atelier.runs.schemas import MessageOut, RunError, RunOut


class Fenced(Exception):
    """The run is no longer its conversation's active run; it must not write."""


class ConversationGone(Exception):
    """The conversation was deleted before the run could start."""


WORKER_LOST = "the process running it stopped"


class RunConflict(Exception):
    """Another run became the conversation's active run first (the database's guard)."""


async def open_run(
    session: AsyncSession,
    conversation: Conversation,
    *,
    run_id: uuid.UUID,
    model_id: str,
    text: str,
    owner_id: str,
    abandoned_after: float,
) -> uuid.UUID | None:
    """Make ``run_id`` the conversation's active run and store the user's message.

    The caller holds the conversation lock. The claim is a compare-and-set in SQL, so the
    database refuses a second active run even without the lock. An active run found
    under the lock whose heartbeat is older than ``abandoned_after`` seconds was left by a
    process that died: it is failed here and its id returned, so its watchers can be
    told. Returns None when there was none.
    """
    now = utcnow()
    claim = (
        update(Conversation)
        .where(Conversation.id == conversation.id, Conversation.active_run_id.is_(None))
        .values(
            active_run_id=run_id, last_message_seq=Conversation.last_message_seq + 1, updated_at=now
        )
        .returning(Conversation.last_message_seq)
        .execution_options(synchronize_session=False)
    )
    abandoned = None
    seq = await session.scalar(claim)
    if seq is None:
        found = (
            await session.execute(
                select(Conversation.active_run_id).where(Conversation.id == conversation.id)
            )
        ).first()
        if found is None:
            raise ConversationGone
        abandoned = found.active_run_id
        stale_before = now - timedelta(seconds=abandoned_after)
        if abandoned is None or not await end_run(
            session, abandoned, "failed", "worker_lost", WORKER_LOST, stale_before=stale_before
        ):
            raise RunConflict
        seq = await session.scalar(claim)
        if seq is None:
            raise RunConflict
    session.add(
        Run(
            id=run_id,
            conversation_id=conversation.id,
            tenant_id=conversation.tenant_id,
            user_id=conversation.user_id,
            model_id=model_id,
            input=text,
            status="queued",
            owner_id=owner_id,
            heartbeat_at=now,
            created_at=now,
        )
    )
    await session.flush()  # the message refers to the run
    session.add(
        Message(
            conversation_id=conversation.id,
            seq=seq,
            role="user",
            content=text,
            run_id=run_id,
            created_at=now,
        )
    )
    await session.flush()
    return abandoned


async def add_message(
    session: AsyncSession,
    conversation_id: uuid.UUID,
    run_id: uuid.UUID,
    role: str,
    content: str,
    *,
    parts: list[dict[str, Any]] | None = None,
    incomplete: bool = False,
    stop_reason: str | None = None,
) -> Message:
    """Store a message with the next seq, taken in SQL only now (gapless, unique; BUG-019)."""
    seq = await session.scalar(
        update(Conversation)
        .where(Conversation.id == conversation_id, Conversation.active_run_id == run_id)
        .values(last_message_seq=Conversation.last_message_seq + 1, updated_at=utcnow())
        .returning(Conversation.last_message_seq)
        .execution_options(synchronize_session=False)
    )
    if seq is None:
        raise Fenced
    message = Message(
        conversation_id=conversation_id,
        seq=seq,
        role=role,
        content=content,
        parts=parts,
        run_id=run_id,
        incomplete=incomplete,
        stop_reason=stop_reason,
        created_at=utcnow(),
    )
    session.add(message)
    await session.flush()
    return message


async def mark_running(session: AsyncSession, run_id: uuid.UUID) -> None:
    now = utcnow()
    await session.execute(
        update(Run)
        .where(Run.id == run_id, Run.status == "queued")
        .values(status="running", started_at=now, heartbeat_at=now)
        .execution_options(synchronize_session=False)
    )


async def heartbeat(session: AsyncSession, run_id: uuid.UUID) -> bool:
    """Prove the run's process is alive; False if the run is no longer active (reaped)."""
    alive = await session.scalar(
        update(Run)
        .where(Run.id == run_id, Run.status.in_(ACTIVE_RUN_STATUSES))
        .values(heartbeat_at=utcnow())
        .returning(Run.id)
    )
    return alive is not None


async def add_usage(
    session: AsyncSession,
    conversation_id: uuid.UUID,
    run_id: uuid.UUID,
    *,
    input_tokens: int,
    output_tokens: int,
    cost: Decimal,
    context_tokens: int,
) -> None:
    """Add one model call to the run's and the conversation's totals, in SQL (BUG-009)."""
    counted = await session.execute(
        update(Conversation)
        .where(Conversation.id == conversation_id, Conversation.active_run_id == run_id)
        .values(
            total_input_tokens=Conversation.total_input_tokens + input_tokens,
            total_output_tokens=Conversation.total_output_tokens + output_tokens,
            total_cost=Conversation.total_cost + cost,
            estimated_context_tokens=context_tokens,
        )
        .execution_options(synchronize_session=False)
    )
    if counted.rowcount != 1:  # type: ignore[attr-defined]
        raise Fenced
    await session.execute(
        update(Run)
        .where(Run.id == run_id)
        .values(
            input_tokens=Run.input_tokens + input_tokens,
            output_tokens=Run.output_tokens + output_tokens,
            cost=Run.cost + cost,
        )
    )


async def end_run(
    session: AsyncSession,
    run_id: uuid.UUID,
    status: str,
    error_code: str | None = None,
    error_message: str | None = None,
    *,
    stale_before: datetime | None = None,
) -> bool:
    """Give an active run its final status and free its conversation; False if it had one
    (or, with ``stale_before``, if it proved it was alive since then)."""
    still_active: ColumnElement[bool] = Run.status.in_(ACTIVE_RUN_STATUSES)
    if stale_before is not None:
        still_active = and_(still_active, Run.heartbeat_at < stale_before)
    ended = await session.scalar(
        update(Run)
        .where(Run.id == run_id, still_active)
        .values(
            status=status,
            ended_at=utcnow(),
            error_code=error_code,
            error_message=error_message,
        )
        .returning(Run.conversation_id)
    )
    if ended is None:
        return False
    await session.execute(
        update(Conversation)
        .where(Conversation.id == ended, Conversation.active_run_id == run_id)
        .values(active_run_id=None)
        .execution_options(synchronize_session=False)
    )
    return True


async def stale_runs(
    session: AsyncSession, lease_seconds: float
) -> list[tuple[uuid.UUID, uuid.UUID]]:
    """Active runs whose process has not proved it is alive for a whole lease."""
    cutoff: datetime = utcnow() - timedelta(seconds=lease_seconds)
    rows = await session.execute(
        select(Run.id, Run.conversation_id)
        .where(Run.status.in_(ACTIVE_RUN_STATUSES), Run.heartbeat_at < cutoff)
        .limit(100)
    )
    return [(run_id, conversation_id) for run_id, conversation_id in rows]


async def history(session: AsyncSession, conversation_id: uuid.UUID) -> list[ChatMessage]:
    """The conversation as the model sees it: every stored message, tool parts included."""
    rows = await session.scalars(
        select(Message).where(Message.conversation_id == conversation_id).order_by(Message.seq)
    )
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
        {"type": "tool_result", "call_id": r.call_id, "content": r.content, "is_error": r.is_error}
        for r in results
    ]


async def get_run(
    session: AsyncSession, conversation: Conversation, run_id: uuid.UUID
) -> Run | None:
    return await session.scalar(
        select(Run).where(Run.id == run_id, Run.conversation_id == conversation.id)
    )


async def list_runs(session: AsyncSession, conversation: Conversation, limit: int) -> list[Run]:
    rows = await session.scalars(
        select(Run)
        .where(Run.conversation_id == conversation.id)
        .order_by(Run.created_at.desc(), Run.id.desc())
        .limit(limit)
    )
    return list(rows)


async def list_messages(
    session: AsyncSession, conversation: Conversation, after_seq: int, limit: int
) -> list[Message]:
    rows = await session.scalars(
        select(Message)
        .where(Message.conversation_id == conversation.id, Message.seq > after_seq)
        .order_by(Message.seq)
        .limit(limit)
    )
    return list(rows)


def present_run(run: Run) -> RunOut:
    return RunOut(
        id=run.id,
        conversation_id=run.conversation_id,
        status=run.status,
        model_id=run.model_id,
        input=run.input,
        input_tokens=run.input_tokens,
        output_tokens=run.output_tokens,
        cost=run.cost,
        error=RunError(code=run.error_code, message=run.error_message or "")
        if run.error_code
        else None,
        created_at=run.created_at,
        started_at=run.started_at,
        ended_at=run.ended_at,
    )


def present_message(message: Message) -> MessageOut:
    return MessageOut(
        id=message.id,
        seq=message.seq,
        role=message.role,
        content=message.content,
        parts=message.parts,
        incomplete=message.incomplete,
        stop_reason=message.stop_reason,
        run_id=message.run_id,
        created_at=message.created_at,
    )
