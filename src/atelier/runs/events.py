"""A run's numbered event log, and following it as Server-Sent Events from any process.

The run appends to the log in the coordination backend (Redis Streams, or memory when
embedded); an SSE request replays what is there after the client's last id and then
follows. The stream ends after exactly one terminal event. If the log is gone (expired,
or lost with Redis) the run's row still says how it ended, and that is what is sent.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import structlog
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from atelier.coordination.base import Coordination, CoordinationUnavailable, LogEvent
from atelier.db.base import utcnow
from atelier.http.sse import EventBatch, ServerSentEvent
from atelier.runs.models import ACTIVE_RUN_STATUSES, Run

log = structlog.get_logger("atelier.runs")

TERMINAL_EVENTS = {
    "completed": "run.completed",
    "failed": "run.failed",
    "cancelled": "run.cancelled",
    "timed_out": "run.timed_out",
}
TERMINAL_NAMES = frozenset(TERMINAL_EVENTS.values())
FOLLOW_WAIT_MS = 1000  # one blocking read; below the Redis client's socket timeout
# Followers in other processes see events up to this much later; in exchange a fast
# run costs the process and Redis a few appends per second, not one every few tokens.
FLUSH_LINGER_SECONDS = 0.05
MEMORY_WINDOW = 256
CHECK_ROW_EVERY = 5  # quiet reads between looks at the run's row


def log_name(run_id: uuid.UUID) -> str:
    return f"run:{run_id}"


def terminal_data(run_id: uuid.UUID, error: dict[str, str] | None) -> dict[str, Any]:
    return {"run_id": str(run_id), "error": error}


class RunEventLog:
    """One running run's events: numbered here, kept in memory, shipped to the shared log.

    The run is the only writer while it holds its conversation lock, so it numbers its
    own events. Followers in this process (the request that started the run, usually)
    read them from memory; others read the shared log. ``emit`` never waits: one flush
    at a time appends everything queued meanwhile in a single call, so a fast model
    costs one round trip per burst, not per token. Memory keeps only the latest
    ``MEMORY_WINDOW`` events that the shared log already has, so a long run costs a
    bounded amount of memory. A coordination outage loses events in the shared log,
    never the run's work.
    """

    def __init__(self, coordination: Coordination, run_id: uuid.UUID) -> None:
        self._coordination = coordination
        self._run_id = run_id
        self.log = log_name(run_id)
        self._window: list[LogEvent] = []
        self.dropped = 0  # events 1..dropped have left memory
        self._unsent = 1  # the first event not yet in the shared log
        self._grew = asyncio.Event()
        self._flushing: asyncio.Task[None] | None = None

    @property
    def last_id(self) -> int:
        return self.dropped + len(self._window)

    def emit(self, name: str, data: Any) -> None:
        self._window.append(LogEvent(self.last_id + 1, name, json.dumps(data)))
        self._grew.set()
        if self._flushing is None or self._flushing.done():
            self._flushing = asyncio.create_task(self._flush(), name=f"events-{self._run_id}")

    async def read(self, after: int) -> list[LogEvent] | None:
        """Events numbered above ``after``, waiting for the first if there are none yet;
        None if some of them have left memory (the shared log has those)."""
        while self.last_id <= after:
            self._grew.clear()
            await self._grew.wait()
        if after < self.dropped:
            return None
        return self._window[after - self.dropped :]

    async def drain(self) -> None:
        """Wait until everything emitted so far is in the shared log (or given up on)."""
        while self._flushing is not None and not self._flushing.done():
            await asyncio.shield(self._flushing)

    async def expire(self, seconds: int) -> None:
        await self.drain()
        try:
            await self._coordination.expire_log(self.log, seconds)
        except CoordinationUnavailable:
            log.warning("run event log retention not set", run_id=str(self._run_id))

    async def _flush(self) -> None:
        while self._unsent <= self.last_id:
            # Let a burst gather: followers in other processes wait a moment more, and a
            # fast model costs one round trip per few milliseconds instead of per token.
            await asyncio.sleep(FLUSH_LINGER_SECONDS)
            batch = self._window[self._unsent - 1 - self.dropped :]
            self._unsent = self.last_id + 1
            try:
                await self._coordination.append_events(
                    self.log, [(e.name, e.data) for e in batch], first_id=batch[0].id
                )
            except CoordinationUnavailable:
                log.warning("run events not recorded", run_id=str(self._run_id), lost=len(batch))
            # What the shared log has (or will never have) may leave memory.
            extra = min(len(self._window) - MEMORY_WINDOW, self._unsent - 1 - self.dropped)
            if extra > 0:
                del self._window[:extra]
                self.dropped += extra


async def announce_end(
    coordination: Coordination,
    run_id: uuid.UUID,
    status: str,
    error: dict[str, str] | None,
    retention_seconds: int,
) -> None:
    """End the shared log of a run that cannot do it itself (its process died)."""
    try:
        event = (TERMINAL_EVENTS[status], json.dumps(terminal_data(run_id, error)))
        await coordination.append_events(log_name(run_id), [event])
        await coordination.expire_log(log_name(run_id), retention_seconds)
    except CoordinationUnavailable:
        log.warning("run end not recorded in its event log", run_id=str(run_id), exc_info=True)


async def follow_local(
    run_log: RunEventLog, coordination: Coordination, after: int
) -> AsyncIterator[EventBatch]:
    """A run of this process, from memory: each wake-up sends what arrived as one write.
    A follower further behind than memory reaches reads the older part from the shared log."""
    last = after
    while True:
        events = await run_log.read(last)
        if events is None:
            try:
                events = await coordination.read_events(run_log.log, last, 0)
            except CoordinationUnavailable:
                events = []
            if not events:  # lost with the shared log: go on from what memory has
                last = run_log.dropped
                continue
        last = events[-1].id
        batch = [ServerSentEvent(e.data, e.name, e.id) for e in events]
        terminal = next((i for i, e in enumerate(events) if e.name in TERMINAL_NAMES), None)
        if terminal is not None:
            yield EventBatch(batch[: terminal + 1])
            return
        yield EventBatch(batch)


async def follow(
    coordination: Coordination,
    sessionmaker: async_sessionmaker[AsyncSession],
    run_id: uuid.UUID,
    after: int,
    *,
    settle_seconds: float,
) -> AsyncIterator[ServerSentEvent | EventBatch]:
    """Events numbered above ``after``, then new ones as they come, up to the terminal one.

    ``settle_seconds``: how long after its row ended a run may still append its terminal
    event (it waits a little for the title); only past that is the row's word final.
    """
    last = after
    quiet = 0
    while True:
        try:
            events = await coordination.read_events(log_name(run_id), last, FOLLOW_WAIT_MS)
        except CoordinationUnavailable:
            log.warning("run event log unreadable; retrying", run_id=str(run_id))
            events = []
            await asyncio.sleep(FOLLOW_WAIT_MS / 1000)
        batch = []
        for event in events:
            last = event.id
            batch.append(ServerSentEvent(event.data, event.name, event.id))
            if event.name in TERMINAL_NAMES:
                yield EventBatch(batch)
                return
        if batch:
            yield EventBatch(batch)
            quiet = 0
            continue
        quiet += 1
        if quiet % CHECK_ROW_EVERY == 1:  # the first quiet read, then every few
            ended = await _ended(sessionmaker, run_id, settle_seconds)
            if ended is not None:
                status, error = ended
                data = json.dumps(terminal_data(run_id, error))
                yield ServerSentEvent(data, TERMINAL_EVENTS[status], last + 1)
                return


async def _ended(
    sessionmaker: async_sessionmaker[AsyncSession], run_id: uuid.UUID, settle_seconds: float
) -> tuple[str, dict[str, str] | None] | None:
    async with sessionmaker() as session:
        run = await session.scalar(select(Run).where(Run.id == run_id))
    if run is None:  # deleted with its conversation
        return "cancelled", {"code": "conversation_deleted", "message": "the conversation is gone"}
    if run.status in ACTIVE_RUN_STATUSES or run.ended_at is None:
        return None
    if (utcnow() - run.ended_at).total_seconds() < settle_seconds:
        return None
    error = {"code": run.error_code, "message": run.error_message or ""} if run.error_code else None
    return run.status, error
