"""One running run's numbered event log: kept in memory, shipped to the shared log.

The run is the only writer while it holds its conversation lock, so it numbers its own
events. Followers in this process read them from memory; followers in other processes
read the shared log (Redis Streams, or memory when embedded). ``emit`` never waits: one
flush at a time appends everything queued meanwhile in a single call. A batch the shared
log refused (an outage) stays queued and is sent again until the log takes it, so a
follower elsewhere never sees an id twice or out of order, only later. Memory keeps the
latest ``MEMORY_WINDOW`` events the shared log already has, plus whatever it does not.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid

import structlog

from atelier.coordination.base import Coordination, CoordinationUnavailable, LogEvent
from atelier.runs.events import RunEvent

log = structlog.get_logger("atelier.runs")

# Followers in other processes see events up to this much later; in exchange a fast run
# costs the process and Redis a few appends per second, not one every few tokens.
FLUSH_LINGER_SECONDS = 0.05
RETRY_SECONDS = (0.1, 0.2, 0.5, 1.0, 2.0)
MEMORY_WINDOW = 256
DRAIN_SECONDS = 10.0  # how long an ended run keeps trying to ship its last events


def log_name(run_id: uuid.UUID) -> str:
    return f"run:{run_id}"


class RunEventLog:
    def __init__(self, coordination: Coordination, run_id: uuid.UUID) -> None:
        self._coordination = coordination
        self.run_id = run_id
        self.name = log_name(run_id)
        self._window: list[LogEvent] = []
        self.dropped = 0  # events 1..dropped have left memory (the shared log has them)
        self._unsent = 1  # the first event not yet in the shared log
        self._waiters: list[asyncio.Future[None]] = []  # readers waiting for an event
        self._flushing: asyncio.Task[None] | None = None

    @property
    def last_id(self) -> int:
        return self.dropped + len(self._window)

    def emit(self, event: RunEvent) -> int:
        """Number ``event``, keep it, and have it shipped; returns its id."""
        number = self.last_id + 1
        self._window.append(LogEvent(number, event.type, event.data))
        for waiter in self._waiters:
            if not waiter.done():
                waiter.set_result(None)
        self._waiters.clear()
        if self._flushing is None or self._flushing.done():
            self._flushing = asyncio.create_task(self._flush(), name=f"events-{self.run_id}")
        return number

    async def read(self, after: int, wait_seconds: float) -> list[LogEvent] | None:
        """Events numbered above ``after``, waiting up to ``wait_seconds`` for the first
        (an empty list if none came); None if some of them have left memory (the shared
        log has those)."""
        if self.last_id <= after:
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            timer = asyncio.get_running_loop().call_later(wait_seconds, _wake, waiter)
            try:
                await waiter
            finally:
                timer.cancel()
            if self.last_id <= after:
                self._waiters.remove(waiter)
                return []
        if after < self.dropped:
            return None
        return self._window[after - self.dropped :]

    async def close(self, retention_seconds: int) -> None:
        """After the run's last event: ship what is left (for a while), then let the shared
        log expire after ``retention_seconds``."""
        try:
            async with asyncio.timeout(DRAIN_SECONDS):
                while self._flushing is not None and not self._flushing.done():
                    await asyncio.shield(self._flushing)
        except TimeoutError:
            assert self._flushing is not None
            self._flushing.cancel()
            lost = self.last_id - self._unsent + 1
            log.warning(
                "run events never reached the shared log", run_id=str(self.run_id), lost=lost
            )
            return
        try:
            await self._coordination.expire_log(self.name, retention_seconds)
        except CoordinationUnavailable:
            log.warning("run event log retention not set", run_id=str(self.run_id))

    async def _flush(self) -> None:
        attempt = 0
        while self._unsent <= self.last_id:
            # Let a burst gather: one round trip per few milliseconds, not per token.
            await asyncio.sleep(FLUSH_LINGER_SECONDS if not attempt else _backoff(attempt))
            batch = self._window[self._unsent - 1 - self.dropped :]
            try:
                await self._append(batch, retry=attempt > 0)
            except CoordinationUnavailable:
                attempt += 1
                if attempt == 1:
                    log.warning("run events not shipped yet; retrying", run_id=str(self.run_id))
                continue
            attempt = 0
            self._unsent = batch[-1].id + 1
            # What the shared log has may leave memory.
            extra = min(len(self._window) - MEMORY_WINDOW, self._unsent - 1 - self.dropped)
            if extra > 0:
                del self._window[:extra]
                self.dropped += extra

    async def _append(self, batch: list[LogEvent], *, retry: bool) -> None:
        if retry:
            # An earlier try may have reached the log before its connection broke: what
            # the log has of this batch is ours (the only writer), and is not sent twice.
            with contextlib.suppress(CoordinationUnavailable):
                present = await self._coordination.read_events(self.name, batch[0].id - 1, 0)
                if present:
                    batch = [e for e in batch if e.id > present[-1].id]
                    if not batch:
                        return
        await self._coordination.append_events(
            self.name, [(e.name, e.data) for e in batch], first_id=batch[0].id
        )


def _wake(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


def _backoff(attempt: int) -> float:
    return RETRY_SECONDS[min(attempt, len(RETRY_SECONDS)) - 1]


async def announce_end(
    coordination: Coordination, run_id: uuid.UUID, event: RunEvent, retention_seconds: int
) -> None:
    """End the shared log of a run that cannot do it itself (its process died)."""
    try:
        await coordination.append_events(log_name(run_id), [(event.type, event.data)])
        await coordination.expire_log(log_name(run_id), retention_seconds)
    except CoordinationUnavailable:
        log.warning("run end not recorded in its event log", run_id=str(run_id), exc_info=True)
