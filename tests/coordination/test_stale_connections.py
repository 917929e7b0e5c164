"""Redis restarted under a running process: every pooled connection it held is dead. The
first command on each is sent again on a fresh connection, so none fails -- a run start
after a Redis restart is not a 503."""

from __future__ import annotations

import asyncio

from atelier.coordination.redis import RedisCoordination


async def test_stale_pooled_connections_are_replaced_not_surfaced(redis_server) -> None:
    coordination = RedisCoordination(redis_server.url)

    async def use(number: int) -> None:
        assert await coordination.acquire(f"lock:{number}", "token", 10_000)
        await coordination.append_events(f"log:{number}", [("run.started", "{}")])
        assert len(await coordination.read_events(f"log:{number}", 0, 0)) == 1
        assert await coordination.release(f"lock:{number}", "token")

    try:
        await asyncio.gather(*(use(n) for n in range(20)))  # 20 connections in the pool
        redis_server.stop()
        redis_server.start()  # empty, and every pooled connection is now closed
        await asyncio.gather(*(use(n) for n in range(20)))
    finally:
        await coordination.aclose()
