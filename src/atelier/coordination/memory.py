"""In-process coordination for the embedded mode (and the rate-limit fallback)."""

from __future__ import annotations

import time
from collections import OrderedDict

from atelier.coordination.base import Quota, RateDecision, gcra


class MemoryCoordination:
    name = "memory"

    def __init__(self, max_rate_keys: int = 100_000) -> None:
        # key -> theoretical arrival time (ms); LRU-bounded so hostile keys cannot grow it.
        self._tats: OrderedDict[str, float] = OrderedDict()
        self._max_rate_keys = max_rate_keys

    async def ping(self) -> None:
        return None

    async def rate_limit(self, key: str, quota: Quota, cost: int) -> RateDecision:
        now_ms = time.monotonic() * 1000
        decision, tat = gcra(self._tats.get(key), now_ms, quota, cost)
        self._tats[key] = tat
        self._tats.move_to_end(key)
        while len(self._tats) > self._max_rate_keys:
            self._tats.popitem(last=False)
        return decision

    async def aclose(self) -> None:
        self._tats.clear()
