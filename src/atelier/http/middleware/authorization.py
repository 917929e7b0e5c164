"""The gate: everything but the open operational paths needs a verified API key or
end-user token, and a token reaches no further than it grants."""

from __future__ import annotations

import re

from starlette.types import ASGIApp, Receive, Scope, Send

from atelier.http.errors import send_problem
from atelier.http.scope import principal, state
from atelier.tenants.principal import Grant

OPEN_PATHS = frozenset(
    {
        "/",
        "/health",
        "/ready",
        "/metrics",
        "/docs",
        "/docs/oauth2-redirect",
        "/redoc",
        "/openapi.json",
        "/console",
    }
)
OPEN_PREFIX = "/console/"  # the console's own files: it signs in with a key afterwards
_FAILURES = {
    "missing_api_key": "send an API key as 'Authorization: Bearer <key>' or 'X-API-Key'",
    "invalid_api_key": "the API key is not valid or has been revoked",
    "invalid_token": "the token is not valid",
    "token_expired": "the token has expired",
}
_SAFE_METHODS = frozenset({"GET", "HEAD"})
# POSTs that only read (the LangGraph API searches with a body).
_READING_POST = re.compile(
    r"^/langgraph/(?:(?:assistants|threads)/(?:search|count)|threads/[^/]+/(?:history|state/checkpoint))$"
)


class AuthorizationMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or path in OPEN_PATHS or path.startswith(OPEN_PREFIX):
            await self.app(scope, receive, send)
            return
        caller = principal(scope)
        request_state = state(scope)
        if caller is None:
            code = request_state.get("auth_failure", "missing_api_key")
            detail = request_state.get("auth_detail", _FAILURES[code])
            await send_problem(send, 401, code, detail, {"www-authenticate": "Bearer"})
            return
        if caller.grant is not None:
            refusal = _beyond_grant(scope, caller.grant, request_state.get("claimed_user"))
            if refusal is not None:
                await send_problem(send, 403, *refusal)
                return
        for name, raw in scope.get("headers", []):
            if name == b"x-tenant-id":
                claimed = raw.decode("latin-1").strip()
                if claimed not in (str(caller.tenant_id), caller.tenant_name):
                    await send_problem(
                        send,
                        403,
                        "tenant_mismatch",
                        "X-Tenant-ID does not match the API key's tenant",
                    )
                    return
        await self.app(scope, receive, send)


def _beyond_grant(scope: Scope, grant: Grant, claimed_user: str | None) -> tuple[str, str] | None:
    """Why an end-user token may not make this request, if it may not. Which routes it
    reaches at all is each endpoint's: tenant administration takes a secret key."""
    if claimed_user is not None:
        return "user_mismatch", "the token is for another user than X-User-ID names"
    method, path = scope["method"], scope["path"]
    reads = method in _SAFE_METHODS or (method == "POST" and _READING_POST.match(path))
    needed = "read" if reads else "write"
    if needed not in grant.scopes:
        return "insufficient_scope", f"the token does not grant {needed!r}"
    return None
