"""Agent runs, full stack on PostgreSQL + Redis, measured side by side in one run.

(a) 10 concurrent runs streaming 400 deltas each from the offline model (zero delay),
    against a bare Starlette SSE endpoint emitting the same number of events:
    events/s and time to first event (targets: >= 33% of its events/s; first event
    <= 15 ms above it).
(b) Run start overhead with a warm 1,000-file workspace: time from POST to the run's
    first model output, against the same conversation shape with no files
    (target: <= 50 ms more).
(c) Runs one at a time: time from POST to the stream's first event, against the bare
    endpoint's (target: <= 10 ms more).

Needs PostgreSQL (ATELIER_BENCH_POSTGRES_URL, default the local server) and Redis
(ATELIER_BENCH_REDIS_URL).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import httpx

sys.path.insert(0, str(Path(__file__).parent.parent))
from bench._cores import client_on_its_core, on_server_core
from bench._sse import stream_events
from bench.chat_stream import start_bare
from bench.edge import free_port

POSTGRES = os.environ.get("ATELIER_BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432")
REDIS = os.environ.get("ATELIER_BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
RUNS, ROUNDS, FILES, STARTS = 10, 3, 1000, 15
# The offline model echoes the input and adds 27 words: 373 + 27 = 400 deltas.
PROMPT = " ".join(["word"] * 373)


def prepare(
    database: str, workdir: str, extra: dict[str, str] | None = None
) -> tuple[dict[str, str], str]:
    async def create() -> None:
        admin = await asyncpg.connect(f"{POSTGRES}/postgres")
        await admin.execute(f'CREATE DATABASE "{database}"')
        await admin.close()

    asyncio.run(create())
    env = {
        **os.environ,
        "ATELIER_DATABASE_URL": f"postgresql+asyncpg://{POSTGRES.split('://', 1)[1]}/{database}",
        "ATELIER_REDIS_URL": REDIS,
        "ATELIER_REDIS_KEY_PREFIX": f"atelier-bench:{uuid.uuid4().hex[:8]}:",
        "ATELIER_DATA_DIR": workdir,
        "ATELIER_LOG_LEVEL": "WARNING",
        "ATELIER_RATE_LIMIT_ENABLED": "false",
        "ATELIER_OFFLINE_MODEL_DELAY_SECONDS": "0",
        "ATELIER_TITLE_WAIT_SECONDS": "0",
        **(extra or {}),
    }
    cli = [sys.executable, "-m", "atelier.cli"]
    subprocess.run([*cli, "migrate"], env=env, check=True, capture_output=True)
    subprocess.run([*cli, "tenants", "create", "bench"], env=env, check=True, capture_output=True)
    key = subprocess.run(
        [*cli, "keys", "create", "--tenant", "bench"],
        env=env,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    return env, key


@contextlib.contextmanager
def one_atelier(env: dict[str, str], database: str) -> Iterator[int]:
    """An Atelier process on the server's core, ready; its port. Then stopped, and its
    database dropped."""
    port = free_port()
    atelier = subprocess.Popen(
        [sys.executable, "-m", "atelier.cli", "serve", "--port", str(port)],
        env=env,
        preexec_fn=on_server_core(),
    )
    try:
        wait_ready(f"http://127.0.0.1:{port}")
        yield port
    finally:
        atelier.terminate()
        atelier.wait(60)
        drop(database)


@contextlib.contextmanager
def deployed(
    name: str, extra: dict[str, str] | None = None
) -> Iterator[tuple[int, dict[str, str]]]:
    """A fresh deployment (database, data directory, key) served by one Atelier process,
    the client on its own core: the port, and the headers of the key's user. ``extra``:
    more environment (``PYTHONPATH`` naming another version's sources, say)."""
    client_on_its_core()
    database = f"atelier_{name}_{uuid.uuid4().hex[:8]}"
    with tempfile.TemporaryDirectory() as workdir:
        env, key = prepare(database, workdir, extra)
        with one_atelier(env, database) as port:
            yield port, {"Authorization": f"Bearer {key}", "X-User-ID": "bench"}


def drop(database: str) -> None:
    async def go() -> None:
        admin = await asyncpg.connect(f"{POSTGRES}/postgres")
        await admin.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        await admin.close()

    asyncio.run(go())


def wait_ready(url: str) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/ready", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{url} did not become ready")


