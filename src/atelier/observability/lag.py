"""How late the event loop runs what is due: the one figure that says a process has all
the work it can take (every await of every request and run waits that much longer).

A probe sleeps ``PROBE_SECONDS`` and measures how much later it woke. The estimate rises
at once with a late wake and falls back gradually, so a busy second is not forgotten
between two quiet probes.
"""

from __future__ import annotations

import asyncio

from prometheus_client import Gauge

PROBE_SECONDS = 0.05
FALL = 0.7  # the share of the estimate a probe on time keeps


class LoopLag:
    def __init__(self) -> None:
        self.seconds = 0.0

    async def watch(self, gauge: Gauge) -> None:
        loop = asyncio.get_running_loop()
        while True:
            started = loop.time()
            await asyncio.sleep(PROBE_SECONDS)
            late = max(loop.time() - started - PROBE_SECONDS, 0.0)
            self.seconds = late if late > self.seconds else self.seconds * FALL + late * (1 - FALL)
            gauge.set(self.seconds)
