"""A running run's idle guard: no model or tool progress for too long stops it. (Its
heartbeat is the process's: ``heartbeats.py``.)"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING

import structlog

from atelier.runs.outcome import StopReason

if TYPE_CHECKING:
    from atelier.runs.environment import RunEnvironment

log = structlog.get_logger("atelier.runs")


class Watchdogs:
    def __init__(
        self, env: RunEnvironment, run_id: uuid.UUID, stop: Callable[[StopReason], None]
    ) -> None:
        self.env = env
        self.run_id = run_id
        self.stop = stop
        self._loop = asyncio.get_running_loop()
        self._last_progress: float | None = None  # loop time; None until the agent starts

    def progress(self) -> None:
        self._last_progress = self._loop.time()

    async def watch_idle(self) -> None:
        """Stop the work once neither the model nor a tool made progress for too long.

        A watchdog rather than a timer moved on every token: progress costs one store.
        """
        idle = self.env.settings.run_idle_timeout_seconds
        while True:
            if self._last_progress is None:
                await asyncio.sleep(idle / 4)
                continue
            quiet = self._loop.time() - self._last_progress
            if quiet >= idle:
                self.stop("idle")
                return
            await asyncio.sleep(idle - quiet)
