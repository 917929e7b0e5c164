"""Per (tenant, user) limits for authenticated calls, per client IP otherwise (BUG-018).

The buckets are built from the verified principal only; ``X-Tenant-ID`` and ``X-User-ID``
can name a user *within* the key's tenant, never another tenant's bucket. Because the user
is only the caller's word, every authenticated call is also charged to its API key's and
its tenant's buckets -- all three in one step, so a key that rotates user ids still meets
a ceiling.
"""

from __future__ import annotations

import ipaddress
import math
import re

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from atelier.coordination.base import Bucket, Quota
from atelier.http.errors import send_problem
from atelier.http.scope import client_ip, principal
from atelier.settings import Settings

# Operational endpoints are polled by load balancers and scrapers; they are never limited.
# Nor are the console's own files (a dozen small fixed files per page load, before any
# key): what the console then does is limited as any caller's calls are.
_EXEMPT = frozenset({"/health", "/ready", "/metrics", "/", "/console"})
_EXEMPT_PREFIX = "/console/"
# Starting work or moving bytes costs more than reading.
_EXPENSIVE = (
    ("POST", re.compile(r"^/v1/conversations/[^/]+/runs/?$")),
    ("POST", re.compile(r"^/v1/conversations/[^/]+/files/?$")),
    ("PUT", re.compile(r"^/v1/conversations/[^/]+/files/.+$")),
    ("POST", re.compile(r"^/v1/chats/[^/]+/messages/?$")),
    ("POST", re.compile(r"^/ai-sdk/chat/?$")),
    ("POST", re.compile(r"^/ag-ui/agents/[^/]+/?$")),
)


class RateLimitMiddleware:
    def __init__(self, app: ASGIApp, *, settings: Settings) -> None:
        self.app = app
        self.enabled = settings.rate_limit_enabled
        self.user_quota = Quota(settings.rate_limit_per_minute, settings.rate_limit_burst)
        self.key_quota = Quota(settings.rate_limit_key_per_minute, settings.rate_limit_key_burst)
        self.tenant_quota = Quota(
            settings.rate_limit_tenant_per_minute, settings.rate_limit_tenant_burst
        )
        self.anonymous_quota = Quota(
            settings.rate_limit_anonymous_per_minute, settings.rate_limit_anonymous_burst
        )
        self.expensive_cost = settings.rate_limit_expensive_cost
        self.trusted_proxies = [
            ipaddress.ip_network(n, strict=False) for n in settings.trusted_proxies
        ]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if (
            scope["type"] != "http"
            or not self.enabled
            or path in _EXEMPT
            or path.startswith(_EXEMPT_PREFIX)
        ):
            await self.app(scope, receive, send)
            return
        caller = principal(scope)
        buckets: list[Bucket]
        if caller is not None:
            buckets = [
                (f"t:{caller.tenant_id}:u:{caller.user_id or ''}", self.user_quota),
                (f"k:{caller.key_id}", self.key_quota),
                (f"t:{caller.tenant_id}", self.tenant_quota),
            ]
        else:
            buckets = [(f"ip:{client_ip(scope, self.trusted_proxies)}", self.anonymous_quota)]
        cost = self._cost(scope["method"], scope["path"])
        decision = await scope["app"].state.resources.rate_limiter.check(buckets, cost)
        headers = {
            "ratelimit-limit": str(decision.limit),
            "ratelimit-remaining": str(decision.remaining),
            "ratelimit-reset": str(math.ceil(decision.reset_after_ms / 1000)),
        }
        if not decision.allowed:
            retry_after = str(max(1, math.ceil(decision.retry_after_ms / 1000)))
            await send_problem(
                send,
                429,
                "rate_limited",
                f"too many requests; retry after {retry_after} s",
                {**headers, "retry-after": retry_after},
            )
            return
        raw = [(k.encode(), v.encode()) for k, v in headers.items()]

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", ()), *raw]}
            await send(message)

        await self.app(scope, receive, send_with_headers)

    def _cost(self, method: str, path: str) -> int:
        for expensive_method, pattern in _EXPENSIVE:
            if method == expensive_method and pattern.match(path):
                return self.expensive_cost
        return 1
