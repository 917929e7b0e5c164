"""A busy process: it measures how late its loop runs (``/metrics``), and its followers
write each stream a few events at a time instead of one write per token."""

from __future__ import annotations

import asyncio
import time
import uuid

from prometheus_client import CollectorRegistry, Gauge

from atelier.coordination.memory import MemoryCoordination
from atelier.observability.lag import LoopLag
from atelier.runs.events import MessageDelta, RunCompleted
from atelier.runs.follow import coalescing, follow_local
from atelier.runs.log import EventShipper, RunEventLog


async def test_the_loops_lag_rises_at_once_and_falls_back() -> None:
    lag, gauge = LoopLag(), Gauge("lag", "", registry=CollectorRegistry())
    watching = asyncio.create_task(lag.watch(gauge))
    try:
        await asyncio.sleep(0.12)
        time.sleep(0.3)  # a callback that holds the loop
        await asyncio.sleep(0.01)  # the probe wakes 0.25 s late or more
        assert lag.seconds >= 0.2
        assert gauge._value.get() == lag.seconds  # type: ignore[attr-defined]
        await asyncio.sleep(1.0)
        assert lag.seconds < 0.05
    finally:
        watching.cancel()


async def test_the_lag_is_on_metrics(app, client) -> None:
    metrics = (await client.get("/metrics")).text
    assert "atelier_event_loop_lag_seconds " in metrics


async def followed(lag_seconds: float) -> tuple[int, list[int]]:
    """40 deltas emitted 2 ms apart, followed with a loop that lags ``lag_seconds``: how
    many events the follower got, and how many in each write."""
    run_id = uuid.uuid4()
    run_log = RunEventLog(EventShipper(MemoryCoordination()), run_id)
    lag = LoopLag()
    lag.seconds = lag_seconds
    writes: list[int] = []

    async def follow() -> None:
        async for batch in follow_local(run_log, None, None, 0, coalescing(lag)):  # type: ignore[arg-type]
            writes.append(len(batch))

    following = asyncio.create_task(follow())
    for _ in range(40):
        run_log.emit(MessageDelta(text="a"))
        await asyncio.sleep(0.002)
    run_log.emit(RunCompleted(run_id=str(run_id)))
    await asyncio.wait_for(following, 5)
    return sum(writes), writes


async def test_a_quiet_process_writes_each_token_as_it_comes() -> None:
    events, writes = await followed(0.0)
    assert events == 41
    assert len(writes) >= 30  # a token every 2 ms, a write for (nearly) each


async def test_a_busy_process_writes_a_few_events_at_a_time() -> None:
    events, writes = await followed(1.0)  # coalesces for its longest: 50 ms
    assert events == 41
    assert len(writes) <= 12
