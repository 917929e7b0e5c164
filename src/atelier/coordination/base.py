"""The coordination port: what processes of one deployment share.

Redis in production (``redis.py``), a single process's memory when embedded
(``memory.py``): rate limits, leases (the conversation lock), run event logs and
signals (a run's cancel request reaches whichever process executes it).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class Quota:
    """``burst`` requests at once, refilled at ``per_minute``; a request may cost more than 1."""

    per_minute: int
    burst: int

    @property
    def interval_ms(self) -> float:
        return 60_000 / self.per_minute


@dataclass(frozen=True)
class RateDecision:
    allowed: bool
    limit: int
    remaining: int
    retry_after_ms: int
    reset_after_ms: int


def gcra(
    tat_ms: float | None, now_ms: float, quota: Quota, cost: int
) -> tuple[RateDecision, float]:
    """Generic cell rate algorithm; returns the decision and the new theoretical arrival time.

    The Redis adapter runs the same arithmetic in one Lua script.
    """
    tat = max(tat_ms if tat_ms is not None else now_ms, now_ms)
    burst_offset = quota.interval_ms * quota.burst
    new_tat = tat + quota.interval_ms * cost
    allow_at = new_tat - burst_offset
    if now_ms < allow_at:
        decision = RateDecision(
            allowed=False,
            limit=quota.burst,
            remaining=0,
            retry_after_ms=int(allow_at - now_ms) + 1,
            reset_after_ms=int(tat - now_ms),
        )
        return decision, tat
    decision = RateDecision(
        allowed=True,
        limit=quota.burst,
        remaining=int((now_ms - allow_at) // quota.interval_ms),
        retry_after_ms=0,
        reset_after_ms=int(new_tat - now_ms),
    )
    return decision, new_tat


Bucket = tuple[str, Quota]  # a key and the quota it is held to


def binding(decisions: Sequence[RateDecision]) -> RateDecision:
    """Several buckets charged together: refused if any refuses (after the longest wait),
    else the one with the least left is the one the caller is told about."""
    refused = [d for d in decisions if not d.allowed]
    if refused:
        return max(refused, key=lambda d: d.retry_after_ms)
    return min(decisions, key=lambda d: (d.remaining, -d.reset_after_ms))


class CoordinationUnavailable(Exception):
    """The shared coordination backend could not be reached."""


@dataclass(frozen=True)
class LogEvent:
    """One numbered event of a run's event log (ids 1, 2, 3... per run)."""

    id: int
    name: str
    data: str  # JSON


@dataclass(frozen=True)
class LogBatch:
    """Events for one log, numbered from ``first_id``."""

    log: str
    events: list[tuple[str, str]]  # (name, json)
    first_id: int


class Coordination(Protocol):
    name: str

    async def ping(self) -> None:
        """Raise ``CoordinationUnavailable`` if the backend does not answer."""

    async def rate_limit(self, buckets: Sequence[Bucket], cost: int) -> RateDecision:
        """Charge ``cost`` to every bucket, or to none if any would go over (one atomic
        step); raise ``CoordinationUnavailable`` if it cannot decide."""

    # Leases: a key held by whoever knows its token, until it expires.
    async def acquire(self, key: str, token: str, ttl_ms: int) -> bool:
        """Take ``key`` for ``ttl_ms`` unless someone holds it."""

    async def extend(self, key: str, token: str, ttl_ms: int) -> bool:
        """Renew the lease only if ``token`` still holds it."""

    async def release(self, key: str, token: str) -> bool:
        """Free the lease only if ``token`` holds it; a wrong token frees nothing."""

    async def lease_ttl_ms(self, key: str) -> int:
        """How long until the current holder's lease runs out (0 if free)."""

    # Event logs: append-only, numbered, readable from anywhere, kept for a while after.
    async def append_events(
        self, log: str, events: Sequence[tuple[str, str]], first_id: int | None = None
    ) -> int:
        """Append ``(name, json)`` events numbered from ``first_id`` (default: after the
        last one); return the last number. Numbers only grow: events numbered at or below
        the log's last one are skipped (a retried append whose reply was lost; a log has
        one writer), never stored twice or out of order."""

    async def append_to_logs(self, batches: Sequence[LogBatch]) -> None:
        """``append_events`` for several logs, in one round trip."""

    async def read_events(self, log: str, after: int, wait_ms: int) -> list[LogEvent]:
        """Events numbered above ``after``; waits up to ``wait_ms`` for the first if none."""

    async def expire_log(self, log: str, seconds: int) -> None:
        """Keep the log for ``seconds`` more, then drop it (after its run ended)."""

    # Signals: fire-and-forget messages to every process listening on a channel.
    async def publish(self, channel: str, message: str) -> None:
        """Send ``message`` to the channel's current subscribers."""

    def subscribe(self, channel: str) -> AsyncIterator[str]:
        """Messages published on ``channel`` from now on, until the iterator is closed."""
        ...

    async def aclose(self) -> None: ...
