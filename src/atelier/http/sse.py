"""Server-Sent Events as a pure ASGI response: sent as produced, keep-alives, disconnect-aware.

Events are written by one plain loop; a keep-alive comment goes out only after a quiet
interval, and when the client goes away the producer is cancelled and its iterator
closed, so producers release what they hold.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterable, AsyncIterator, Callable
from dataclasses import dataclass

import structlog
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

KEEPALIVE_SECONDS = 15.0
log = structlog.get_logger("atelier.http")
_BREAKS = re.compile(r"\r\n|\r|\n")  # what ends a line in an event stream, and only that


@dataclass(frozen=True)
class ServerSentEvent:
    data: str
    event: str | None = None
    id: int | str | None = None

    def encode(self) -> bytes:
        if self.id is not None and self.event is not None and not _BREAKS.search(self.data):
            # The hot path: one event of JSON data (which never holds a line break).
            return f"id: {self.id}\nevent: {self.event}\ndata: {self.data}\n\n".encode()
        lines = []
        if self.id is not None:
            lines.append(f"id: {self.id}")
        if self.event is not None:
            lines.append(f"event: {self.event}")
        lines += [f"data: {line}" for line in _BREAKS.split(self.data)]
        return ("\n".join(lines) + "\n\n").encode()


@dataclass(frozen=True)
class EventBatch:
    """Events that are ready together, sent in one write."""

    events: list[ServerSentEvent]

    def encode(self) -> bytes:
        return b"".join([event.encode() for event in self.events])


class EventStreamResponse(Response):
    media_type = "text/event-stream"

    def __init__(
        self,
        events: AsyncIterable[ServerSentEvent | EventBatch],
        *,
        status_code: int = 200,
        headers: dict[str, str] | None = None,
        keepalive_seconds: float = KEEPALIVE_SECONDS,
        on_failure: Callable[[BaseException], ServerSentEvent] | None = None,
    ) -> None:
        """``on_failure``: the last event to send when producing events fails after the
        response started (BUG-022: one terminal event, never a cut stream)."""
        # Not Response.__init__: it would set a body and with it "content-length: 0".
        self.status_code = status_code
        self.background = None
        self.init_headers(
            {"cache-control": "no-cache", "x-accel-buffering": "no", **(headers or {})}
        )
        self.events = events
        self.keepalive_seconds = keepalive_seconds
        self.on_failure = on_failure

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        metrics = scope["app"].state.metrics
        loop = asyncio.get_running_loop()
        iterator: AsyncIterator[ServerSentEvent | EventBatch] = aiter(self.events)
        writing = asyncio.Lock()
        last_write = loop.time()

        async def write(body: bytes, more: bool = True) -> None:
            nonlocal last_write
            async with writing:
                await send({"type": "http.response.body", "body": body, "more_body": more})
                last_write = loop.time()

        async def stream() -> None:
            await send(
                {
                    "type": "http.response.start",
                    "status": self.status_code,
                    "headers": self.raw_headers,
                }
            )
            try:
                # One plain loop, no task per event: the hot path is a single send.
                async for event in iterator:
                    await write(event.encode())
            except Exception as exc:
                if self.on_failure is None:
                    raise
                log.exception("event stream failed after it started")
                metrics.sse_stream_failures.inc()
                await write(self.on_failure(exc).encode())
            await write(b"", more=False)

        async def keep_alive() -> None:
            while True:
                await asyncio.sleep(max(self.keepalive_seconds - (loop.time() - last_write), 0.01))
                if loop.time() - last_write >= self.keepalive_seconds:
                    await write(b": keep-alive\n\n")

        metrics.sse_streams_open.inc()
        streaming = asyncio.ensure_future(stream())
        watchers = [
            asyncio.ensure_future(_disconnect(receive)),
            asyncio.ensure_future(keep_alive()),
        ]
        try:
            # The client leaving ends the stream: the producer is cancelled and closed.
            await asyncio.wait({streaming, watchers[0]}, return_when=asyncio.FIRST_COMPLETED)
            if streaming.done():
                streaming.result()
        finally:
            metrics.sse_streams_open.dec()
            for task in (streaming, *watchers):
                task.cancel()
            for task in (streaming, *watchers):
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            aclose = getattr(iterator, "aclose", None)
            if aclose is not None:
                await aclose()


async def _disconnect(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass
