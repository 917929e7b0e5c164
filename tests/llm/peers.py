"""Local HTTP peers that speak each provider's wire protocol, scripted per test."""

from __future__ import annotations

import asyncio
import json
import zlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route


@dataclass
class Peer:
    """Streams ``frames`` (bytes) with ``delay`` between them; ``forever`` keeps going."""

    frames: list[bytes] = field(default_factory=list)
    delay: float = 0.0
    forever: bytes | None = None
    media_type: str = "text/event-stream"
    status: int = 200
    requests: list[dict] = field(default_factory=list)
    disconnected: asyncio.Event = field(default_factory=asyncio.Event)

    def app(self, path: str) -> Starlette:
        async def endpoint(request: Request) -> Response:
            self.requests.append(json.loads(await request.body()))
            if self.status != 200:
                error = {"message": "slow down", "__type": "ThrottlingException"}
                return JSONResponse(
                    error, self.status, headers={"x-amzn-errortype": "ThrottlingException"}
                )

            async def body() -> AsyncIterator[bytes]:
                try:
                    for frame in self.frames:
                        await asyncio.sleep(self.delay)
                        yield frame
                    while self.forever is not None:
                        await asyncio.sleep(0.05)
                        yield self.forever
                finally:
                    self.disconnected.set()

            return StreamingResponse(body(), media_type=self.media_type)

        return Starlette(routes=[Route(path, endpoint, methods=["POST"])])


def sse(data: object, event: str | None = None) -> bytes:
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {json.dumps(data) if not isinstance(data, str) else data}\n\n".encode()


def _header(name: str, value: str) -> bytes:
    n, v = name.encode(), value.encode()
    return bytes([len(n)]) + n + bytes([7]) + len(v).to_bytes(2, "big") + v


def aws_event(event_type: str, payload: dict, *, exception: bool = False) -> bytes:
    """One message in AWS event-stream framing (prelude, headers, payload, CRC32s)."""
    if exception:
        headers = _header(":exception-type", event_type) + _header(":message-type", "exception")
    else:
        headers = _header(":event-type", event_type) + _header(":message-type", "event")
    headers += _header(":content-type", "application/json")
    body = json.dumps(payload).encode()
    total = 12 + len(headers) + len(body) + 4
    prelude = total.to_bytes(4, "big") + len(headers).to_bytes(4, "big")
    message = prelude + zlib.crc32(prelude).to_bytes(4, "big") + headers + body
    return message + zlib.crc32(message).to_bytes(4, "big")


def aws_error(code: str, message: str) -> bytes:
    """An event-stream message of type ``error``: named by no event or exception shape,
    only by its ``:error-code`` and ``:error-message`` headers."""
    headers = (
        _header(":message-type", "error")
        + _header(":error-code", code)
        + _header(":error-message", message)
    )
    total = 12 + len(headers) + 4
    prelude = total.to_bytes(4, "big") + len(headers).to_bytes(4, "big")
    message_bytes = prelude + zlib.crc32(prelude).to_bytes(4, "big") + headers
    return message_bytes + zlib.crc32(message_bytes).to_bytes(4, "big")
