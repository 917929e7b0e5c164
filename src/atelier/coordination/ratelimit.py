"""Rate limiting that never silently switches off (BUG-021).

Decisions come from the shared backend; when it fails, an in-process limiter with the
same quotas decides instead, the fallback is logged and counted, and the shared backend
is retried after a short pause so a dead Redis does not add latency to every request.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import structlog

from atelier.coordination.base import Bucket, Coordination, CoordinationUnavailable, RateDecision
from atelier.coordination.memory import MemoryCoordination
from atelier.observability.metrics import Metrics

log = structlog.get_logger("atelier.ratelimit")


class RateLimiter:
    def __init__(
        self, shared: Coordination, metrics: Metrics, *, retry_shared_after: float = 2.0
    ) -> None:
        self.shared = shared
        self.metrics = metrics
        self.local = shared if isinstance(shared, MemoryCoordination) else MemoryCoordination()
        self.retry_shared_after = retry_shared_after
        self._shared_down_until = 0.0
        self._decision_counters: dict[tuple[str, str], Any] = {}

    async def check(self, buckets: Sequence[Bucket], cost: int) -> RateDecision:
        decision, limiter = await self._decide(buckets, cost)
        outcome = "allowed" if decision.allowed else "limited"
        counter = self._decision_counters.get((outcome, limiter))
        if counter is None:
            counter = self.metrics.rate_limit_decisions.labels(outcome, limiter)
            self._decision_counters[(outcome, limiter)] = counter
        counter.inc()
        return decision

    async def _decide(self, buckets: Sequence[Bucket], cost: int) -> tuple[RateDecision, str]:
        if self.shared is self.local:
            return await self.local.rate_limit(buckets, cost), self.local.name
        if time.monotonic() >= self._shared_down_until:
            try:
                return await self.shared.rate_limit(buckets, cost), self.shared.name
            except CoordinationUnavailable as exc:
                self._shared_down_until = time.monotonic() + self.retry_shared_after
                log.warning(
                    "rate limiter falling back to in-process limits",
                    backend=self.shared.name,
                    error=str(exc),
                    retry_in_seconds=self.retry_shared_after,
                )
        self.metrics.rate_limit_fallbacks.inc()
        return await self.local.rate_limit(buckets, cost), "fallback"
