"""Reject requests whose headers are larger than any legitimate client sends.

uvicorn's httptools parser has no header size limit of its own; without this a client
could make every request carry megabytes of headers into our middleware and logs.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Receive, Scope, Send

from atelier.http.errors import send_problem

MAX_HEADER_BYTES = 32 * 1024


class RequestLimitsMiddleware:
    def __init__(self, app: ASGIApp, *, max_header_bytes: int = MAX_HEADER_BYTES) -> None:
        self.app = app
        self.max_header_bytes = max_header_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            size = sum(len(name) + len(value) + 4 for name, value in scope.get("headers", ()))
            if size > self.max_header_bytes:
                await send_problem(
                    send,
                    431,
                    "headers_too_large",
                    f"request headers exceed {self.max_header_bytes} bytes",
                )
                return
        await self.app(scope, receive, send)
