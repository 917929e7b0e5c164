"""N concurrent chats streaming 400 tokens from the offline model (no delay), full stack,
next to a bare Starlette SSE endpoint emitting the same events, in one run.

Prints events/s and time to first event for both, and their ratio.
"""

import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).parent.parent))
from bench._cores import client_on_its_core, on_server_core
from bench._sse import stream_events
from bench.edge import free_port, make_key, wait_up

CHATS, WORDS, ROUNDS = 10, 400, 3


def bare_app():  # type: ignore[no-untyped-def]
    from starlette.applications import Starlette
    from starlette.responses import StreamingResponse
    from starlette.routing import Route

    async def stream(request):  # type: ignore[no-untyped-def]
        # ?delay=: seconds between deltas, as a paced model; the default is as fast as it goes.
        delay = float(request.query_params.get("delay", 0))

        async def events():  # type: ignore[no-untyped-def]
            if delay:
                yield b"id: 0\nevent: run.started\ndata: {}\n\n"
            for n in range(1, WORDS + 1):
                await asyncio.sleep(delay)
                yield f"id: {n}\nevent: message.delta\ndata: {json.dumps({'text': ' word'})}\n\n".encode()
            yield f"id: {WORDS + 1}\nevent: done\ndata: {{}}\n\n".encode()

        return StreamingResponse(events(), media_type="text/event-stream")

    return Starlette(routes=[Route("/stream", stream, methods=["POST"])])


def start_bare(port: int) -> subprocess.Popen[bytes]:
    """The bare Starlette SSE endpoint in a process of its own, answering when this returns."""
    process = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, uvicorn; sys.path.insert(0, 'bench'); from chat_stream import bare_app; "
            f"uvicorn.run(bare_app(), host='127.0.0.1', port={port}, log_level='warning')",
        ],
        preexec_fn=on_server_core(),
    )
    for _ in range(100):
        try:
            httpx.post(f"http://127.0.0.1:{port}/stream", timeout=1)
            break
        except httpx.TransportError:
            time.sleep(0.1)
    return process


async def measure(url_for, headers: dict[str, str], body: dict) -> tuple[float, float]:  # type: ignore[no-untyped-def]
    async with httpx.AsyncClient(timeout=60) as http:
        urls = [await url_for(http) for _ in range(CHATS)]
        started = time.perf_counter()
        results = await asyncio.gather(*(stream_events(url, headers, body) for url in urls))
        elapsed = time.perf_counter() - started
    return sum(e for e, _ in results) / elapsed, statistics.median(f for _, f in results)


def main() -> None:
    client_on_its_core()
    with tempfile.TemporaryDirectory() as workdir:
        key = make_key(workdir)
        app_port, bare_port = free_port(), free_port()
        env = {
            **os.environ,
            "ATELIER_DATA_DIR": workdir,
            "ATELIER_LOG_LEVEL": "WARNING",
            "ATELIER_RATE_LIMIT_ENABLED": "false",
            "ATELIER_OFFLINE_MODEL_DELAY_SECONDS": "0",
            "ATELIER_TITLE_WAIT_SECONDS": "0",
        }
        atelier = subprocess.Popen(
            [
                sys.executable,
                "-c",
                "import uvicorn; from atelier.cli import app_from_environment; "
                f"uvicorn.run(app_from_environment(), host='127.0.0.1', port={app_port}, log_config=None)",
            ],
            env=env,
            preexec_fn=on_server_core(),
        )
        bare = start_bare(bare_port)
        try:
            wait_up(app_port)
            headers = {
                "Authorization": f"Bearer {key}",
                "X-User-ID": "bench",
                "Accept": "text/event-stream",
            }
            # The offline model echoes the prompt and adds 27 words: 373 + 27 = 400 deltas.
            prompt = {"content": " ".join(["word"] * 373)}

            async def new_chat(http: httpx.AsyncClient) -> str:
                chat = (
                    await http.post(
                        f"http://127.0.0.1:{app_port}/v1/chats", json={}, headers=headers
                    )
                ).json()["id"]
                return f"http://127.0.0.1:{app_port}/v1/chats/{chat}/messages"

            async def bare_url(http: httpx.AsyncClient) -> str:
                return f"http://127.0.0.1:{bare_port}/stream"

            full, base = [], []
            for _ in range(ROUNDS):
                full.append(asyncio.run(measure(new_chat, headers, prompt)))
                base.append(asyncio.run(measure(bare_url, {}, {})))
        finally:
            for process in (atelier, bare):
                process.terminate()
                process.wait(10)
    full_rate, full_first = (
        statistics.median(r for r, _ in full),
        statistics.median(f for _, f in full),
    )
    bare_rate, bare_first = (
        statistics.median(r for r, _ in base),
        statistics.median(f for _, f in base),
    )
    print(f"{CHATS} concurrent streams, offline model with zero delay, {ROUNDS} rounds (medians)")
    print(
        f"  Atelier chat SSE  : {full_rate:8.0f} events/s   first event {full_first * 1000:6.1f} ms"
    )
    print(
        f"  bare Starlette SSE: {bare_rate:8.0f} events/s   first event {bare_first * 1000:6.1f} ms"
    )
    print(
        f"  ratio events/s = {full_rate / bare_rate:.2f}; first event +{(full_first - bare_first) * 1000:.1f} ms"
    )


if __name__ == "__main__":
    main()
