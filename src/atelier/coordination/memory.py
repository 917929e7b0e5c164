"""In-process coordination for the embedded mode (and the rate-limit fallback)."""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Sequence

from atelier.coordination.base import (
    Bucket,
    LogBatch,
    LogEvent,
    RateDecision,
    binding,
    gcra,
)


class MemoryCoordination:
    name = "memory"

    def __init__(self, max_rate_keys: int = 100_000) -> None:
        # key -> theoretical arrival time (ms); LRU-bounded so hostile keys cannot grow it.
        self._tats: OrderedDict[str, float] = OrderedDict()
        self._max_rate_keys = max_rate_keys
        self._leases: dict[str, tuple[str, float]] = {}  # key -> (token, expires at)
        self._logs: dict[str, list[LogEvent]] = {}
        self._log_expiry: dict[str, float] = {}
        self._appended = asyncio.Condition()
        self._subscribers: dict[str, set[asyncio.Queue[str]]] = {}

    async def ping(self) -> None:
        return None

    async def rate_limit(self, buckets: Sequence[Bucket], cost: int) -> RateDecision:
        now_ms = time.monotonic() * 1000
        taken = [gcra(self._tats.get(key), now_ms, quota, cost) for key, quota in buckets]
        decisions = [decision for decision, _ in taken]
        if all(decision.allowed for decision in decisions):
            for (key, _), (_, tat) in zip(buckets, taken, strict=True):
                self._tats[key] = tat
                self._tats.move_to_end(key)
        while len(self._tats) > self._max_rate_keys:
            self._tats.popitem(last=False)
        return binding(decisions)

    def _holder(self, key: str) -> str | None:
        lease = self._leases.get(key)
        if lease is None or lease[1] <= time.monotonic():
            self._leases.pop(key, None)
            return None
        return lease[0]

    async def acquire(self, key: str, token: str, ttl_ms: int) -> bool:
        if self._holder(key) is not None:
            return False
        self._leases[key] = (token, time.monotonic() + ttl_ms / 1000)
        return True

    async def extend(self, key: str, token: str, ttl_ms: int) -> bool:
        if self._holder(key) != token:
            return False
        self._leases[key] = (token, time.monotonic() + ttl_ms / 1000)
        return True

    async def release(self, key: str, token: str) -> bool:
        if self._holder(key) != token:
            return False
        del self._leases[key]
        return True

    async def lease_ttl_ms(self, key: str) -> int:
        if self._holder(key) is None:
            return 0
        return max(int((self._leases[key][1] - time.monotonic()) * 1000), 1)

    def _drop_expired_logs(self) -> None:
        now = time.monotonic()
        for log in [log for log, at in self._log_expiry.items() if at <= now]:
            self._logs.pop(log, None)
            del self._log_expiry[log]

    async def append_events(
        self, log: str, events: Sequence[tuple[str, str]], first_id: int | None = None
    ) -> int:
        self._drop_expired_logs()
        stored = self._logs.setdefault(log, [])
        last = stored[-1].id if stored else 0
        number = first_id or last + 1
        for offset, (name, data) in enumerate(events):
            if number + offset > last:
                stored.append(LogEvent(id=number + offset, name=name, data=data))
        async with self._appended:
            self._appended.notify_all()
        return number + len(events) - 1

    async def append_to_logs(self, batches: Sequence[LogBatch]) -> None:
        for batch in batches:
            await self.append_events(batch.log, batch.events, batch.first_id)

    async def read_events(self, log: str, after: int, wait_ms: int) -> list[LogEvent]:
        deadline = time.monotonic() + wait_ms / 1000
        async with self._appended:
            while not (events := self._logs.get(log)) or events[-1].id <= after:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return []
                try:
                    await asyncio.wait_for(self._appended.wait(), remaining)
                except TimeoutError:
                    return []
        return [event for event in self._logs[log] if event.id > after]

    async def expire_log(self, log: str, seconds: int) -> None:
        self._log_expiry[log] = time.monotonic() + seconds

    async def publish(self, channel: str, message: str) -> None:
        for queue in self._subscribers.get(channel, ()):
            queue.put_nowait(message)

    async def subscribe(self, channel: str) -> AsyncIterator[str]:
        queue: asyncio.Queue[str] = asyncio.Queue()
        self._subscribers.setdefault(channel, set()).add(queue)
        try:
            while True:
                yield await queue.get()
        finally:
            self._subscribers[channel].discard(queue)

    async def aclose(self) -> None:
        self._tats.clear()
