"""Many paced runs on one process: does every stream end, and does the process keep the
model's pace? Side by side with a bare SSE endpoint under the same load, in one run.

One Atelier process (PostgreSQL + Redis) pinned to one core; the offline model paced at
50 tokens/s (``ATELIER_OFFLINE_MODEL_DELAY_SECONDS=0.02``), 400 deltas per run, each run in
its own conversation, streamed with ``POST …/runs`` and ``Accept: text/event-stream``.
At each level, CONCURRENCY clients each stream RUNS_EACH runs back to back; the first runs
start spread over RAMP_SECONDS (a burst of hundreds of POSTs in one millisecond is a
thundering herd no frontend makes), the next ones as soon as the previous stream ended.
The bare endpoint (Starlette, its own process on the same core) streams the same events
at the same pace.

Each level is run twice: ramped as above, and started as one burst (every client's first
POST at once: a reconnect storm after a deploy). A start the server refuses (503 with
Retry-After: past ``max_active_runs``, or longer than ``run_start_wait_seconds`` in its line
of starts) is counted apart: a clear answer, not a stream.

Fails if any stream stays open after its run ended, or ends without its terminal event.
Prints, for both: the time a run's stream took over the model's 8 s (pace), the first
event's p50/p99, events/s delivered; and the server's memory per concurrent run.
Levels: ATELIER_PACED_LEVELS (default "200,400"); modes: ATELIER_PACED_MODES (default
"ramped,burst").

``--against REF`` measures another version (a git ref, served from its sources in a
temporary worktree) the same way right after this one, each beside its own run of the
bare endpoint: the before and after of a change on the hot path.
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
from collections.abc import Awaitable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import httpx
import psutil

sys.path.insert(0, str(Path(__file__).parent.parent))
from bench._cores import client_on_its_core, on_server_core
from bench.chat_stream import start_bare
from bench.compat import worktree
from bench.edge import free_port
from bench.runs import PROMPT, drop, prepare, wait_ready

LEVELS = [int(n) for n in os.environ.get("ATELIER_PACED_LEVELS", "200,400").split(",")]
MODES = os.environ.get("ATELIER_PACED_MODES", "ramped,burst").split(",")
RUNS_EACH = 2
DELAY = 0.02
DELTAS = 400
MODEL_SECONDS = DELTAS * DELAY
RAMP_SECONDS = 2.0
NEVER_ENDED_AFTER = MODEL_SECONDS * 4 + 30  # a stream still open by then never ends
T = TypeVar("T")
TERMINAL = (b"run.completed", b"run.failed", b"run.cancelled", b"run.timed_out", b"done")


@dataclass
class Stream:
    seconds: float = 0.0
    first: float | None = None
    events: int = 0
    ended_with: str | None = None  # the terminal event, if the stream ended with one
    problem: str | None = None
    refused: bool = False  # a 503 with Retry-After: the server had all it takes on


async def one_stream(port: int, path: str, headers: dict[str, str], body: bytes) -> Stream:
    """One POST over HTTP/1.0, read until the server closes the connection (chunk framing,
    if any, does not hide an event's name or its blank line)."""
    head = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
    request = (
        f"POST {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n{head}"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    result = Stream()
    started = time.perf_counter()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request)
        response_head = await reader.readuntil(b"\r\n\r\n")
        if response_head.startswith((b"HTTP/1.1 503", b"HTTP/1.0 503")):
            result.refused = b"\r\nretry-after: " in response_head.lower()
            if not result.refused:
                result.problem = "a 503 without Retry-After"
            return result
        if not response_head.startswith((b"HTTP/1.1 200", b"HTTP/1.0 200")):
            result.problem = response_head.split(b"\r\n", 1)[0].decode()
            return result
        tail = b""
        async with asyncio.timeout(NEVER_ENDED_AFTER):
            while data := await reader.read(65536):
                if result.first is None:
                    result.first = time.perf_counter() - started
                result.events += (tail[-1:] + data).count(b"\n\n")
                tail = (tail + data)[-600:]
        result.seconds = time.perf_counter() - started
        last = tail.rsplit(b"event: ", 1)[-1].split(b"\n", 1)[0]
        if last in TERMINAL:
            result.ended_with = last.decode()
        else:
            result.problem = f"closed after {last!r}, not a terminal event"
    except TimeoutError:
        result.problem = f"still open after {NEVER_ENDED_AFTER:.0f} s (last: {tail[-120:]!r})"
    except (OSError, asyncio.IncompleteReadError) as exc:
        result.problem = repr(exc)
    finally:
        writer.close()
    return result


async def level(
    concurrency: int,
    port: int,
    paths: list[str],
    headers: dict[str, str],
    body: bytes,
    ramp: float = RAMP_SECONDS,
) -> list[Stream]:
    results: list[Stream] = []

    async def client(index: int) -> None:
        await asyncio.sleep(index * ramp / concurrency)
        for run in range(RUNS_EACH):
            results.append(await one_stream(port, paths[index * RUNS_EACH + run], headers, body))

    await asyncio.gather(*(client(i) for i in range(concurrency)))
    return results


def cpu_seconds(process: psutil.Process) -> float:
    times = process.cpu_times()
    return times.user + times.system


def summary(
    name: str, streams: list[Stream], wall: float, cpu: float
) -> tuple[float, float, float]:
    refused = sum(s.refused for s in streams)
    streams = [s for s in streams if not s.refused]
    pace = sorted(s.seconds / MODEL_SECONDS for s in streams)
    first = sorted(s.first or 0.0 for s in streams)
    events = sum(s.events for s in streams)
    rate = events / wall
    print(
        f"  {name:<12}: pace p50 {statistics.median(pace):.2f}x p99 {pace[int(len(pace) * 0.99)]:.2f}x"
        f" | first event p50 {statistics.median(first) * 1000:6.0f} ms"
        f" p99 {first[int(len(first) * 0.99)] * 1000:6.0f} ms | {rate:7.0f} events/s"
        f" | CPU {cpu / wall:4.0%} of its core, {cpu / events * 1e6:5.1f} us per event"
        + (f" | {refused} refused (503)" if refused else "")
    )
    return statistics.median(pace), first[int(len(first) * 0.99)], rate


async def with_peak(server: psutil.Process, work: Awaitable[T]) -> tuple[T, int]:
    """``work``'s result, and the server's highest RSS while it ran (sampled every 0.5 s)."""
    peak = server.memory_info().rss

    async def sample() -> None:
        nonlocal peak
        while True:
            peak = max(peak, server.memory_info().rss)
            await asyncio.sleep(0.5)

    sampler = asyncio.create_task(sample())
    try:
        return await work, peak
    finally:
        sampler.cancel()


async def conversations(api: str, headers: dict[str, str], count: int) -> list[str]:
    gate = asyncio.Semaphore(20)
    async with httpx.AsyncClient(base_url=api, timeout=60, headers=headers) as http:

        async def one() -> str:
            async with gate:
                made = await http.post("/v1/conversations", json={})
                return f"/v1/conversations/{made.json()['id']}/runs"

        return list(await asyncio.gather(*(one() for _ in range(count))))


def measure(
    concurrency: int,
    ramp: float,
    api: str,
    headers: dict[str, str],
    sse: dict[str, str],
    body: bytes,
    app_port: int,
    bare_port: int,
    server: psutil.Process,
    bare_server: psutil.Process,
) -> list[str]:
    """One level, one mode, Atelier then the bare endpoint: what went wrong, if anything."""
    paths = asyncio.run(conversations(api, headers, concurrency * RUNS_EACH))
    before = server.memory_info().rss
    started, cpu = time.perf_counter(), cpu_seconds(server)
    streams, peak = asyncio.run(
        with_peak(server, level(concurrency, app_port, paths, sse, body, ramp))
    )
    wall, cpu = time.perf_counter() - started, cpu_seconds(server) - cpu
    after = server.memory_info().rss
    bare_paths = [f"/stream?delay={DELAY}"] * (concurrency * RUNS_EACH)
    started, bare_cpu = time.perf_counter(), cpu_seconds(bare_server)
    bare_streams = asyncio.run(level(concurrency, bare_port, bare_paths, {}, b"{}", ramp))
    bare_wall = time.perf_counter() - started
    bare_cpu = cpu_seconds(bare_server) - bare_cpu
    how = f"ramped over {ramp:.0f} s" if ramp else "started as one burst"
    print(f"{concurrency} concurrent streams, {concurrency * RUNS_EACH} runs in all, {how}")
    pace, first, rate = summary("Atelier", streams, wall, cpu)
    bare_pace, bare_first, bare_rate = summary("bare SSE", bare_streams, bare_wall, bare_cpu)
    print(
        f"  ratios      : pace {pace / bare_pace:.2f}x the bare endpoint's (target"
        f" 1.1x the model's: {pace:.2f}x); first event p99 +{(first - bare_first) * 1000:.0f}"
        f" ms (target p99 <= 250 ms: {first * 1000:.0f} ms); events/s {rate / bare_rate:.2f}"
    )
    mib = 1024 * 1024
    print(
        f"  memory      : {(peak - before) / concurrency / 1024:.0f} KiB per concurrent"
        f" run at the peak ({peak / mib:.0f} MiB), {(after - before) / mib:+.1f} MiB"
        " kept after the level"
    )
    problems = [s.problem for s in streams + bare_streams if s.problem]
    print(f"  streams that did not end with their terminal event: {len(problems)}")
    return problems


def main() -> None:
    client_on_its_core()
    if "--against" not in sys.argv:
        failures = serve_and_measure("this version", {})
    else:
        ref = sys.argv[sys.argv.index("--against") + 1]
        with worktree(ref) as other:
            failures = serve_and_measure("this version", {})
            failures += serve_and_measure(ref, {"PYTHONPATH": str(other)})
    assert not failures, failures[:5]


def serve_and_measure(version: str, extra: dict[str, str]) -> list[str]:
    """Every level and mode on one fresh deployment of ``version``: what went wrong."""
    database = f"atelier_paced_{uuid.uuid4().hex[:8]}"
    failures: list[str] = []
    with tempfile.TemporaryDirectory() as workdir:
        env, key = prepare(database, workdir, extra)
        env["ATELIER_OFFLINE_MODEL_DELAY_SECONDS"] = str(DELAY)
        env["ATELIER_DATABASE_POOL_SIZE"] = "20"
        app_port, bare_port = free_port(), free_port()
        atelier = subprocess.Popen(
            [sys.executable, "-m", "atelier.cli", "serve", "--port", str(app_port)],
            env=env,
            preexec_fn=on_server_core(),
        )
        bare = start_bare(bare_port)
        server, bare_server = psutil.Process(atelier.pid), psutil.Process(bare.pid)
        try:
            api = f"http://127.0.0.1:{app_port}"
            wait_ready(api)
            headers = {"Authorization": f"Bearer {key}", "X-User-ID": "bench"}
            sse = {**headers, "Accept": "text/event-stream"}
            body = f'{{"input": "{PROMPT}"}}'.encode()
            # A few runs first: what the allocator keeps from the first is not growth.
            warm = asyncio.run(conversations(api, headers, 20))
            asyncio.run(level(10, app_port, warm, sse, body))
            print(
                f"paced runs of {version}: {DELTAS} deltas at {1 / DELAY:.0f} tokens/s"
                f" ({MODEL_SECONDS:.0f} s of model time), {RUNS_EACH} runs per client,"
                " one process on one core"
            )
            for concurrency in LEVELS:
                for mode in MODES:
                    ramp = RAMP_SECONDS if mode == "ramped" else 0.0
                    failures += measure(
                        concurrency,
                        ramp,
                        api,
                        headers,
                        sse,
                        body,
                        app_port,
                        bare_port,
                        server,
                        bare_server,
                    )
        finally:
            for process in (atelier, bare):
                process.terminate()
                process.wait(60)
            drop(database)
    return failures


if __name__ == "__main__":
    main()
