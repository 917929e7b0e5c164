"""End-user tokens: a product's server mints one with its secret key, and the browser
holding it *is* that user of that tenant -- nothing more.

A token is a JWT signed (HS256) with a key derived from ``ATELIER_SECRETS_KEY``, so every
process verifies it without a lookup of its own; the one lookup checks that the key that
minted it is still active and that its user's tokens were not revoked since (both cached
for ``api_key_cache_seconds``). Services flush; the caller's unit of work commits.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import jwt
from sqlalchemy import delete, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from atelier.agents.models import Agent
from atelier.agents.secrets import Sealer
from atelier.conversations.models import Conversation
from atelier.db import limits
from atelier.db.base import utcnow
from atelier.errors import Refused
from atelier.tenants.models import ApiKey, Tenant, TokenRevocation
from atelier.tenants.principal import SCOPES, USER_ID_PATTERN, Grant

TOKEN_PREFIX = "atu_"  # noqa: S105 (a prefix, for scanners and people to tell tokens by)
ISSUER = "atelier"
_PURPOSE = "atelier end-user tokens v1"
_USER_ID = re.compile(USER_ID_PATTERN)


class TokenRejected(Exception):
    """A token that authenticates nobody: ``code`` is ``invalid_token`` or ``token_expired``."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True)
class VerifiedUser:
    """An end user as a verified token names them."""

    tenant_id: uuid.UUID
    tenant_name: str
    key_id: uuid.UUID  # the key that minted the token (for a JWT of the tenant's IdP, its id)
    user_id: str
    grant: Grant
    expires_at: float  # epoch seconds: no cache keeps it longer


@dataclass(frozen=True)
class MintedToken:
    token: str
    expires_at: datetime
    user_id: str


def looks_like_ours(token: str) -> bool:
    return token.startswith(TOKEN_PREFIX)


class TokenSigner:
    """Signs and checks the signature of Atelier's own tokens; the first configured
    secrets key signs, every one verifies (rotation)."""

    def __init__(self, sealer: Sealer) -> None:
        self.sealer = sealer

    def _keys(self) -> dict[str, bytes]:
        return {hashlib.sha256(key).hexdigest()[:12]: key for key in self.sealer.derived(_PURPOSE)}

    def mint(
        self,
        *,
        tenant_id: uuid.UUID,
        key_id: uuid.UUID,
        user_id: str,
        lifetime: int,
        scopes: frozenset[str],
        conversation_ids: list[uuid.UUID] | None,
        agent_ids: list[uuid.UUID] | None,
    ) -> MintedToken:
        kid, key = next(iter(self._keys().items()))
        # Milliseconds: a token minted the moment after a revocation outlives it.
        issued = round(time.time(), 3)
        expires = int(issued) + lifetime
        claims: dict[str, object] = {
            "iss": ISSUER,
            "sub": user_id,
            "tid": str(tenant_id),
            "kid": str(key_id),
            "iat": issued,
            "exp": expires,
            "jti": secrets.token_hex(12),
            "scp": sorted(scopes),
        }
        if conversation_ids is not None:
            claims["cnv"] = [str(c) for c in conversation_ids]
        if agent_ids is not None:
            claims["agt"] = [str(a) for a in agent_ids]
        token = jwt.encode(claims, key, algorithm="HS256", headers={"kid": kid})
        return MintedToken(
            token=TOKEN_PREFIX + token,
            expires_at=datetime.fromtimestamp(expires, UTC),
            user_id=user_id,
        )

    def read(self, token: str) -> dict[str, object]:
        """The claims of a token this deployment signed, unexpired; ``TokenRejected`` else."""
        raw = token.removeprefix(TOKEN_PREFIX)
        try:
            kid = jwt.get_unverified_header(raw).get("kid")
            key = self._keys().get(kid) if isinstance(kid, str) else None
            if key is None:
                raise TokenRejected("invalid_token", "the token was not issued by this Atelier")
            return jwt.decode(
                raw,
                key,
                algorithms=["HS256"],
                issuer=ISSUER,
                options={"require": ["exp", "iat", "sub", "tid", "kid"]},
            )
        except jwt.ExpiredSignatureError:
            raise TokenRejected("token_expired", "the token has expired") from None
        except jwt.PyJWTError:
            raise TokenRejected("invalid_token", "the token is not valid") from None


def grant_of(claims: dict[str, object]) -> Grant:
    """The restrictions a token of ours carries; ``TokenRejected`` when they are malformed
    (the signature held, so only a bug of ours could make them so)."""
    try:
        scopes = frozenset(str(s) for s in claims.get("scp", SCOPES))  # type: ignore[attr-defined]
        conversations = claims.get("cnv")
        agents = claims.get("agt")
        return Grant(
            token_id=str(claims.get("jti", "")),
            scopes=scopes & frozenset(SCOPES),
            conversation_ids=None
            if conversations is None
            else frozenset(uuid.UUID(c) for c in conversations),  # type: ignore[attr-defined]
            agent_ids=None if agents is None else frozenset(uuid.UUID(a) for a in agents),  # type: ignore[attr-defined]
        )
    except (TypeError, ValueError):
        raise TokenRejected("invalid_token", "the token's claims are malformed") from None


