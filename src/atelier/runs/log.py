"""Runs' numbered event logs: kept in memory, shipped to the shared log.

The run is the only writer while it holds its conversation lock, so it numbers its own
events. Followers in this process read them from memory; followers in other processes
read the shared log (Redis Streams, or memory when embedded). ``emit`` never waits: one
``EventShipper`` per process appends what every run emitted meanwhile in one round trip
per ``FLUSH_LINGER_SECONDS`` (hundreds of runs cost Redis twenty calls a second, not one
per run every few tokens). What the shared log refused (an outage) stays queued and is
sent again until the log takes it; the log skips what it already has, so a follower
elsewhere never sees an id twice or out of order, only later. Memory keeps the latest
``MEMORY_WINDOW`` events the shared log already has, plus whatever it does not.
"""

from __future__ import annotations

import asyncio
import uuid

import structlog

from atelier.coordination.base import Coordination, CoordinationUnavailable, LogBatch
from atelier.runs.events import Numbered, RunEvent

log = structlog.get_logger("atelier.runs")

# Followers in other processes see events up to this much later.
FLUSH_LINGER_SECONDS = 0.05
RETRY_SECONDS = (0.1, 0.2, 0.5, 1.0, 2.0)
MEMORY_WINDOW = 256
DRAIN_SECONDS = 10.0  # how long an ended run keeps trying to ship its last events


def log_name(run_id: uuid.UUID) -> str:
    return f"run:{run_id}"


class RunEventLog:
    def __init__(self, shipper: EventShipper, run_id: uuid.UUID, after: int = 0) -> None:
        """``after``: the last id the run gave before (a run that goes on after waiting)."""
        self._shipper = shipper
        self.run_id = run_id
        self.name = log_name(run_id)
        self._window: list[Numbered] = []
        self.dropped = after  # events 1..dropped have left memory (the shared log has them)
        self._unsent = after + 1  # the first event not yet in the shared log
        self.paused = False  # the run waits in its row: what follows comes from elsewhere
        self._waiters: list[asyncio.Future[None]] = []  # readers waiting for an event
        self._loop = asyncio.get_running_loop()
        self._emitted_at = self._loop.time()
        self._quiet: asyncio.TimerHandle | None = None  # wakes the waiters of a quiet run
        self._shipped = asyncio.Event()  # everything emitted so far is in the shared log
        self._shipped.set()

    @property
    def last_id(self) -> int:
        return self.dropped + len(self._window)

    def emit(self, event: RunEvent) -> int:
        """Number ``event``, keep it, and have it shipped; returns its id."""
        number = self.last_id + 1
        self._window.append(Numbered(number, event))
        self._emitted_at = self._loop.time()
        self._wake_all()
        self._shipped.clear()
        self._shipper.ship(self)
        return number

    async def read(self, after: int, wait_seconds: float) -> list[Numbered] | None:
        """Events numbered above ``after``, waiting up to ``wait_seconds`` for the first
        (an empty list if none came); None if some of them have left memory (the shared
        log has those)."""
        if self.last_id <= after and self.paused:
            return []
        if self.last_id <= after:
            waiter = self._loop.create_future()
            self._waiters.append(waiter)
            # One timer per run, not one per read: a run streaming tokens costs none.
            if self._quiet is None:
                self._quiet = self._loop.call_later(wait_seconds, self._on_quiet, wait_seconds)
            await waiter
            if self.last_id <= after:
                return []
        if after < self.dropped:
            return None
        return self._window[after - self.dropped :]

    def _on_quiet(self, seconds: float) -> None:
        """Readers waiting this long with no event get an empty answer (a look at the row)."""
        quiet_for = self._loop.time() - self._emitted_at
        if quiet_for < seconds and self._waiters:  # events came meanwhile: wait the rest
            self._quiet = self._loop.call_later(seconds - quiet_for, self._on_quiet, seconds)
            return
        self._quiet = None
        self._wake_all()

    def _wake_all(self) -> None:
        for waiter in self._waiters:
            if not waiter.done():
                waiter.set_result(None)
        self._waiters.clear()

    def unsent(self) -> LogBatch:
        events = self._window[self._unsent - 1 - self.dropped :]
        return LogBatch(
            self.name,
            [(e.event.type, e.event.data) for e in events],  # type: ignore[union-attr]
            self._unsent,
        )

    def shipped(self, batch: LogBatch) -> None:
        """The shared log has ``batch``: what it has may leave memory."""
        self._unsent = batch.first_id + len(batch.events)
        extra = min(len(self._window) - MEMORY_WINDOW, self._unsent - 1 - self.dropped)
        if extra > 0:
            del self._window[:extra]
            self.dropped += extra
        if self._unsent > self.last_id:
            self._shipped.set()

    async def pause(self) -> None:
        """The run now waits for a person, with no process: ship what it emitted (kept in
        the shared log until the run ends) and send its readers there."""
        try:
            async with asyncio.timeout(DRAIN_SECONDS):
                await self._shipped.wait()
        except TimeoutError:
            self._shipper.forget(self)
            log.warning("run events never reached the shared log", run_id=str(self.run_id))
        self.mark_paused()

    def mark_paused(self) -> None:
        self.paused = True
        self._wake_all()

    async def close(self, retention_seconds: int) -> None:
        """After the run's last event: ship what is left (for a while), then let the shared
        log expire after ``retention_seconds``."""
        try:
            async with asyncio.timeout(DRAIN_SECONDS):
                await self._shipped.wait()
        except TimeoutError:
            self._shipper.forget(self)
            lost = self.last_id - self._unsent + 1
            log.warning(
                "run events never reached the shared log", run_id=str(self.run_id), lost=lost
            )
            return
        try:
            await self._shipper.coordination.expire_log(self.name, retention_seconds)
        except CoordinationUnavailable:
            log.warning("run event log retention not set", run_id=str(self.run_id))


class EventShipper:
    """Ships the new events of every run of the process to the shared log, together."""

    def __init__(self, coordination: Coordination) -> None:
        self.coordination = coordination
        self._pending: dict[RunEventLog, None] = {}  # an ordered set
        self._shipping: asyncio.Task[None] | None = None

    def ship(self, run_log: RunEventLog) -> None:
        self._pending[run_log] = None
        if self._shipping is None or self._shipping.done():
            self._shipping = asyncio.create_task(self._ship(), name="run-events-shipper")

    def forget(self, run_log: RunEventLog) -> None:
        self._pending.pop(run_log, None)

    async def _ship(self) -> None:
        attempt = 0
        while self._pending:
            # Let a burst gather: one round trip per few milliseconds, not per token.
            await asyncio.sleep(FLUSH_LINGER_SECONDS if not attempt else _backoff(attempt))
            shipments = [(run_log, run_log.unsent()) for run_log in self._pending]
            self._pending.clear()
            try:
                await self.coordination.append_to_logs([batch for _, batch in shipments])
            except CoordinationUnavailable:
                attempt += 1
                if attempt == 1:
                    log.warning("run events not shipped yet; retrying", runs=len(shipments))
                # Sent again, with whatever they emitted meanwhile, ahead of newer runs.
                self._pending = dict.fromkeys([*(r for r, _ in shipments), *self._pending])
                continue
            attempt = 0
            for run_log, batch in shipments:
                run_log.shipped(batch)


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
