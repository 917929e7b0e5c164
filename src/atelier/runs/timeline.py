"""A run's timeline from what is stored -- its messages, the records of its model calls, its
waiting calls and the files it changed -- in the order of the events that announced them.
It reads the same for a run that ended a year ago and for one under way (what it has
stored so far): the run inspector's source."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from atelier.conversations.models import Message
from atelier.runs.approvals import CLIENT_TOOL, PENDING
from atelier.runs.models import Approval, Run, RunFileBackup
from atelier.runs.schemas import FileChanged, RunOut, Step, Timeline
from atelier.usage.models import UsageRecord

TIMELINE_TEXT_CHARS = 4000


async def timeline(session: AsyncSession, run: Run) -> Timeline:
    said = list(
        await session.scalars(select(Message).where(Message.run_id == run.id).order_by(Message.seq))
    )
    calls = {
        part["id"]: part
        for message in said
        for part in message.parts or ()
        if part.get("type") == "tool_call"
    }
    records = {
        record.event_id: record
        for record in await session.scalars(select(UsageRecord).where(UsageRecord.run_id == run.id))
    }
    steps: list[Step] = []
    for message in said:
        if message.role == "assistant":
            record = records.pop((message.event_id or 0) + 1, None)
            steps.append(_model_call(message, record))
        elif message.role == "tool":
            steps += [_tool_call(part, calls, message) for part in message.parts or ()]
    steps += [_model_call(None, record) for record in records.values()]  # no reply kept
    waited = await session.scalars(select(Approval).where(Approval.run_id == run.id))
    steps += [_waited(approval, run.user_id) for approval in waited]
    steps.sort(key=lambda step: (step.event_id is None, step.event_id or 0))
    backups = await session.scalars(
        select(RunFileBackup).where(RunFileBackup.run_id == run.id).order_by(RunFileBackup.path)
    )
    files = [
        FileChanged(path=b.path, change="created" if b.backup_key is None else "modified")
        for b in backups
    ]
    return Timeline(run=RunOut.of(run), steps=steps, files=files)


def _model_call(message: Message | None, record: UsageRecord | None) -> Step:
    sent = record.started_at if record else None
    ended = record.created_at if record else message.created_at if message else None
    first = record.first_token_at if record else None
    return Step(
        type="model_call",
        event_id=message.event_id if message else record.event_id if record else None,
        model_id=record.model_id if record else None,
        input_tokens=record.input_tokens if record else None,
        output_tokens=record.output_tokens if record else None,
        cache_read_tokens=record.cache_read_tokens if record else None,
        cache_write_tokens=record.cache_write_tokens if record else None,
        cost=record.cost if record else None,
        estimated=record.estimated if record else None,
        started_at=sent,
        time_to_first_token_ms=_ms(sent, first),
        text=_cut(message.content) if message else None,
        stop_reason=message.stop_reason if message else None,
        incomplete=message.incomplete if message else None,
        ended_at=ended,
        duration_ms=_ms(sent, ended),
    )


def _tool_call(part: dict[str, Any], calls: dict[str, dict[str, Any]], message: Message) -> Step:
    call = calls.get(part.get("call_id", ""), {})
    return Step(
        type="tool_call",
        event_id=message.event_id,
        call_id=part.get("call_id"),
        name=call.get("name"),
        arguments=call.get("arguments"),
        output=_cut(part.get("content", "")),
        is_error=bool(part.get("is_error")),
        decision=part.get("decision"),
        ended_at=message.created_at,
        duration_ms=part.get("duration_ms"),
    )


def _waited(approval: Approval, user_id: str) -> Step:
    pending = approval.status == PENDING
    return Step(
        type="client_tool" if approval.kind == CLIENT_TOOL else "approval",
        event_id=approval.event_id,
        call_id=approval.call_id,
        name=approval.name,
        arguments=approval.input,
        decision=approval.status,
        # Only the run's own user reaches its run: whoever decided, decided as that user.
        decided_by=None if pending else user_id,
        decided_at=approval.decided_at,
        reason=approval.reason,
        started_at=approval.created_at,
        ended_at=approval.decided_at,
        duration_ms=_ms(approval.created_at, approval.decided_at),
    )


def _ms(start: datetime | None, end: datetime | None) -> int | None:
    if start is None or end is None:
        return None
    return max(0, round((end - start).total_seconds() * 1000))


def _cut(text: str) -> str:
    return text if len(text) <= TIMELINE_TEXT_CHARS else text[:TIMELINE_TEXT_CHARS] + "…"
