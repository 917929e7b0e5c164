"""What both SDK suites share: a real server, a plain client beside the SDK, and SDK
clients closed after each test in its own event loop."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from tests.live import serve_started

OPENED: list[Any] = []  # SDK clients a test made, closed after it


def opened(client: Any) -> Any:
    OPENED.append(client)
    return client


@pytest.fixture(autouse=True)
async def _clients_closed() -> AsyncIterator[None]:
    yield
    while OPENED:
        client = OPENED.pop()
        await (client.aclose() if hasattr(client, "aclose") else client.close())


@pytest.fixture
async def served(app: FastAPI) -> AsyncIterator[str]:
    async with serve_started(app) as url:
        yield url


@pytest.fixture
async def native(served: str) -> AsyncIterator[httpx.AsyncClient]:
    """The native API, over the same socket."""
    async with httpx.AsyncClient(base_url=served, timeout=30) as http:
        yield http
