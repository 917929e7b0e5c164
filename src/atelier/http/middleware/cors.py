"""CORS per tenant: a browser on an origin the tenant lists (PUT /v1/cors) may call Atelier.

A preflight carries no key: it is answered here, before authentication and rate limits,
for an origin any tenant lists. The request that follows is answered with CORS headers
when the caller's own tenant lists its origin -- or, when it authenticated nobody (an
expired token), when any tenant does, so the page can read the 401 and refresh its token.
No credentials (cookies) are ever allowed: callers authenticate with a header.
"""

from __future__ import annotations

import re

import structlog
from sqlalchemy.exc import SQLAlchemyError
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from atelier.http.errors import send_problem
from atelier.http.scope import principal

_METHODS = b"GET, HEAD, POST, PUT, PATCH, DELETE"
# What Atelier's own clients send; what a preflight asks for beyond these (an SDK's own
# headers: x-stainless-*, ...) is allowed too, as authorization never rests on them.
_HEADERS = (
    "authorization",
    "x-api-key",
    "x-user-id",
    "x-tenant-id",
    "last-event-id",
    "idempotency-key",
    "content-type",
)
_EXPOSED = (
    b"Location, Content-Location, Retry-After, Idempotent-Replayed, X-Request-ID, "
    b"RateLimit-Limit, RateLimit-Remaining, RateLimit-Reset, x-vercel-ai-ui-message-stream"
)
_HEADER_NAME = re.compile(r"^[A-Za-z0-9!#$%&'*+.^_`|~-]{1,64}$")
_MAX_AGE = b"600"
log = structlog.get_logger("atelier.cors")


class CorsMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers", ()))
        raw_origin = headers.get(b"origin")
        if raw_origin is None:
            await self.app(scope, receive, send)
            return
        origin = raw_origin.decode("latin-1")
        try:
            listing = await scope["app"].state.resources.origins.tenants_listing(origin)
        except SQLAlchemyError:  # no answer to whose origin it is: none, this time
            log.warning("cors origin lookup failed")
            listing = frozenset()
        if scope["method"] == "OPTIONS" and b"access-control-request-method" in headers:
            await _preflight(send, raw_origin, bool(listing), headers)
            return

        async def send_with_cors(message: Message) -> None:
            if message["type"] == "http.response.start":
                caller = principal(scope)
                allowed = caller.tenant_id in listing if caller is not None else bool(listing)
                extra = [(b"vary", b"Origin")]
                if allowed:
                    extra += [
                        (b"access-control-allow-origin", raw_origin),
                        (b"access-control-expose-headers", _EXPOSED),
                    ]
                message = {**message, "headers": [*message.get("headers", ()), *extra]}
            await send(message)

        await self.app(scope, receive, send_with_cors)


async def _preflight(send: Send, origin: bytes, allowed: bool, headers: dict[bytes, bytes]) -> None:
    vary = b"Origin, Access-Control-Request-Method, Access-Control-Request-Headers"
    if not allowed:
        await send_problem(
            send,
            403,
            "origin_not_allowed",
            "no tenant lists this origin: add it with PUT /v1/cors",
            {"vary": vary.decode()},
        )
        return
    asked = headers.get(b"access-control-request-headers", b"").decode("latin-1")
    names = [n.strip().lower() for n in asked.split(",") if n.strip()][:50]
    allowed_headers = list(_HEADERS) + [
        n for n in names if _HEADER_NAME.fullmatch(n) and n not in _HEADERS
    ]
    await send(
        {
            "type": "http.response.start",
            "status": 204,
            "headers": [
                (b"access-control-allow-origin", origin),
                (b"access-control-allow-methods", _METHODS),
                (b"access-control-allow-headers", ", ".join(allowed_headers).encode()),
                (b"access-control-max-age", _MAX_AGE),
                (b"vary", vary),
            ],
        }
    )
    await send({"type": "http.response.body", "body": b""})