async def verify(session: AsyncSession, signer: TokenSigner, token: str) -> VerifiedUser:
    """The user a token of ours names, if its key is still active and its user's tokens
    were not revoked after it was issued; ``TokenRejected`` otherwise."""
    claims = signer.read(token)
    try:
        tenant_id = uuid.UUID(str(claims["tid"]))
        key_id = uuid.UUID(str(claims["kid"]))
    except ValueError:
        raise TokenRejected("invalid_token", "the token's claims are malformed") from None
    user_id = str(claims["sub"])
    if not _USER_ID.fullmatch(user_id):
        raise TokenRejected("invalid_token", "the token's subject is not a user id")
    grant = grant_of(claims)
    row = (
        await session.execute(
            select(ApiKey.revoked_at, Tenant.name)
            .join(Tenant, Tenant.id == ApiKey.tenant_id)
            .where(ApiKey.id == key_id, ApiKey.tenant_id == tenant_id)
        )
    ).first()
    if row is None or row.revoked_at is not None:
        raise TokenRejected("invalid_token", "the key that issued the token has been revoked")
    await check_not_revoked(session, tenant_id, user_id, float(claims["iat"]))  # type: ignore[arg-type]
    return VerifiedUser(
        tenant_id=tenant_id,
        tenant_name=row.name,
        key_id=key_id,
        user_id=user_id,
        grant=grant,
        expires_at=float(claims["exp"]),  # type: ignore[arg-type]
    )


async def check_named(
    session: AsyncSession,
    tenant_id: uuid.UUID,
    user_id: str,
    conversation_ids: list[uuid.UUID] | None,
    agent_ids: list[uuid.UUID] | None,
) -> None:
    """A token may be limited only to the user's own conversations and the tenant's live
    agents: ``Refused`` otherwise (a typo would make a token that reaches nothing)."""
    if conversation_ids:
        theirs = await session.scalar(
            select(func.count()).where(
                Conversation.id.in_(set(conversation_ids)),
                Conversation.tenant_id == tenant_id,
                Conversation.user_id == user_id,
            )
        )
        if theirs != len(set(conversation_ids)):
            raise Refused("unknown_conversation", "a conversation_id is not this user's")
    if agent_ids:
        found = await session.scalar(
            select(func.count()).where(
                Agent.id.in_(set(agent_ids)),
                Agent.tenant_id == tenant_id,
                Agent.deleted_at.is_(None),
            )
        )
        if found != len(set(agent_ids)):
            raise Refused("unknown_agent", "an agent_id names no live agent of this tenant")


async def check_not_revoked(
    session: AsyncSession, tenant_id: uuid.UUID, user_id: str, issued_at: float | None
) -> None:
    """``TokenRejected`` when the user's tokens were revoked at or after ``issued_at``
    (a token that does not say when it was issued: while any revocation stands)."""
    revoked_at = await session.scalar(
        select(TokenRevocation.revoked_at).where(
            TokenRevocation.tenant_id == tenant_id, TokenRevocation.user_id == user_id
        )
    )
    if revoked_at is not None and (issued_at is None or issued_at <= revoked_at.timestamp()):
        raise TokenRejected("invalid_token", "the token has been revoked")


async def revoke_user(
    session: AsyncSession, tenant_id: uuid.UUID, user_id: str, *, max_lifetime: int, limit: int
) -> None:
    """Every token of ``user_id`` issued until now stops working. Revocations older than
    the longest token lifetime refuse nothing any more: they go first."""
    now = utcnow()
    await session.execute(
        delete(TokenRevocation).where(
            TokenRevocation.tenant_id == tenant_id,
            TokenRevocation.revoked_at < now - timedelta(seconds=max_lifetime),
        )
    )
    kept = await session.get(TokenRevocation, (tenant_id, user_id))
    if kept is not None:
        kept.revoked_at = now
    else:
        await limits.room_for_one(
            session,
            TokenRevocation,
            [TokenRevocation.tenant_id == tenant_id],
            limit,
            "token revocations",
            "ATELIER_MAX_TOKEN_REVOCATIONS",
        )
        try:
            async with session.begin_nested():
                session.add(TokenRevocation(tenant_id=tenant_id, user_id=user_id, revoked_at=now))
        except IntegrityError:  # revoked by another request this very moment: as good
            pass
    await session.flush()


__all__ = [
    "TOKEN_PREFIX",
    "MintedToken",
    "TokenRejected",
    "TokenSigner",
    "VerifiedUser",
    "check_named",
    "check_not_revoked",
    "looks_like_ours",
    "revoke_user",
    "verify",
]
