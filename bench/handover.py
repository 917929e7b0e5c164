"""The cost of a queued run's hand-over: from one run's terminal event to the next run's
first event, when the next was queued with ``multitask_strategy: "enqueue"`` -- side by
side, in one run, with a client that waits for the end and then starts the next run
itself (the best a frontend can do without a queue).

One Atelier process (PostgreSQL + Redis) pinned to one core; ROUNDS conversations, each
with a short run and a second one. Target: the hand-over's p50 within 20 ms.
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).parent.parent))

from bench._sse import post_for_stream
from bench.runs import deployed

ROUNDS = 30
TERMINAL = (b"run.completed", b"run.failed", b"run.cancelled", b"run.timed_out")


async def stream(port: int, path: str, headers: dict[str, str], body: dict) -> dict[bytes, float]:
    """POST ``body`` for an event stream; when (perf_counter) each event name first came."""
    reader, writer = await post_for_stream(port, path, headers, body)
    seen: dict[bytes, float] = {}
    try:
        while line := await reader.readline():
            if line.startswith(b"event: "):
                name = line[7:].strip()
                seen.setdefault(name, time.perf_counter())
                if name in TERMINAL:
                    break
    finally:
        writer.close()
    return seen


def ended(seen: dict[bytes, float]) -> float:
    return min(seen[name] for name in TERMINAL if name in seen)


async def rounds(port: int, headers: dict[str, str], queued: bool) -> list[float]:
    gaps = []
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", headers=headers) as http:
        for _ in range(ROUNDS):
            made = await http.post("/v1/conversations", json={})
            path = f"/v1/conversations/{made.json()['id']}/runs"
            first = asyncio.create_task(stream(port, path, headers, {"input": "one two three"}))
            if queued:
                await asyncio.sleep(0.005)  # the first is running
                second = await stream(
                    port, path, headers, {"input": "next", "multitask_strategy": "enqueue"}
                )
                if b"run.started" not in second:
                    raise RuntimeError(f"no run.started: {second}")
                gaps.append(second[b"run.started"] - ended(await first))
            else:
                end = ended(await first)
                second = await stream(port, path, headers, {"input": "next"})
                gaps.append(second[b"run.started"] - end)
    return gaps


def main() -> None:
    with deployed("handover") as (port, headers):
        asyncio.run(rounds(port, headers, queued=True))  # warm up
        queued = asyncio.run(rounds(port, headers, queued=True))
        waited = asyncio.run(rounds(port, headers, queued=False))
    q50, w50 = statistics.median(queued) * 1000, statistics.median(waited) * 1000
    q95 = statistics.quantiles(queued, n=20)[-1] * 1000
    w95 = statistics.quantiles(waited, n=20)[-1] * 1000
    print(f"hand-over, {ROUNDS} conversations, one process on one core")
    print(f"  enqueued          : p50 {q50:6.1f} ms  p95 {q95:6.1f} ms  (target p50 <= 20 ms)")
    print(f"  client waits, then: p50 {w50:6.1f} ms  p95 {w95:6.1f} ms")
    print(f"  ratio (enqueued / client waits): p50 {q50 / w50:.2f}")


if __name__ == "__main__":
    main()
