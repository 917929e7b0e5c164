"""Redis coordination: one client per app, created in the lifespan (BUG-012)."""

from __future__ import annotations

from redis.asyncio import Redis
from redis.exceptions import RedisError

from atelier.coordination.base import CoordinationUnavailable, Quota, RateDecision

# GCRA in one atomic script, on Redis's clock so every process agrees on "now".
_GCRA = """
local interval = tonumber(ARGV[1])
local burst_offset = interval * tonumber(ARGV[2])
local cost = tonumber(ARGV[3])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local new_tat = tat + interval * cost
local allow_at = new_tat - burst_offset
if now < allow_at then
  return {0, 0, math.floor(allow_at - now) + 1, math.floor(tat - now)}
end
redis.call('SET', KEYS[1], tostring(new_tat), 'PX', math.ceil(new_tat - now))
return {1, math.floor((now - allow_at) / interval), 0, math.floor(new_tat - now)}
"""


class RedisCoordination:
    name = "redis"

    def __init__(self, url: str, *, key_prefix: str = "atelier:") -> None:
        self.client: Redis = Redis.from_url(
            url,
            socket_connect_timeout=1.0,
            socket_timeout=2.0,
            health_check_interval=30,
            max_connections=200,
        )
        self._prefix = key_prefix
        self._gcra = self.client.register_script(_GCRA)

    async def ping(self) -> None:
        try:
            await self.client.ping()
        except (RedisError, OSError) as exc:
            raise CoordinationUnavailable(str(exc)) from exc

    async def rate_limit(self, key: str, quota: Quota, cost: int) -> RateDecision:
        try:
            allowed, remaining, retry_ms, reset_ms = await self._gcra(
                keys=[f"{self._prefix}rl:{key}"],
                args=[quota.interval_ms, quota.burst, cost],
            )
        except (RedisError, OSError) as exc:
            raise CoordinationUnavailable(str(exc)) from exc
        return RateDecision(
            allowed=bool(allowed),
            limit=quota.burst,
            remaining=int(remaining),
            retry_after_ms=int(retry_ms),
            reset_after_ms=int(reset_ms),
        )

    async def aclose(self) -> None:
        await self.client.aclose()
