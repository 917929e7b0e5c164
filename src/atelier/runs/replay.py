"""What a follower gets from the database when the event log cannot say: the run's row
(is it still going? how did it end, or where did it stop to wait, under which id?) and its
durable events -- stored messages, usage and approval requests, each under the id of the
event that announced it."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

import structlog
from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from atelier.conversations.models import Message
from atelier.db.base import utcnow
from atelier.runs.approvals import CLIENT_TOOL
from atelier.runs.events import (
    ACTIVE_STATUSES,
    WAITING_STATUSES,
    ApprovalRequested,
    ErrorCode,
    MessageCompleted,
    Numbered,
    RunError,
    RunStatus,
    ToolRequested,
    Usage,
    ended,
)
from atelier.runs.models import Approval, Run
from atelier.usage.models import UsageRecord

log = structlog.get_logger("atelier.runs")
Sessions = async_sessionmaker[AsyncSession]


@dataclass(frozen=True)
class RunState:
    status: RunStatus | None  # None: the run is gone (its conversation was deleted)
    error: RunError | None
    last_event_id: int | None
    ended_at: datetime | None
    # A run waiting for approvals: the id of its last event, and since when it waits.
    paused_event_id: int | None = None
    paused_at: datetime | None = None

    @property
    def active(self) -> bool:
        return self.status in ACTIVE_STATUSES or (self.status is not None and not self.ended_at)

    @property
    def waiting(self) -> bool:
        return self.status in WAITING_STATUSES

    @property
    def age_seconds(self) -> float:
        """How long ago the run ended (or, waiting, stopped to wait)."""
        since = self.paused_at if self.waiting else self.ended_at
        return (utcnow() - since).total_seconds() if since else float("inf")

    def terminal(self, run_id: uuid.UUID) -> Numbered:
        error: RunError | None
        if self.status is None:
            status = RunStatus.CANCELLED
            error = RunError(
                code=ErrorCode.CONVERSATION_DELETED, message="the conversation is gone"
            )
        else:
            status, error = self.status, self.error
        # Without the id the run gave it, no id at all: never one that names another event.
        return Numbered(self.last_event_id, ended(status, str(run_id), error))


async def run_state(sessions: Sessions, run_id: uuid.UUID) -> RunState | None:
    """The run's row as a follower needs it; None when the database did not answer (the
    follower asks again later, and the stream stays open with keep-alives meanwhile)."""
    try:
        async with sessions() as session:
            run = await session.scalar(select(Run).where(Run.id == run_id))
    except SQLAlchemyError:
        log.warning("run state unreadable; retrying", run_id=str(run_id))
        return None
    if run is None:
        return RunState(None, None, None, utcnow())
    return RunState(
        RunStatus(run.status),
        run.error,
        run.last_event_id,
        run.ended_at,
        run.paused_event_id,
        run.heartbeat_at,
    )


async def recover(
    sessions: Sessions, run_id: uuid.UUID, after: int, until: int | None
) -> list[Numbered] | None:
    """The run's durable events numbered in (after, until], from the database; None if it
    did not answer (the follower asks again: it never skips what it could not read)."""
    top = until if until is not None else 2**62
    try:
        async with sessions() as session:
            messages = await session.scalars(
                select(Message).where(
                    Message.run_id == run_id, Message.event_id > after, Message.event_id <= top
                )
            )
            usages = await session.scalars(
                select(UsageRecord).where(
                    UsageRecord.run_id == run_id,
                    UsageRecord.event_id > after,
                    UsageRecord.event_id <= top,
                )
            )
            found: list[
                tuple[int, MessageCompleted | Usage | ApprovalRequested | ToolRequested]
            ] = [(m.event_id, _completed(m)) for m in messages if m.event_id is not None]
            found += [(u.event_id, _usage(u)) for u in usages if u.event_id is not None]
            asked = await session.scalars(
                select(Approval).where(
                    Approval.run_id == run_id, Approval.event_id > after, Approval.event_id <= top
                )
            )
            found += [(a.event_id, _asked(a)) for a in asked if a.event_id is not None]
    except SQLAlchemyError:
        log.warning("run events unreadable; retrying", run_id=str(run_id), after=after)
        return None
    return [Numbered(number, event) for number, event in sorted(found, key=lambda f: f[0])]


def _completed(message: Message) -> MessageCompleted:
    return MessageCompleted(
        message_id=str(message.id),
        seq=message.seq,
        role=message.role,
        content=message.content,
        incomplete=message.incomplete,
        stop_reason=message.stop_reason,
        parts=message.parts,
    )


def _asked(approval: Approval) -> ApprovalRequested | ToolRequested:
    asked = ToolRequested if approval.kind == CLIENT_TOOL else ApprovalRequested
    return asked(call_id=approval.call_id, name=approval.name, input=approval.input)


def _usage(record: UsageRecord) -> Usage:
    return Usage(
        input_tokens=record.input_tokens,
        output_tokens=record.output_tokens,
        cache_read_tokens=record.cache_read_tokens,
        cache_write_tokens=record.cache_write_tokens,
        cost=record.cost,
        estimated=record.estimated,
    )
