"""Server-Sent Events as a pure ASGI response: sent as produced, keep-alives, disconnect-aware.

The events iterator is pulled by one pending ``anext`` task that is never cancelled by a
keep-alive timeout (cancelling it would break the generator); when the client goes away
the pending pull is cancelled and the iterator closed, so producers release what they hold.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterable, AsyncIterator
from dataclasses import dataclass
from typing import Any

from starlette.responses import Response
from starlette.types import Receive, Scope, Send

KEEPALIVE_SECONDS = 15.0


@dataclass(frozen=True)
class ServerSentEvent:
    data: str
    event: str | None = None
    id: int | str | None = None

    def encode(self) -> bytes:
        lines = []
        if self.id is not None:
            lines.append(f"id: {self.id}")
        if self.event is not None:
            lines.append(f"event: {self.event}")
        lines += [f"data: {line}" for line in self.data.splitlines() or [""]]
        return ("\n".join(lines) + "\n\n").encode()


class EventStreamResponse(Response):
    media_type = "text/event-stream"

    def __init__(
        self,
        events: AsyncIterable[ServerSentEvent],
        *,
        status_code: int = 200,
        headers: dict[str, str] | None = None,
        keepalive_seconds: float = KEEPALIVE_SECONDS,
    ) -> None:
        # Not Response.__init__: it would set a body and with it "content-length: 0".
        self.status_code = status_code
        self.background = None
        self.init_headers(
            {"cache-control": "no-cache", "x-accel-buffering": "no", **(headers or {})}
        )
        self.events = events
        self.keepalive_seconds = keepalive_seconds

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        metrics = scope["app"].state.metrics
        iterator: AsyncIterator[ServerSentEvent] = aiter(self.events)
        disconnected = asyncio.ensure_future(_disconnect(receive))
        pending: asyncio.Future[ServerSentEvent] = asyncio.ensure_future(anext(iterator))
        metrics.sse_streams_open.inc()
        try:
            await send(
                {
                    "type": "http.response.start",
                    "status": self.status_code,
                    "headers": self.raw_headers,
                }
            )
            while True:
                waiting: set[asyncio.Future[Any]] = {pending, disconnected}
                done, _ = await asyncio.wait(
                    waiting,
                    timeout=self.keepalive_seconds,
                    return_when=asyncio.FIRST_COMPLETED,
                )
                if disconnected in done:
                    return
                if not done:
                    await send(
                        {
                            "type": "http.response.body",
                            "body": b": keep-alive\n\n",
                            "more_body": True,
                        }
                    )
                    continue
                try:
                    event = pending.result()
                except StopAsyncIteration:
                    break
                await send(
                    {"type": "http.response.body", "body": event.encode(), "more_body": True}
                )
                pending = asyncio.ensure_future(anext(iterator))
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            metrics.sse_streams_open.dec()
            for task in (pending, disconnected):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, StopAsyncIteration, Exception):
                    await task
            aclose = getattr(iterator, "aclose", None)
            if aclose is not None:
                await aclose()


async def _disconnect(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass
