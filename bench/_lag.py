"""A loop-lag probe: how late does a 5 ms sleep wake up while the code under test runs?

A sampling thread records what the event loop's thread was doing, so a failing test
names the code that stalled the loop instead of only the number.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import sys
import threading
import time
from types import TracebackType

TICK = 0.005


class LoopLagProbe:
    def __init__(self) -> None:
        self.max_lag = 0.0
        self.samples = 0
        self._worst: tuple[float, float] = (0.0, 0.0)
        self._task: asyncio.Task[None] | None = None
        self._stacks: collections.deque[tuple[float, tuple[str, ...]]] = collections.deque(
            maxlen=500_000
        )
        self._sampling = False

    async def _run(self) -> None:
        while True:
            started = time.perf_counter()
            await asyncio.sleep(TICK)
            woke = time.perf_counter()
            lag = woke - started - TICK
            if lag > self.max_lag:
                self.max_lag, self._worst = lag, (started, woke)
            self.samples += 1

    def _sample(self, thread_id: int) -> None:
        # Kept cheap (code objects and line numbers, formatted only on failure): the
        # sampler holds the GIL while it samples and must not become the stall it measures.
        while self._sampling:
            frame = sys._current_frames().get(thread_id)
            stack = []
            while frame is not None and len(stack) < 25:
                stack.append((frame.f_code, frame.f_lineno))
                frame = frame.f_back
            self._stacks.append((time.perf_counter(), tuple(stack)))
            time.sleep(0.002)

    @property
    def culprit(self) -> str:
        start, end = self._worst
        during = collections.Counter(s for t, s in self._stacks if start <= t <= end)
        if not during:
            return "(no sample)"
        stack, count = during.most_common(1)[0]
        lines = [
            f"{code.co_filename.rsplit('/', 2)[-1]}:{line} {code.co_name}"  # type: ignore[attr-defined]
            for code, line in stack
        ]
        return f"{count} samples in:\n  " + "\n  ".join(lines)

    async def __aenter__(self) -> LoopLagProbe:
        self._sampling = True
        threading.Thread(target=self._sample, args=(threading.get_ident(),), daemon=True).start()
        self._task = asyncio.create_task(self._run())
        await asyncio.sleep(0)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._sampling = False
        assert self._task is not None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
