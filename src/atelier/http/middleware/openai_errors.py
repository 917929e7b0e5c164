"""Errors on the OpenAI surface (``/openai/``) in OpenAI's own shape.

OpenAI's clients read ``{"error": {"message", "type", "param", "code"}}``: given
problem+json they say only "422 status code (no body)". Every problem answered under
``/openai/`` -- by an endpoint, a validation error or a middleware (a missing key, a rate
limit, an idempotency refusal) -- is rewritten so, keeping its status, headers and
stable ``code``. Problems are small: the body is held until it is whole.
"""

from __future__ import annotations

import json
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

PREFIX = "/openai/"
PROBLEM = b"application/problem+json"
# OpenAI's error types by status (what its clients and docs use).
TYPES = {401: "authentication_error", 403: "permission_error", 404: "not_found_error"}
TYPES |= {409: "conflict_error", 429: "rate_limit_error"}


def openai_error(problem: dict[str, Any], status: int) -> dict[str, Any]:
    """A problem+json body as OpenAI's error body."""
    errors = problem.get("errors") or []
    param = None
    if errors and isinstance(errors[0], dict):
        loc = [str(part) for part in errors[0].get("loc", []) if part not in ("body", "query")]
        param = ".".join(loc) or None
    message = str(problem.get("detail", ""))
    if errors:  # the field errors say what the detail does not
        message += ": " + "; ".join(
            f"{'.'.join(str(p) for p in e.get('loc', [])[1:])}: {e.get('msg', '')}"
            for e in errors
            if isinstance(e, dict)
        )
    kind = TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")
    return {
        "error": {"message": message, "type": kind, "param": param, "code": problem.get("code")}
    }


class OpenAIErrorsMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(PREFIX):
            await self.app(scope, receive, send)
            return
        start: Message | None = None
        body = bytearray()

        async def rewriting(message: Message) -> None:
            nonlocal start
            if message["type"] == "http.response.start" and _is_problem(message):
                start = message
                return
            if start is None:
                await send(message)
                return
            body.extend(message.get("body", b""))
            if message.get("more_body", False):
                return
            rewritten = json.dumps(openai_error(json.loads(body), start["status"])).encode()
            headers = [
                (k, v)
                for k, v in start.get("headers", [])
                if k not in (b"content-type", b"content-length")
            ]
            headers += [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(rewritten)).encode()),
            ]
            await send({**start, "headers": headers})
            await send({"type": "http.response.body", "body": rewritten})

        await self.app(scope, receive, rewriting)


def _is_problem(start: Message) -> bool:
    return any(k == b"content-type" and v.startswith(PROBLEM) for k, v in start.get("headers", []))
