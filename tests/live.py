"""A real uvicorn server on a free loopback port, in the test's event loop."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Literal

import uvicorn
from fastapi import FastAPI

from tests.conftest import free_port


@asynccontextmanager
async def serve(app: FastAPI, lifespan: Literal["on", "off"] = "on") -> AsyncIterator[str]:
    """Serve ``app`` (lifespan included) and yield its base URL."""
    port = free_port()
    # proxy_headers off, as `atelier serve` runs by default: forwarded headers are ours to judge.
    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, log_config=None, lifespan=lifespan, proxy_headers=False
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    try:
        while not server.started:
            if task.done():
                task.result()
                raise RuntimeError("uvicorn stopped before it started")
            await asyncio.sleep(0.01)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 10)


def serve_started(app: FastAPI) -> AbstractAsyncContextManager[str]:
    """Serve an app whose lifespan already runs (the ``app`` fixture) on a real socket."""
    return serve(app, lifespan="off")
