"""Following a run's events, from any process, up to its one terminal event.

A run of this process is followed from memory; any other from the shared log. Ids
never name two different events, and a follower sends every event the log has, in
order: a blip of Redis or of the database only delays it. Where the shared log lost
events for good (a Redis that came back empty, a process that died before shipping), the
durable ones -- stored messages, usage and approval requests, each saved with the id of
its event -- are sent again from the database under their own ids, and the terminal
event comes from the run's row with the id the run gave it; what was not durable (deltas,
tool progress) is logged as lost, never invented. A follower never hangs on a run that
has ended: it asks the run's row whenever the log is quiet or unreachable.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Sequence

import structlog
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from atelier.coordination.base import Coordination, CoordinationUnavailable, LogEvent
from atelier.runs.events import TERMINAL_TYPES, ApprovalRequested, Numbered, RunWaiting, parse
from atelier.runs.log import DRAIN_SECONDS, FLUSH_LINGER_SECONDS, RunEventLog, log_name
from atelier.runs.replay import recover, run_state

log = structlog.get_logger("atelier.runs")

FOLLOW_WAIT_MS = 1000  # one blocking read; below the Redis client's socket timeout
# A quiet local follower asks the run's row this often: a stream ends at most two such
# intervals after its run's row did (within one SSE keep-alive interval).
LOCAL_QUIET_SECONDS = 5.0
CHECK_ROW_EVERY = 5  # quiet reads between looks at the run's row
OUTAGE_PAUSE_SECONDS = 1.0
COALESCE_SECONDS = 0.001
SETTLE_SECONDS = 10.0  # how long a follower trusts a run's own end over its row's
# How long after its row ended (or paused) a run's process may still ship its last events.
SHIPPING_SECONDS = DRAIN_SECONDS + FLUSH_LINGER_SECONDS + 2.0
Sessions = async_sessionmaker[AsyncSession]


def _upto_end(events: Sequence[Numbered]) -> tuple[list[Numbered], bool]:
    """The events up to and including a terminal one; and whether there was one."""
    for index, (_, event) in enumerate(events):
        if event.type in TERMINAL_TYPES:  # type: ignore[union-attr]
            return list(events[: index + 1]), True
    return list(events), False


def _typed(events: Sequence[LogEvent]) -> list[Numbered]:
    return [Numbered(event.id, parse(event.name, event.data)) for event in events]


async def follow_local(
    run_log: RunEventLog, coordination: Coordination, sessions: Sessions, after: int
) -> AsyncIterator[list[Numbered]]:
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
            yield [Numbered(None, RunWaiting(str(run_log.run_id)))]
            async for from_elsewhere in follow_shared(
                coordination,
                sessions,
                run_log.run_id,
                last,
                settle_seconds=SETTLE_SECONDS,
                told_waiting=last,
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
            state = await run_state(sessions, run_log.run_id)
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
                recovered = await recover(sessions, run_log.run_id, last, state.last_event_id)
                if recovered is None:
                    continue
                yield [*recovered, state.terminal(run_log.run_id)]
                return
            continue
        quiet = 0
        if events is None:  # behind what memory keeps
            shared = await _shared(coordination, run_log.name, last)
            missing_until = min(shared[0].id - 1, run_log.dropped) if shared else run_log.dropped
            events = _typed(shared)
            if missing_until > last:  # the shared log lost them
                recovered = await recover(sessions, run_log.run_id, last, missing_until)
                if recovered is None:
                    await asyncio.sleep(OUTAGE_PAUSE_SECONDS)
                    continue
                _lost(run_log.run_id, last, missing_until, recovered)
                if recovered:
                    yield recovered
                last = missing_until
                continue
        batch, done = _upto_end(events)
        last = batch[-1].id  # type: ignore[assignment]
        yield batch
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
    told_waiting: int | None = None,
) -> AsyncIterator[list[Numbered]]:
    """A run of any process, from the shared log, falling back to the database.

    The log is the word on every event the run gave: a row that ended (or stopped to wait
    for approvals) does not end the stream while its process may still be shipping the
    events before that point, which it does for up to ``DRAIN_SECONDS`` -- a blip of the
    log, a slow close, a busy Redis only make them later. Only past that, or for a gap in
    the log itself (a Redis that came back empty), does the database fill in what it kept
    (messages, usage, approval requests) under their own ids; what it did not keep is
    logged as lost, never silently skipped.

    ``settle_seconds``: how long after its row ended a run that recorded no final id may
    still send its terminal event (its process may be slow); past that the row's word is
    final. Once everything up to a run's pause was sent, ``RunWaiting`` says it waits (once
    per pause: ``told_waiting`` names one told already); after an approval request the
    row is asked at the next quiet read, so that this comes at once.
    """
    name = log_name(run_id)
    last, quiet, asked = after, 0, False
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
                recovered = await recover(sessions, run_id, last, events[0].id - 1)
                if recovered is None:  # the database did not answer: read again
                    await asyncio.sleep(OUTAGE_PAUSE_SECONDS)
                    continue
                _lost(run_id, last, events[0].id - 1, recovered)
                if recovered:
                    yield recovered
            batch, done = _upto_end(_typed(events))
            last = batch[-1].id  # type: ignore[assignment]
            asked = isinstance(batch[-1].event, ApprovalRequested)
            yield batch
            if done:
                return
            continue
        quiet += 1
        if not outage and not asked and (quiet - 1) % CHECK_ROW_EVERY:
            continue
        asked = False
        state = await run_state(sessions, run_id)
        if state is None or (state.active and not state.waiting):
            continue
        if state.waiting:
            # It waits for approvals, held by no process: what it said before stopping is
            # owed by the log, else (its process died before shipping it) by the database.
            until = state.paused_event_id
            if until is not None and until <= last and until != told_waiting:
                told_waiting = until
                yield [Numbered(None, RunWaiting(str(run_id)))]
            if until is None or until <= last or state.age_seconds < SHIPPING_SECONDS:
                continue
            recovered = await recover(sessions, run_id, last, until)
            if recovered is None:
                continue
            _lost(run_id, last, until, recovered)
            if recovered:
                yield recovered
            last = until
            continue
        final = state.last_event_id
        if final is None and state.age_seconds < settle_seconds:
            continue  # its terminal event may still come through the log
        if final is not None and state.age_seconds < SHIPPING_SECONDS:
            continue  # its process is still shipping what it said before the end
        recovered = await recover(sessions, run_id, last, final)
        if recovered is None:
            continue
        if final is not None:
            _lost(run_id, last, final - 1, recovered)
        yield [*recovered, state.terminal(run_id)]
        return


def _lost(run_id: uuid.UUID, after: int, until: int, recovered: Sequence[Numbered]) -> None:
    """Say so when the shared log lost events the database did not keep (deltas, tool
    progress): the stream goes on without them, and an operator can see it did."""
    lost = until - after - len(recovered)
    if lost > 0:
        log.warning(
            "run events lost from the shared log; sent what the database kept",
            run_id=str(run_id),
            after=after,
            until=until,
            lost=lost,
        )


async def _shared(coordination: Coordination, name: str, after: int) -> list[LogEvent]:
    """The shared log from ``after``. A blip of Redis is waited out (skipping to what
    memory still holds would lose what the follower has not seen); an outage longer than
    ``SHIPPING_SECONDS`` leaves it to the database."""
    give_up = asyncio.get_running_loop().time() + SHIPPING_SECONDS
    while True:
        try:
            return await coordination.read_events(name, after, 0)
        except CoordinationUnavailable:
            if asyncio.get_running_loop().time() >= give_up:
                return []
            await asyncio.sleep(OUTAGE_PAUSE_SECONDS)
