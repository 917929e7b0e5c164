"""The gate: everything but the open operational paths needs a verified API key."""

from __future__ import annotations

from starlette.types import ASGIApp, Receive, Scope, Send

from atelier.http.errors import send_problem
from atelier.http.scope import principal, state

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
}


class AuthorizationMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or path in OPEN_PATHS or path.startswith(OPEN_PREFIX):
            await self.app(scope, receive, send)
            return
        caller = principal(scope)
        if caller is None:
            code = state(scope).get("auth_failure", "missing_api_key")
            await send_problem(send, 401, code, _FAILURES[code], {"www-authenticate": "Bearer"})
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
