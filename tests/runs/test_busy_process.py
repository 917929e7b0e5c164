"""A busy process says so: it measures how late its loop runs (``/metrics``)."""

from __future__ import annotations

import asyncio
import time

from prometheus_client import CollectorRegistry, Gauge

from atelier.observability.lag import LoopLag


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
