"""A webhook receiver on a real socket: it keeps every request and answers as told."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from standardwebhooks.webhooks import Webhook as Verifier
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tests.live import serve


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes
    query: str = ""

    def verified(self, secret: str) -> dict[str, Any]:
        """The payload, once the library's own verifier accepts its signature."""
        return dict(Verifier(secret).verify(self.body, self.headers))


@dataclass
class Receiver:
    url: str = ""
    # What to answer, request by request: a status code, or "hang" (never answer); then 200.
    script: list[int | str] = field(default_factory=list)
    received: list[Received] = field(default_factory=list)
    arrived: asyncio.Condition = field(default_factory=asyncio.Condition)
    closing: asyncio.Event = field(default_factory=asyncio.Event)

    async def handle(self, request: Request) -> Response:
        body = await request.body()
        async with self.arrived:
            self.received.append(Received(dict(request.headers), body, request.url.query))
            self.arrived.notify_all()
        answer = self.script.pop(0) if self.script else 200
        if answer == "hang":
            await self.closing.wait()
        return Response(status_code=int(answer))

    async def wait_for(self, count: int, timeout: float = 20) -> list[Received]:
        async with asyncio.timeout(timeout), self.arrived:
            await self.arrived.wait_for(lambda: len(self.received) >= count)
        return self.received

    def types(self) -> list[str]:
        return [json.loads(r.body)["type"] for r in self.received]


@asynccontextmanager
async def receiving(script: list[int | str] | None = None) -> AsyncIterator[Receiver]:
    receiver = Receiver(script=list(script or []))
    app = Starlette(routes=[Route("/hook", receiver.handle, methods=["POST"])])
    async with serve(app, lifespan="off") as url:  # type: ignore[arg-type]
        receiver.url = f"{url}/hook"
        try:
            yield receiver
        finally:
            receiver.closing.set()
