"""Request id, log context, access log and the last-resort 500.

OpenTelemetry server spans come from FastAPI's native telemetry (enabled by
``ATELIER_OTEL_ENABLED``); this middleware runs inside that span and tags it with the
request id so traces and logs can be joined.

Outermost of our middleware, so even an unhandled error leaves as problem+json carrying
the request id (never a traceback).
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from typing import Any

import structlog
from opentelemetry import trace
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from atelier.http.errors import BrokenOff, send_problem
from atelier.http.scope import principal, state

_SANE_REQUEST_ID = re.compile(rb"^[A-Za-z0-9._:-]{1,128}$")
log = structlog.get_logger("atelier.http")
access_log = logging.getLogger("atelier.http")


class RequestContextMiddleware:
    def __init__(self, app: ASGIApp, *, tag_spans: bool = False) -> None:
        self.app = app
        self.tag_spans = tag_spans

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = _request_id(scope)
        state(scope)["request_id"] = request_id
        header = (b"x-request-id", request_id.encode())
        response: dict[str, Any] = {"status": 500, "started": False}

        async def send_with_request_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                response["started"] = True
                response["status"] = message["status"]
                message = {**message, "headers": [*message.get("headers", ()), header]}
            await send(message)

        tokens = structlog.contextvars.bind_contextvars(request_id=request_id)
        if self.tag_spans:
            trace.get_current_span().set_attribute("atelier.request_id", request_id)
        started = time.perf_counter()
        try:
            await self.app(scope, receive, send_with_request_id)
        except BrokenOff as exc:
            log.warning("response broken off", path=scope["path"], reason=str(exc))
            response["status"] = "aborted"  # the client got less than it was promised
            raise  # the server aborts the connection (and does not log it: see logging)
        except Exception:
            log.exception("unhandled error", method=scope["method"], path=scope["path"])
            if response["started"]:
                response["status"] = "aborted"  # the client got less than it was promised
                raise
            await send_problem(
                send_with_request_id,
                500,
                "internal_error",
                "an unexpected error occurred; quote the request id when reporting it",
                request_id=request_id,
            )
        finally:
            if access_log.isEnabledFor(logging.INFO):
                caller = principal(scope)
                log.info(
                    "request",
                    method=scope["method"],
                    path=scope["path"],
                    status=response["status"],
                    duration_ms=round((time.perf_counter() - started) * 1000, 2),
                    tenant_id=str(caller.tenant_id) if caller else None,
                    user_id=caller.user_id if caller else None,
                )
            structlog.contextvars.reset_contextvars(**tokens)


def _request_id(scope: Scope) -> str:
    for name, value in scope.get("headers", []):
        if name == b"x-request-id" and _SANE_REQUEST_ID.fullmatch(value):
            return str(value.decode())
    return uuid.uuid4().hex