async def streaming(
    api: str, headers: dict[str, str], bare: str
) -> tuple[list, list, tuple[float, float]]:
    async with httpx.AsyncClient(timeout=120) as http:

        async def new_run_url() -> str:
            made = await http.post(f"{api}/v1/conversations", json={}, headers=headers)
            return f"{api}/v1/conversations/{made.json()['id']}/runs"

        async def measure(urls: list[str], headers: dict[str, str], body: dict) -> tuple:
            started = time.perf_counter()
            results = await asyncio.gather(*(stream_events(url, headers, body) for url in urls))
            elapsed = time.perf_counter() - started
            return sum(e for e, _ in results) / elapsed, statistics.median(f for _, f in results)

        full, base = [], []
        for _ in range(ROUNDS):
            urls = [await new_run_url() for _ in range(RUNS)]
            full.append(await measure(urls, headers, {"input": PROMPT}))
            base.append(await measure([f"{bare}/stream"] * RUNS, {}, {}))
        alone, bare_alone = [], []
        for _ in range(RUNS):
            url = await new_run_url()
            alone.append((await stream_events(url, headers, {"input": "hi"}))[1])
            bare_alone.append((await stream_events(f"{bare}/stream", {}, {}))[1])
    return full, base, (statistics.median(alone), statistics.median(bare_alone))


async def start_overhead(api: str, headers: dict[str, str]) -> tuple[float, float]:
    """Median POST-to-first-delta for a conversation with no files and with FILES files."""
    async with httpx.AsyncClient(timeout=120) as http:

        async def conversation(files: int) -> str:
            made = await http.post(f"{api}/v1/conversations", json={}, headers=headers)
            cid = made.json()["id"]
            gate = asyncio.Semaphore(20)

            async def put(i: int) -> None:
                async with gate:
                    response = await http.put(
                        f"{api}/v1/conversations/{cid}/files/dir{i % 10}/file{i}.txt",
                        content=f"file {i}\n".encode(),
                        headers=headers,
                    )
                    assert response.status_code == 201, response.text

            await asyncio.gather(*(put(i) for i in range(files)))
            return cid

        async def first_delta(cid: str) -> float:
            url = f"{api}/v1/conversations/{cid}/runs"
            _, first = await stream_events(url, headers, {"input": "hi"}, "message.delta")
            return first

        timings: dict[int, list[float]] = {}
        for files in (0, FILES):
            cid = await conversation(files)
            await first_delta(cid)  # the first run materialises the workspace: now it is warm
            timings[files] = [await first_delta(cid) for _ in range(STARTS)]
    return statistics.median(timings[0]), statistics.median(timings[FILES])


def main() -> None:
    client_on_its_core()
    database = f"atelier_bench_{uuid.uuid4().hex[:8]}"
    with tempfile.TemporaryDirectory() as workdir:
        env, key = prepare(database, workdir)
        app_port, bare_port = free_port(), free_port()
        atelier = subprocess.Popen(
            [sys.executable, "-m", "atelier.cli", "serve", "--port", str(app_port)],
            env=env,
            preexec_fn=on_server_core(),
        )
        bare = start_bare(bare_port)
        try:
            api, bare_url = f"http://127.0.0.1:{app_port}", f"http://127.0.0.1:{bare_port}"
            wait_ready(api)
            headers = {
                "Authorization": f"Bearer {key}",
                "X-User-ID": "bench",
                "Accept": "text/event-stream",
            }
            full, base, (alone, bare_alone) = asyncio.run(streaming(api, headers, bare_url))
            empty, warm = asyncio.run(start_overhead(api, headers))
        finally:
            for process in (atelier, bare):
                process.terminate()
                process.wait(30)
            drop(database)
    full_rate = statistics.median(r for r, _ in full)
    full_first = statistics.median(f for _, f in full)
    bare_rate = statistics.median(r for r, _ in base)
    bare_first = statistics.median(f for _, f in base)
    print(f"(a) {RUNS} concurrent runs x 400 deltas, PostgreSQL + Redis, {ROUNDS} rounds (medians)")
    print(
        f"  Atelier run SSE   : {full_rate:8.0f} events/s   first event {full_first * 1000:6.1f} ms"
    )
    print(
        f"  bare Starlette SSE: {bare_rate:8.0f} events/s   first event {bare_first * 1000:6.1f} ms"
    )
    print(
        f"  ratio events/s = {full_rate / bare_rate:.2f} (target >= 0.5); "
        f"first event +{(full_first - bare_first) * 1000:.1f} ms (target <= 15)"
    )
    print(f"(b) run start, POST to first delta, warm workspace ({STARTS} runs, medians)")
    print(f"  no files          : {empty * 1000:6.1f} ms")
    print(f"  {FILES} files        : {warm * 1000:6.1f} ms")
    print(f"  overhead of the files = +{(warm - empty) * 1000:.1f} ms (target <= 50)")
    print(f"(c) {RUNS} runs one at a time, POST to first event (medians)")
    print(f"  Atelier run SSE   : {alone * 1000:6.1f} ms")
    print(f"  bare Starlette SSE: {bare_alone * 1000:6.1f} ms")
    print(f"  first event +{(alone - bare_alone) * 1000:.1f} ms (target <= 10)")


if __name__ == "__main__":
    main()
