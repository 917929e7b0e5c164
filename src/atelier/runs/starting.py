"""How many runs one process takes on, and how a burst of starts is let in.

A process that takes every run it is asked for falls behind all of them at once: a
reconnect storm after a deploy (hundreds of ``POST``s within milliseconds) would give
every stream its first event seconds late and every model's tokens late after that. So
at most ``max_starting_runs`` runs are opened at once, the others wait in line in order
of arrival, and a start that would wait longer than ``run_start_wait_seconds`` -- or that
comes while the process executes ``max_active_runs`` -- is refused at once with ``503``
and ``Retry-After``: a clear answer a client (or a load balancer) acts on, in bounded time.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import NoReturn

from atelier.errors import Unavailable
from atelier.observability.metrics import Metrics
from atelier.settings import Settings


class StartGate:
    def __init__(self, settings: Settings, metrics: Metrics) -> None:
        self.max_active = settings.max_active_runs
        self.wait_seconds = settings.run_start_wait_seconds
        self.metrics = metrics
        self._opening = asyncio.Semaphore(settings.max_starting_runs)  # first come, first in

    @contextlib.asynccontextmanager
    async def admitted(self, active: int) -> AsyncIterator[None]:
        """Open one run within; ``active``: the runs the process executes now."""
        if active >= self.max_active:
            self.refused(
                "at_capacity",
                f"this server runs {self.max_active} runs at once, its limit; retry shortly",
            )
        try:
            async with asyncio.timeout(self.wait_seconds):
                await self._opening.acquire()
        except TimeoutError:
            self.refused("server_busy", "too many runs are starting at once; retry shortly")
        try:
            yield
        finally:
            self._opening.release()

    def refused(self, code: str, detail: str) -> NoReturn:
        self.metrics.run_starts_refused.labels(code).inc()
        raise Unavailable(code, detail, retry_after=1)
