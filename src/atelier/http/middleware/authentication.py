"""Authentication: who is calling. Identifies only; the authorization gate rejects.

Keeping rejection for later lets the rate limiter charge failed attempts to the
caller's IP before they are answered.
"""

from __future__ import annotations

import hashlib
import re

import structlog
from sqlalchemy.exc import SQLAlchemyError
from starlette.types import ASGIApp, Receive, Scope, Send

from atelier.http.errors import send_problem
from atelier.http.scope import USER_ID_PATTERN, Principal, state
from atelier.resources import Resources
from atelier.tenants.service import VerifiedKey, key_lookup_prefix, verify_api_key

# Visible ASCII, 1-128 characters: emails, UUIDs and provider ids ("auth0|123") all fit.
_USER_ID = re.compile(USER_ID_PATTERN)
log = structlog.get_logger("atelier.auth")


class AuthenticationMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        secret, user_id = _credentials(scope)
        if user_id is not None and not _USER_ID.fullmatch(user_id):
            await send_problem(
                send, 400, "invalid_user_id", "X-User-ID must be 1-128 visible ASCII characters"
            )
            return
        request_state = state(scope)
        if secret is None:
            request_state["auth_failure"] = "missing_api_key"
        else:
            try:
                verified = await _verify(scope, secret)
            except SQLAlchemyError:
                log.exception("api key lookup failed")
                await send_problem(
                    send,
                    503,
                    "database_unavailable",
                    "the database did not answer; retry shortly",
                    {"retry-after": "1"},
                )
                return
            if verified is None:
                request_state["auth_failure"] = "invalid_api_key"
            else:
                request_state["principal"] = Principal(
                    tenant_id=verified.tenant_id,
                    tenant_name=verified.tenant_name,
                    key_id=verified.key_id,
                    user_id=user_id,
                )
                structlog.contextvars.bind_contextvars(
                    tenant_id=str(verified.tenant_id), user_id=user_id
                )
        await self.app(scope, receive, send)


def _credentials(scope: Scope) -> tuple[str | None, str | None]:
    secret = user_id = None
    for name, raw in scope.get("headers", []):
        if name == b"authorization":
            scheme, _, value = raw.decode("latin-1").partition(" ")
            if scheme.lower() == "bearer" and value.strip():
                secret = value.strip()
        elif name == b"x-api-key" and secret is None:
            secret = raw.decode("latin-1").strip() or None
        elif name == b"x-user-id":
            user_id = raw.decode("latin-1")
    return secret, user_id


async def _verify(scope: Scope, secret: str) -> VerifiedKey | None:
    if key_lookup_prefix(secret) is None:
        return None  # not even shaped like one of our keys: no database round trip
    app_resources: Resources = scope["app"].state.resources
    digest = hashlib.sha256(secret.encode()).hexdigest()
    cached = app_resources.key_cache.get(digest)
    if cached is not None:
        return cached
    async with app_resources.sessionmaker() as session:
        verified = await verify_api_key(session, secret)
    if verified is not None:
        app_resources.key_cache.put(digest, verified)
    return verified
