"""All background work of a process, started in one place.

Work (runs, titles) is kept referenced until it finishes (an unreferenced task can be
garbage collected mid-flight) and is given a grace period at shutdown, then cancelled.
Daemons (listeners, reapers, sweeps) run until shutdown, which cancels them at once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

import structlog

T = TypeVar("T")
log = structlog.get_logger("atelier.supervisor")


class Supervisor:
    def __init__(self) -> None:
        self.tasks: set[asyncio.Task[Any]] = set()
        self.daemons: set[asyncio.Task[Any]] = set()

    def spawn(self, coroutine: Coroutine[Any, Any, T], name: str) -> asyncio.Task[T]:
        task = asyncio.create_task(coroutine, name=name)
        self.tasks.add(task)
        task.add_done_callback(self._finished)
        return task

    def daemon(self, coroutine: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
        task = asyncio.create_task(coroutine, name=name)
        self.daemons.add(task)
        task.add_done_callback(self._finished)
        return task

    def _finished(self, task: asyncio.Task[Any]) -> None:
        self.tasks.discard(task)
        self.daemons.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("background task failed", task=task.get_name(), error=repr(task.exception()))

    async def shutdown(self, grace_seconds: float) -> None:
        for daemon in list(self.daemons):
            daemon.cancel()
        await asyncio.gather(*self.daemons, return_exceptions=True)
        if not self.tasks:
            return
        _, pending = await asyncio.wait(set(self.tasks), timeout=grace_seconds)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending, timeout=10)  # cancelled runs still save


async def finish(work: Coroutine[Any, Any, T]) -> T:
    """Run ``work`` to its end even if the caller is cancelled meanwhile (the cancel is
    taken as handled: the caller goes on as if it had not come)."""
    task = asyncio.ensure_future(work)
    while not task.done():
        try:
            await asyncio.wait({task})
        except asyncio.CancelledError:
            absorbed()
    return task.result()


def absorbed() -> None:
    """Mark the cancel the current task just caught as handled: code that asks whether
    its task is being cancelled (``Task.cancelling``) must not see it again."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        task.uncancel()
