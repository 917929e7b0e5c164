"""How soon an SSE event reaches a real client through the full middleware stack (BUG-002),
next to the same endpoint on a bare Starlette app, in one run.

An endpoint emits an event every 50 ms stamped with the time it was made; a client over
a real socket records when each one arrives. A stack that buffered events would delay
each by an interval or more. Prints the median and worst delay of both and the
difference of the medians. (`make test` proves only that nothing is held back; this
measures how fast, which a busy machine would make flaky in a test.)
"""

from __future__ import annotations

import asyncio
import json
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import uvicorn

sys.path.insert(0, str(Path(__file__).parent.parent))
from bench.edge import free_port

EVENTS, INTERVAL, ROUNDS = 40, 0.05, 3


async def ticks() -> AsyncIterator[str]:
    for n in range(1, EVENTS + 1):
        await asyncio.sleep(INTERVAL)
        yield f"id: {n}\nevent: tick\ndata: {json.dumps({'at': time.perf_counter()})}\n\n"


def atelier_app(data_dir: Path):  # type: ignore[no-untyped-def]
    from atelier.app import create_app
    from atelier.http.sse import EventBatch, EventStreamResponse, ServerSentEvent
    from atelier.settings import Settings

    app = create_app(
        Settings(data_dir=data_dir, log_level="WARNING", rate_limit_enabled=False)  # type: ignore[arg-type]
    )

    @app.get("/v1/bench/ticks")
    async def stream() -> EventStreamResponse:
        async def events() -> AsyncIterator[ServerSentEvent | EventBatch]:
            n = 0
            async for _ in ticks():
                n += 1
                yield ServerSentEvent(json.dumps({"at": time.perf_counter()}), "tick", n)

        return EventStreamResponse(events())

    return app


def bare_app():  # type: ignore[no-untyped-def]
    from starlette.applications import Starlette
    from starlette.responses import StreamingResponse
    from starlette.routing import Route

    async def stream(request):  # type: ignore[no-untyped-def]
        return StreamingResponse(ticks(), media_type="text/event-stream")

    return Starlette(routes=[Route("/v1/bench/ticks", stream)])


async def delays(url: str, headers: dict[str, str]) -> list[float]:
    found = []
    async with (
        httpx.AsyncClient() as http,
        http.stream("GET", url, headers=headers) as response,
    ):
        async for line in response.aiter_lines():
            if line.startswith("data: "):
                found.append(time.perf_counter() - json.loads(line[6:])["at"])
    return found


async def main() -> None:
    from atelier.db.engine import create_engine
    from atelier.db.migrate import migrate
    from atelier.settings import Settings
    from atelier.tenants.service import create_api_key, create_tenant

    with tempfile.TemporaryDirectory() as workdir:
        data_dir = Path(workdir)
        engine = create_engine(Settings(data_dir=data_dir))  # type: ignore[arg-type]
        await migrate(engine)
        from atelier.db.engine import create_sessionmaker

        async with create_sessionmaker(engine)() as session:
            key = (await create_api_key(session, await create_tenant(session, "bench"))).secret
            await session.commit()
        await engine.dispose()
        servers = {}
        for name, app in (("atelier", atelier_app(data_dir)), ("bare", bare_app())):
            port = free_port()
            server = uvicorn.Server(
                uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning")
            )
            task = asyncio.create_task(server.serve())
            while not server.started:
                await asyncio.sleep(0.01)
            servers[name] = (f"http://127.0.0.1:{port}/v1/bench/ticks", server, task)
        results: dict[str, list[float]] = {"atelier": [], "bare": []}
        headers = {"Authorization": f"Bearer {key}"}
        for _ in range(ROUNDS):
            for name, (url, _, _) in servers.items():
                results[name] += await delays(url, headers)
        for _, server, task in servers.values():
            server.should_exit = True
            await task
    print(f"SSE delivery delay, {EVENTS} events every {INTERVAL * 1000:.0f} ms x {ROUNDS} rounds")
    for name, found in results.items():
        print(
            f"  {name:8}: median {statistics.median(found) * 1000:6.2f} ms   "
            f"max {max(found) * 1000:6.2f} ms"
        )
    extra = statistics.median(results["atelier"]) - statistics.median(results["bare"])
    print(f"  full stack adds {extra * 1000:+.2f} ms per event (median); buffering would add >= 50")


if __name__ == "__main__":
    asyncio.run(main())
