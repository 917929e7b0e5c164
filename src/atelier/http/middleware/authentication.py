"""Authentication: who is calling -- a secret API key (which names any user with
``X-User-ID``), or an end-user token (Atelier's own, or a JWT of the tenant's identity
provider), which *is* its user. Identifies only; the authorization gate rejects.

Keeping rejection for later lets the rate limiter charge failed attempts to the
caller's IP before they are answered.
"""

from __future__ import annotations

import hashlib
import re

import structlog
from sqlalchemy.exc import SQLAlchemyError
from starlette.types import ASGIApp, Receive, Scope, Send

from atelier.agents.secrets import SecretsUnavailable
from atelier.errors import Unavailable
from atelier.http.errors import send_problem
from atelier.http.scope import USER_ID_PATTERN, Principal, state
from atelier.resources import Resources
from atelier.tenants import tokens
from atelier.tenants.service import VerifiedKey, key_lookup_prefix, verify_api_key
from atelier.tenants.tokens import TokenRejected, VerifiedUser, looks_like_ours

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
        secret, user_id, tenant_hint = _credentials(scope)
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
                verified = await _verify(scope, secret, tenant_hint)
            except TokenRejected as exc:
                request_state["auth_failure"] = exc.code
                request_state["auth_detail"] = exc.message
                verified = None
            except Unavailable as exc:  # the tenant's identity provider did not answer
                await send_problem(
                    send, 503, exc.code, exc.detail, {"retry-after": str(exc.retry_after or 1)}
                )
                return
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
                request_state.setdefault("auth_failure", "invalid_api_key")
            else:
                caller = _principal(verified, user_id)
                request_state["principal"] = caller
                if user_id is not None and caller.user_id != user_id:
                    request_state["claimed_user"] = user_id  # the gate refuses it
                # Ids only: never a key or a token.
                structlog.contextvars.bind_contextvars(
                    tenant_id=str(caller.tenant_id),
                    user_id=caller.user_id,
                    key_id=str(caller.key_id),
                    **({"token_id": caller.grant.token_id} if caller.grant else {}),
                )
        await self.app(scope, receive, send)


def _principal(verified: VerifiedKey | VerifiedUser, user_id: str | None) -> Principal:
    if isinstance(verified, VerifiedUser):  # the token *is* its user: no header names another
        return Principal(
            tenant_id=verified.tenant_id,
            tenant_name=verified.tenant_name,
            key_id=verified.key_id,
            user_id=verified.user_id,
            grant=verified.grant,
        )
    return Principal(
        tenant_id=verified.tenant_id,
        tenant_name=verified.tenant_name,
        key_id=verified.key_id,
        user_id=user_id,
    )


def _credentials(scope: Scope) -> tuple[str | None, str | None, str | None]:
    secret = user_id = tenant_hint = None
    for name, raw in scope.get("headers", []):
        if name == b"authorization":
            scheme, _, value = raw.decode("latin-1").partition(" ")
            if scheme.lower() == "bearer" and value.strip():
                secret = value.strip()
        elif name == b"x-api-key" and secret is None:
            secret = raw.decode("latin-1").strip() or None
        elif name == b"x-user-id":
            user_id = raw.decode("latin-1")
        elif name == b"x-tenant-id":
            tenant_hint = raw.decode("latin-1").strip() or None
    return secret, user_id, tenant_hint


async def _verify(
    scope: Scope, secret: str, tenant_hint: str | None
) -> VerifiedKey | VerifiedUser | None:
    """The key or end-user token ``secret`` is; ``None`` for what is neither (no lookup);
    ``TokenRejected`` for a token that authenticates nobody."""
    is_key = key_lookup_prefix(secret) is not None
    is_token = not is_key and (looks_like_ours(secret) or secret.count(".") == 2)
    if not (is_key or is_token):
        return None  # not even shaped like one of our keys or a JWT: no round trip
    app_resources: Resources = scope["app"].state.resources
    digest = hashlib.sha256(secret.encode()).hexdigest()
    cached = app_resources.key_cache.get(digest)
    if cached is not None:
        return cached
    verified: VerifiedKey | VerifiedUser | None
    if is_key:
        async with app_resources.sessionmaker() as session:
            verified = await verify_api_key(session, secret)
    elif looks_like_ours(secret):
        async with app_resources.sessionmaker() as session:
            try:
                verified = await tokens.verify(session, app_resources.tokens, secret)
            except SecretsUnavailable:
                raise TokenRejected("invalid_token", "this server cannot verify tokens") from None
    else:
        verified = await app_resources.identity.verify(secret, tenant_hint)
    if verified is not None:
        app_resources.key_cache.put(digest, verified)
    return verified
