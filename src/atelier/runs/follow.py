"""Following a run's events, from any process, up to its one terminal event.

A run of this process is followed from memory; any other from the shared log. Ids
never name two different events. Where the shared log lost events (an outage, or a
Redis that came back empty), the durable ones -- stored messages and usage, each saved
with the id of its event -- are sent again from the database under their own ids, and
the terminal event comes from the run's row with the id the run gave it; what was not
durable (deltas, tool progress) is skipped, never invented. A follower never hangs on a
run that has ended: it asks the run's row whenever the log is quiet or unreachable.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import datetime

import structlog
from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from atelier.conversations.models import Message
from atelier.coordination.base import Coordination, CoordinationUnavailable, LogEvent
from atelier.db.base import utcnow
from atelier.http.sse import EventBatch, ServerSentEvent
from atelier.runs.events import (
    ACTIVE_STATUSES,
    TERMINAL_TYPES,
    ErrorCode,
    MessageCompleted,
    RunError,
    RunStatus,
    Usage,
    ended,
)
from atelier.runs.log import RunEventLog, log_name
from atelier.runs.models import Run
from atelier.usage.models import UsageRecord

log = structlog.get_logger("atelier.runs")

FOLLOW_WAIT_MS = 1000  # one blocking read; below the Redis client's socket timeout
# A quiet local follower asks the run's row this often: a stream ends at most two such
# intervals after its run's row did (within one SSE keep-alive interval).
LOCAL_QUIET_SECONDS = 5.0
CHECK_ROW_EVERY = 5  # quiet reads between looks at the run's row
OUTAGE_PAUSE_SECONDS = 1.0
COALESCE_SECONDS = 0.001
SETTLE_SECONDS = 10.0  # how long a follower trusts a run's own end over its row's
Sessions = async_sessionmaker[AsyncSession]


def _to_sse(events: Sequence[LogEvent]) -> tuple[list[ServerSentEvent], bool]:
    """As SSE, up to and including a terminal event; and whether there was one."""
    batch = []
    for event in events:
        batch.append(ServerSentEvent(event.data, event.name, event.id))
        if event.name in TERMINAL_TYPES:
            return batch, True
    return batch, False


async def follow_local(
    run_log: RunEventLog, coordination: Coordination, sessions: Sessions, after: int
) -> AsyncIterator[EventBatch]:
    """A run of this process, from memory; each wake-up sends what arrived in one write.
    A follower further behind than memory reaches reads that part from the shared log.

    A quiet follower looks at the run's row every ``LOCAL_QUIET_SECONDS``: it ends, with
    the row's terminal event, when the row ended but the run's own event never came.

    A follower that wrote less than ``COALESCE_SECONDS`` ago waits that long before its next
    write: a model streaming at its usual pace (a token every 10-50 ms) is sent token by
    token, while a flood of events (many runs, a fast model) goes out in a few writes
    instead of thousands, for at most a millisecond more.
    """
    loop = asyncio.get_running_loop()
    last, sent_at, quiet = after, 0.0, 0
    while True:
        events = await run_log.read(last, LOCAL_QUIET_SECONDS)
        if events == [] and run_log.paused:
            # The run waits for approvals in its row; whichever process takes it up again
            # writes the shared log, where everything it said so far already is.
            async for from_elsewhere in follow_shared(
                coordination, sessions, run_log.run_id, last, settle_seconds=SETTLE_SECONDS
            ):
                yield from_elsewhere
            return
        if events and loop.time() - sent_at < COALESCE_SECONDS:
            await asyncio.sleep(COALESCE_SECONDS)
            events = await run_log.read(last, 0)
        if events == []:
            # Quiet: the run may be between steps, or its end may never reach memory (a
            # run that died between closing its row and announcing it). The row decides,
            # after one more quiet interval for the run's own terminal event.
            quiet += 1
            state = await _state(sessions, run_log.run_id)
            if state is None or state.active:
                quiet = 0
            elif quiet >= 2:
                log.warning(
                    "run ended without its end reaching this stream; ended from its row",
                    run_id=str(run_log.run_id),
                    last_sent=last,
                    last_emitted=run_log.last_id,
                    recorded=state.last_event_id,
                )
                recovered = await _recover(sessions, run_log.run_id, last, state.last_event_id)
                yield EventBatch([*recovered, state.terminal(run_log.run_id)])
                return
            continue
        quiet = 0
        if events is None:  # behind what memory keeps
            events = await _shared(coordination, run_log.name, last)
            missing_until = min(events[0].id - 1, run_log.dropped) if events else run_log.dropped
            if missing_until > last:  # the shared log lost them
                recovered = await _recover(sessions, run_log.run_id, last, missing_until)
                if recovered:
                    yield EventBatch(recovered)
                last = missing_until
                continue
        batch, done = _to_sse(events)
        last = batch[-1].id  # type: ignore[assignment]
        yield EventBatch(batch)
        sent_at = loop.time()
        if done:
            return


async def follow_shared(
    coordination: Coordination,
    sessions: Sessions,
    run_id: uuid.UUID,
    after: int,
    *,
    settle_seconds: float,
) -> AsyncIterator[EventBatch]:
    """A run of any process, from the shared log, falling back to the database.

    ``settle_seconds``: how long after its row ended a run that recorded no final id may
    still send its terminal event (its process may be slow); past that the row's word is
    final.
    """
    name = log_name(run_id)
    last, quiet = after, 0
    while True:
        try:
            events = await coordination.read_events(name, last, FOLLOW_WAIT_MS)
            outage = False
        except CoordinationUnavailable:
            events, outage = [], True
            await asyncio.sleep(OUTAGE_PAUSE_SECONDS)
        if events:
            quiet = 0
            if events[0].id > last + 1:  # a gap the shared log lost
                recovered = await _recover(sessions, run_id, last, events[0].id - 1)
                if recovered:
                    yield EventBatch(recovered)
            batch, done = _to_sse(events)
            last = batch[-1].id  # type: ignore[assignment]
            yield EventBatch(batch)
            if done:
                return
            continue
        quiet += 1
        if not outage and quiet % CHECK_ROW_EVERY != 1:
            continue
        state = await _state(sessions, run_id)
        if state is None or state.active:
            continue
        if state.last_event_id is None and state.age_seconds < settle_seconds:
            continue  # its terminal event may still come through the log
        if not outage and state.last_event_id is not None and quiet < 2:
            continue  # one more full read of the log before the database's word
        recovered = await _recover(sessions, run_id, last, state.last_event_id)
        yield EventBatch([*recovered, state.terminal(run_id)])
        return


@dataclass(frozen=True)
class _RunState:
    status: RunStatus | None  # None: the run is gone (its conversation was deleted)
    error: RunError | None
    last_event_id: int | None
    ended_at: datetime | None

    @property
    def active(self) -> bool:
        return self.status in ACTIVE_STATUSES or (self.status is not None and not self.ended_at)

    @property
    def age_seconds(self) -> float:
        return (utcnow() - self.ended_at).total_seconds() if self.ended_at else float("inf")

    def terminal(self, run_id: uuid.UUID) -> ServerSentEvent:
        error: RunError | None
        if self.status is None:
            status = RunStatus.CANCELLED
            error = RunError(
                code=ErrorCode.CONVERSATION_DELETED, message="the conversation is gone"
            )
        else:
            status, error = self.status, self.error
        event = ended(status, str(run_id), error)
        # Without the id the run gave it, no id at all: never one that names another event.
        return ServerSentEvent(event.data, event.type, self.last_event_id)


async def _state(sessions: Sessions, run_id: uuid.UUID) -> _RunState | None:
    """The run's row as a follower needs it; None when the database did not answer (the
    follower asks again later, and the stream stays open with keep-alives meanwhile)."""
    try:
        async with sessions() as session:
            run = await session.scalar(select(Run).where(Run.id == run_id))
    except SQLAlchemyError:
        log.warning("run state unreadable; retrying", run_id=str(run_id))
        return None
    if run is None:
        return _RunState(None, None, None, utcnow())
    return _RunState(RunStatus(run.status), run.error, run.last_event_id, run.ended_at)


async def _shared(coordination: Coordination, name: str, after: int) -> list[LogEvent]:
    try:
        return await coordination.read_events(name, after, 0)
    except CoordinationUnavailable:
        return []


async def _recover(
    sessions: Sessions, run_id: uuid.UUID, after: int, until: int | None
) -> list[ServerSentEvent]:
    """The run's durable events numbered in (after, until], from the database."""
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
            found: list[tuple[int, MessageCompleted | Usage]] = [
                (m.event_id, _completed(m)) for m in messages if m.event_id is not None
            ]
            found += [(u.event_id, _usage(u)) for u in usages if u.event_id is not None]
    except SQLAlchemyError:
        log.warning("run events unrecoverable", run_id=str(run_id), after=after, until=until)
        return []
    return [ServerSentEvent(e.data, e.type, number) for number, e in sorted(found)]


def _completed(message: Message) -> MessageCompleted:
    return MessageCompleted(
        message_id=str(message.id),
        seq=message.seq,
        role=message.role,
        content=message.content,
        incomplete=message.incomplete,
        stop_reason=message.stop_reason,
    )


def _usage(record: UsageRecord) -> Usage:
    return Usage(
        input_tokens=record.input_tokens,
        output_tokens=record.output_tokens,
        cache_read_tokens=record.cache_read_tokens,
        cache_write_tokens=record.cache_write_tokens,
        cost=record.cost,
    )
