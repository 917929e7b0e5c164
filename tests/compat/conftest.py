"""What both SDK suites share: a plain client beside the SDK on the served app (`served`,
from tests/conftest.py), and SDK clients closed after each test in its own event loop."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

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
async def native(served: str) -> AsyncIterator[httpx.AsyncClient]:
    """The native API, over the same socket."""
    async with httpx.AsyncClient(base_url=served, timeout=30) as http:
        yield http
