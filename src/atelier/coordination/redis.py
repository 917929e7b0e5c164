"""Redis coordination: one client per app, created in the lifespan (BUG-012)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError

from atelier.coordination.base import (
    Bucket,
    CoordinationUnavailable,
    LogBatch,
    LogEvent,
    RateDecision,
    binding,
)

# GCRA over several buckets in one atomic script, on Redis's clock so every process agrees
# on "now": each bucket is charged only if none would go over. ARGV: cost, then interval
# and burst per key. Returns allowed, remaining, retry after, reset after, per key.
_GCRA = """
local cost = tonumber(ARGV[1])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
local out, tats, refused = {}, {}, false
for i, key in ipairs(KEYS) do
  local interval = tonumber(ARGV[2 * i])
  local tat = tonumber(redis.call('GET', key) or now)
  if tat < now then tat = now end
  local new_tat = tat + interval * cost
  local allow_at = new_tat - interval * tonumber(ARGV[2 * i + 1])
  if now < allow_at then
    refused = true
    for _, v in ipairs({0, 0, math.floor(allow_at - now) + 1, math.floor(tat - now)}) do
      out[#out + 1] = v
    end
  else
    tats[i] = new_tat
    for _, v in ipairs({1, math.floor((now - allow_at) / interval), 0, math.floor(new_tat - now)}) do
      out[#out + 1] = v
    end
  end
end
if not refused then
  for i, key in ipairs(KEYS) do
    redis.call('SET', key, tostring(tats[i]), 'PX', math.ceil(tats[i] - now))
  end
end
return out
"""


# Compare-and-delete / compare-and-extend: only the token's holder can release or renew.
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""
_EXTEND = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
"""
# Append numbered events to several logs in one call. Per log (KEYS[k]): its first id
# (0: after its last entry), how many events, then name, data pairs. Events numbered at or
# below a log's last entry are skipped: the log already has them (a retry of an append
# whose reply was lost). ARGV[1] caps each log. Returns each log's last number.
_APPEND = """
local cap, a, out = ARGV[1], 2, {}
for k = 1, #KEYS do
  local n, count = tonumber(ARGV[a]), tonumber(ARGV[a + 1])
  a = a + 2
  local last = 0
  local top = redis.call('XREVRANGE', KEYS[k], '+', '-', 'COUNT', 1)
  if #top > 0 then last = tonumber(string.match(top[1][1], '^(%d+)')) end
  if n == 0 then n = last + 1 end
  for i = 1, count do
    if n > last then
      redis.call('XADD', KEYS[k], 'MAXLEN', '~', cap, n .. '-0', 'name', ARGV[a], 'data', ARGV[a + 1])
    end
    n, a = n + 1, a + 2
  end
  out[k] = n - 1
end
return out
"""
EVENT_LOG_CAP = 100_000


def _still_wanted() -> None:
    """Re-raise a cancellation that redis-py swallowed: it sends every command under
    ``asyncio.wait_for``, which on Python 3.11 drops a cancel that arrives as the send
    completes (about 1 in 20 cancels of a busy caller, measured). The task would
    otherwise go on -- renewing a lease, waiting for the next message -- while its
    canceller waits for it."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


class RedisCoordination:
    name = "redis"

    def __init__(self, url: str, *, key_prefix: str = "atelier:") -> None:
        self.client: Redis = Redis.from_url(
            url,
            socket_connect_timeout=1.0,
            socket_timeout=2.0,
            health_check_interval=30,
            max_connections=1000,  # blocking XREADs of SSE followers each hold one
            # A pooled connection Redis closed (a restart, a failover, an idle timeout) is
            # found dead when it is used: reconnect and send the command once more, instead
            # of failing one request per stale connection. Only a closed connection is
            # retried, never a timeout (the command may have run).
            retry=Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,)),
        )
        self._prefix = key_prefix
        self._gcra = self.client.register_script(_GCRA)
        self._release = self.client.register_script(_RELEASE)
        self._extend = self.client.register_script(_EXTEND)
        self._append = self.client.register_script(_APPEND)

    async def ping(self) -> None:
        async with self._errors():
            await self.client.ping()

    async def rate_limit(self, buckets: Sequence[Bucket], cost: int) -> RateDecision:
        args: list[float | int] = [cost]
        for _, quota in buckets:
            args += (quota.interval_ms, quota.burst)
        async with self._errors():
            reply = await self._gcra(
                keys=[f"{self._prefix}rl:{key}" for key, _ in buckets], args=args
            )
        return binding(
            [
                RateDecision(
                    allowed=bool(reply[4 * i]),
                    limit=quota.burst,
                    remaining=int(reply[4 * i + 1]),
                    retry_after_ms=int(reply[4 * i + 2]),
                    reset_after_ms=int(reply[4 * i + 3]),
                )
                for i, (_, quota) in enumerate(buckets)
            ]
        )

    async def acquire(self, key: str, token: str, ttl_ms: int) -> bool:
        async with self._errors():
            return bool(await self.client.set(self._key(key), token, nx=True, px=ttl_ms))

    async def extend(self, key: str, token: str, ttl_ms: int) -> bool:
        async with self._errors():
            return bool(await self._extend(keys=[self._key(key)], args=[token, ttl_ms]))

    async def release(self, key: str, token: str) -> bool:
        async with self._errors():
            return bool(await self._release(keys=[self._key(key)], args=[token]))

    async def lease_ttl_ms(self, key: str) -> int:
        async with self._errors():
            return max(int(await self.client.pttl(self._key(key))), 0)

    async def append_events(
        self, log: str, events: Sequence[tuple[str, str]], first_id: int | None = None
    ) -> int:
        (last,) = await self._append_to([LogBatch(log, list(events), first_id or 0)])
        return last

    async def append_to_logs(self, batches: Sequence[LogBatch]) -> None:
        # One script for every log of the process: a pipeline of one call per log cost
        # 2.4x the CPU (bench/paced_runs.py ships 200 runs' events 20 times a second).
        await self._append_to(batches)

    async def _append_to(self, batches: Sequence[LogBatch]) -> list[int]:
        args: list[str | int] = [EVENT_LOG_CAP]
        for batch in batches:
            args += (batch.first_id, len(batch.events))
            for name, data in batch.events:
                args += (name, data)
        async with self._errors():
            reply = await self._append(keys=[self._key(f"log:{b.log}") for b in batches], args=args)
        return [int(last) for last in reply]

    async def read_events(self, log: str, after: int, wait_ms: int) -> list[LogEvent]:
        async with self._errors():
            reply: Any = await self.client.xread(
                {self._key(f"log:{log}"): f"{after}-0"}, block=wait_ms or None
            )
        events = []
        for _, entries in reply or ():
            for entry_id, fields in entries:
                number = int(entry_id.split(b"-")[0])
                events.append(LogEvent(number, fields[b"name"].decode(), fields[b"data"].decode()))
        return events

    async def expire_log(self, log: str, seconds: int) -> None:
        async with self._errors():
            await self.client.expire(self._key(f"log:{log}"), seconds)

    async def publish(self, channel: str, message: str) -> None:
        async with self._errors():
            await self.client.publish(self._key(f"signal:{channel}"), message)

    async def subscribe(self, channel: str) -> AsyncIterator[str]:
        pubsub = self.client.pubsub(ignore_subscribe_messages=True)
        try:
            async with self._errors():
                await pubsub.subscribe(self._key(f"signal:{channel}"))
            while True:
                async with self._errors():
                    # Below the socket timeout, so a quiet channel is not an error.
                    message = await pubsub.get_message(timeout=1.0)
                if message is not None:
                    yield message["data"].decode()
        finally:
            # aclose() alone can wait forever for the socket to finish closing
            # (redis/redis-py#3941): drop the connection first, and bound the rest.
            if pubsub.connection is not None:
                await pubsub.connection.disconnect(nowait=True)
            with contextlib.suppress(TimeoutError, RedisError, OSError):
                async with asyncio.timeout(2):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]

    def _key(self, key: str) -> str:
        return f"{self._prefix}{key}"

    @contextlib.asynccontextmanager
    async def _errors(self) -> AsyncIterator[None]:
        try:
            yield
        except (RedisError, OSError) as exc:
            raise CoordinationUnavailable(str(exc)) from exc
        _still_wanted()

    async def aclose(self) -> None:
        await self.client.aclose()
