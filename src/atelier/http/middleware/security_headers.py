"""Headers every response carries; the interactive docs get a CSP that lets them load."""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

_API_CSP = b"default-src 'none'; frame-ancestors 'none'"
# FastAPI's Swagger UI and ReDoc pages load their assets from jsDelivr and run an inline script.
_DOCS_CSP = (
    b"default-src 'self'; script-src 'self' 'unsafe-inline' https://cdn.jsdelivr.net; "
    b"style-src 'self' 'unsafe-inline' https://cdn.jsdelivr.net https://fonts.googleapis.com; "
    b"font-src 'self' https://fonts.gstatic.com; "
    b"img-src 'self' data: https://fastapi.tiangolo.com https://cdn.redoc.ly; "
    b"worker-src 'self' blob:; frame-ancestors 'none'"
)
_DOCS_PATHS = frozenset({"/docs", "/docs/oauth2-redirect", "/redoc"})
# The console: its own scripts and styles only (no inline script or style, nothing from
# elsewhere); it talks to this origin alone.
_CONSOLE_CSP = (
    b"default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
    b"connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)


class SecurityHeadersMiddleware:
    def __init__(self, app: ASGIApp, *, hsts: bool = True, docs: bool = False) -> None:
        """``docs``: the interactive docs are served (development only)."""
        self.app = app
        self.docs_paths = _DOCS_PATHS if docs else frozenset()
        common = [
            (b"x-content-type-options", b"nosniff"),
            (b"referrer-policy", b"no-referrer"),
            (b"x-frame-options", b"DENY"),
            (b"cross-origin-opener-policy", b"same-origin"),
        ]
        self.api_headers = [*common, (b"content-security-policy", _API_CSP)]
        self.docs_headers = [*common, (b"content-security-policy", _DOCS_CSP)]
        self.console_headers = [*common, (b"content-security-policy", _CONSOLE_CSP)]
        self.hsts = hsts

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        extra = (
            self.docs_headers
            if path in self.docs_paths
            else self.console_headers
            if path.startswith("/console/")
            else self.api_headers
        )
        # Only over https: HSTS sent over plain http is ignored, and it must not pin a dev setup.
        if self.hsts and scope.get("scheme") == "https":
            extra = [*extra, (b"strict-transport-security", b"max-age=63072000; includeSubDomains")]

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", ()), *extra]}
            await send(message)

        await self.app(scope, receive, send_with_headers)
