"""Load: 200 concurrent SSE clients for 60 s against one server process (PostgreSQL +
Redis, the offline model at 20 tokens/s), loopback only, bounded in time and count.

Each client starts a long run on its own conversation and reads its stream. Prints
errors (must be zero), p50/p99 of the gaps between events (the model emits every 50 ms),
and the server's RSS before, at the peak and after the runs ended (it must come back to
its baseline).
"""

from __future__ import annotations

import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx
import psutil

sys.path.insert(0, str(Path(__file__).parent.parent))
from bench.edge import free_port
from bench.runs import drop, prepare, wait_ready

CLIENTS = int(os.environ.get("ATELIER_LOAD_CLIENTS", "200"))
SECONDS = float(os.environ.get("ATELIER_LOAD_SECONDS", "60"))
TOKEN_DELAY = 0.05
# Long enough to outlast the window: the offline model echoes the input word by word.
PROMPT = " ".join(["word"] * int(SECONDS / TOKEN_DELAY + 200))
WARM_SECONDS = 10.0
RSS_TOLERANCE = 1.10  # "back to baseline": within 10% of it


async def client(
    port: int, key: str, conversation: str, stop_at: float, gaps: list[float]
) -> str | None:
    """Stream one run until ``stop_at``; returns an error description, or None."""
    body = (f'{{"input": "{PROMPT}"}}').encode()
    request = (
        f"POST /v1/conversations/{conversation}/runs HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Authorization: Bearer {key}\r\nX-User-ID: load\r\nAccept: text/event-stream\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request)
        head = await reader.readuntil(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.1 200"):
            return head.split(b"\r\n", 1)[0].decode()
        last, tail = None, b""
        while (now := time.perf_counter()) < stop_at:
            try:
                data = await asyncio.wait_for(reader.read(65536), stop_at - now)
            except TimeoutError:
                break
            if not data:
                return "the server closed the stream early"
            events = (tail + data).count(b"\n\n")
            tail = data[-1:]
            if events:
                arrived = time.perf_counter()
                if last is not None:
                    gaps.append(arrived - last)
                    gaps.extend([0.0] * (events - 1))
                last = arrived
        return None
    except (OSError, asyncio.IncompleteReadError) as exc:
        return repr(exc)
    finally:
        writer.close()


async def load(api: str, port: int, key: str, server: psutil.Process) -> None:
    headers = {"Authorization": f"Bearer {key}", "X-User-ID": "load"}
    mib = 1024 * 1024
    async with httpx.AsyncClient(base_url=api, timeout=60) as http:
        conversations = [
            (await http.post("/v1/conversations", json={"title": "load"}, headers=headers)).json()[
                "id"
            ]
            for _ in range(CLIENTS)
        ]

        async def round_of(seconds: float) -> tuple[list[str], list[float], int]:
            gaps: list[float] = []
            peak = server.memory_info().rss
            stop_at = time.perf_counter() + seconds

            async def sample() -> None:
                nonlocal peak
                while time.perf_counter() < stop_at:
                    peak = max(peak, server.memory_info().rss)
                    await asyncio.sleep(1)

            sampler = asyncio.create_task(sample())
            outcomes = await asyncio.gather(
                *(client(port, key, c, stop_at, gaps) for c in conversations)
            )
            await sampler
            # The runs go on without their clients: stop them and let the server settle.
            for conversation in conversations:
                listing = await http.get(f"/v1/conversations/{conversation}/runs", headers=headers)
                for run in listing.json()["data"]:
                    if run["status"] in ("queued", "running"):
                        await http.post(
                            f"/v1/conversations/{conversation}/runs/{run['id']}/cancel",
                            headers=headers,
                        )
            deadline = time.monotonic() + 60
            while "atelier_runs_active 0.0" not in (await http.get("/metrics")).text:
                assert time.monotonic() < deadline, "runs did not end"
                await asyncio.sleep(0.5)
            await asyncio.sleep(3)
            return [e for e in outcomes if e is not None], gaps, peak

        # A first, short round touches everything a run needs once: what the allocator
        # keeps from it is a high-water mark, not growth. The baseline is taken after it.
        cold = server.memory_info().rss
        warm_failures, _, _ = await round_of(WARM_SECONDS)
        baseline = server.memory_info().rss
        failures, gaps, peak = await round_of(SECONDS)
        after = server.memory_info().rss
    gaps.sort()
    print(f"{CLIENTS} SSE clients x {SECONDS:.0f} s, one process, PostgreSQL + Redis")
    print(f"  errors: {len(failures)}" + (f" (first: {failures[0]})" if failures else ""))
    print(f"  events received: {len(gaps) + CLIENTS} ({(len(gaps) + CLIENTS) / SECONDS:.0f}/s)")
    print(
        f"  gap between events: p50 {statistics.median(gaps) * 1000:.1f} ms, "
        f"p99 {gaps[int(len(gaps) * 0.99)] * 1000:.1f} ms (model emits every "
        f"{TOKEN_DELAY * 1000:.0f} ms)"
    )
    print(
        f"  server RSS: {cold / mib:.0f} MiB cold, {baseline / mib:.0f} MiB after a "
        f"{WARM_SECONDS:.0f} s warm-up round; {peak / mib:.0f} MiB peak, {after / mib:.0f} MiB "
        f"after ({after / baseline:.2f}x baseline)"
    )
    assert not warm_failures, warm_failures[:3]
    assert not failures, failures[:3]
    assert after <= baseline * RSS_TOLERANCE, "memory did not come back to its baseline"


def main() -> None:
    database = f"atelier_load_{uuid.uuid4().hex[:8]}"
    with tempfile.TemporaryDirectory() as workdir:
        env, key = prepare(database, workdir)
        env["ATELIER_OFFLINE_MODEL_DELAY_SECONDS"] = str(TOKEN_DELAY)
        port = free_port()
        process = subprocess.Popen(
            [sys.executable, "-m", "atelier.cli", "serve", "--port", str(port)], env=env
        )
        try:
            api = f"http://127.0.0.1:{port}"
            wait_ready(api)
            asyncio.run(load(api, port, key, psutil.Process(process.pid)))
        finally:
            process.terminate()
            process.wait(60)
            drop(database)


if __name__ == "__main__":
    main()
