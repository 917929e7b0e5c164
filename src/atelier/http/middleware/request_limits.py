"""Refuse requests larger than any legitimate client sends: headers past 32 KiB (431), and
bodies past their limit while they stream in (413).

uvicorn's httptools parser has no header size limit of its own; without this a client
could make every request carry megabytes of headers into our middleware and logs. A body
is counted as it arrives and refused the moment it passes the limit -- a declared
``Content-Length`` over it before a byte is read -- so a huge body never reaches memory.
File uploads have a limit of their own (they stream to storage, which enforces the file
and workspace quotas with their own error codes); every other body is JSON.
"""

from __future__ import annotations

import re

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from atelier.errors import size_text
from atelier.http.errors import send_problem

MAX_HEADER_BYTES = 32 * 1024
UPLOAD_OVERHEAD = 1024 * 1024  # multipart framing and form fields around the file
_UPLOADS = re.compile(r"^/v1/conversations/[^/]+/files(/.+)?$")


class RequestLimitsMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        *,
        max_json_body_bytes: int,
        max_file_size: int,
        max_header_bytes: int = MAX_HEADER_BYTES,
    ) -> None:
        self.app = app
        self.max_header_bytes = max_header_bytes
        self.max_json_body_bytes = max_json_body_bytes
        self.max_upload_bytes = max_file_size + UPLOAD_OVERHEAD

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = scope.get("headers", ())
        if sum(len(name) + len(value) + 4 for name, value in headers) > self.max_header_bytes:
            await send_problem(
                send,
                431,
                "headers_too_large",
                f"request headers exceed {self.max_header_bytes} bytes",
            )
            return
        upload = scope["method"] in ("PUT", "POST") and _UPLOADS.match(scope["path"])
        limit = self.max_upload_bytes if upload else self.max_json_body_bytes
        declared = next((value for name, value in headers if name == b"content-length"), None)
        if declared is not None and declared.isdigit() and int(declared) > limit:
            await send_problem(send, 413, "payload_too_large", _too_large(limit))
            return
        received = 0

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    # An HTTPException, so that FastAPI's body parsing lets it through: the app
                    # renders it as problem+json 413 payload_too_large.
                    raise HTTPException(413, _too_large(limit))
            return message

        await self.app(scope, counted, send)


def _too_large(limit: int) -> str:
    return f"the request body is over the {size_text(limit)} limit ({limit} bytes)"
