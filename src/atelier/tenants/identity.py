"""A tenant's own identity provider: a JWT it issued, verified, authenticates the user it
names exactly as a token Atelier minted does.

Verification is PyJWT's. The keys come from the provider's JWKS -- fetched under the
outbound rules every tenant URL follows (public addresses only, read up to a cap), kept
for ``identity_jwks_cache_seconds`` and fetched again, at most every
``identity_jwks_refresh_seconds``, when a token names a key they lack (rotation) -- or are
one shared secret, sealed at rest.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

import httpx
import jwt
import structlog
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from atelier.agents.secrets import Sealer, SecretsUnavailable
from atelier.errors import Refused, Unavailable
from atelier.http.outbound import (
    ByteCap,
    ResponseTooLarge,
    UrlNotAllowed,
    check_public,
    redacted,
    tenant_client,
    unredacted,
    within,
)
from atelier.settings import Settings
from atelier.tenants.models import IdentityProvider, Tenant
from atelier.tenants.principal import USER_ID_PATTERN, Grant
from atelier.tenants.schemas import ASYMMETRIC, SYMMETRIC, IdentityIn, IdentityOut
from atelier.tenants.tokens import TokenRejected, VerifiedUser, check_not_revoked

log = structlog.get_logger("atelier.identity")
_USER_ID = re.compile(USER_ID_PATTERN)
MAX_KEYS = 20  # keys a JWKS may hold that we keep
# Rate limits and idempotency are per key: a provider's tokens count as one key per tenant.
_IDP_KEY = uuid.UUID("6f1d3e0a-5b7c-4e7a-9c55-1d2a0e1f0b1a")


def provider_key_id(tenant_id: uuid.UUID) -> uuid.UUID:
    return uuid.uuid5(_IDP_KEY, str(tenant_id))


# -- the tenant's setting -------------------------------------------------------------


def shown(row: IdentityProvider) -> IdentityOut:
    return IdentityOut(
        issuer=row.issuer,
        audience=row.audience,
        jwks_url=None if row.jwks_url is None else redacted(row.jwks_url),
        has_hs256_secret=row.hs256_secret_sealed is not None,
        user_claim=row.user_claim,
        algorithms=list(row.algorithms),
        leeway_seconds=row.leeway_seconds,
        updated_at=row.updated_at,
    )


async def get(session: AsyncSession, tenant_id: uuid.UUID) -> IdentityProvider | None:
    return await session.get(IdentityProvider, tenant_id)


async def put(
    session: AsyncSession,
    sealer: Sealer,
    tenant_id: uuid.UUID,
    data: IdentityIn,
    *,
    allow_private: bool,
) -> IdentityProvider:
    """Replace the tenant's provider. A PUT that names neither key source keeps the one
    kept: a shared secret is never shown, so a read-modify-write could not send it."""
    row = await get(session, tenant_id)
    jwks_url = data.jwks_url
    sealed: str | None = None
    if data.hs256_secret is not None:
        try:
            sealed = sealer.seal_text(data.hs256_secret.get_secret_value())
        except SecretsUnavailable as exc:
            raise Unavailable("secrets_unavailable", str(exc)) from exc
    elif jwks_url is None and row is not None:
        jwks_url, sealed = row.jwks_url, row.hs256_secret_sealed
    elif jwks_url is not None and row is not None:
        jwks_url = unredacted(jwks_url, row.jwks_url)
    if jwks_url is None and sealed is None:
        raise Refused("identity_key_required", "give jwks_url or hs256_secret")
    if jwks_url is not None:
        try:
            await check_public(jwks_url, allow_private=allow_private)
        except UrlNotAllowed as exc:
            raise Refused("jwks_url_not_allowed", str(exc)) from exc
    family = SYMMETRIC if sealed is not None else ASYMMETRIC
    algorithms: list[str] = list(data.algorithms or (["HS256"] if sealed else ASYMMETRIC))
    if any(a not in family for a in algorithms):
        raise Refused(
            "algorithm_not_allowed",
            "HMAC algorithms need hs256_secret; public-key algorithms need jwks_url",
        )
    if row is None:
        row = IdentityProvider(tenant_id=tenant_id)
        session.add(row)
    row.issuer, row.audience = data.issuer, data.audience
    row.jwks_url, row.hs256_secret_sealed = jwks_url, sealed
    row.user_claim, row.algorithms = data.user_claim, list(algorithms)
    row.leeway_seconds = data.leeway_seconds
    await session.flush()
    return row


async def delete(session: AsyncSession, tenant_id: uuid.UUID) -> bool:
    row = await get(session, tenant_id)
    if row is None:
        return False
    await session.delete(row)
    await session.flush()
    return True


# -- verifying its tokens -------------------------------------------------------------


@dataclass(frozen=True)
class _Provider:
    tenant_id: uuid.UUID
    tenant_name: str
    issuer: str
    audience: str
    jwks_url: str | None
    secret: str | None
    user_claim: str
    algorithms: tuple[str, ...]
    leeway: int


@dataclass
class _KeySet:
    keys: dict[str | None, jwt.PyJWK] = field(default_factory=dict)
    fetched_at: float = float("-inf")  # when they were last fetched (monotonic)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


class IdentityVerifier:
    """Verifies JWTs of the tenants' identity providers; holds their keys."""

    def __init__(
        self, sessionmaker: async_sessionmaker[AsyncSession], sealer: Sealer, settings: Settings
    ) -> None:
        self.sessionmaker = sessionmaker
        self.sealer = sealer
        self.settings = settings
        self._providers: OrderedDict[str, tuple[float, list[_Provider]]] = OrderedDict()
        self._keys: OrderedDict[tuple[uuid.UUID, str], _KeySet] = OrderedDict()

    def forget(self) -> None:
        """A tenant changed its provider: what this process kept of them is stale."""
        self._providers.clear()
        self._keys.clear()

    async def verify(self, token: str, tenant_hint: str | None) -> VerifiedUser:
        try:
            header = jwt.get_unverified_header(token)
            unverified = jwt.decode(token, options={"verify_signature": False})
        except jwt.PyJWTError:
            raise TokenRejected("invalid_token", "the token is not a valid JWT") from None
        issuer = unverified.get("iss")
        if not isinstance(issuer, str):
            raise TokenRejected("invalid_token", "the token names no issuer")
        candidates = [
            p
            for p in await self._providers_of(issuer)
            if tenant_hint is None or tenant_hint in (str(p.tenant_id), p.tenant_name)
        ]
        if not candidates:
            raise TokenRejected("invalid_token", "no tenant trusts the token's issuer")
        if len(candidates) > 1:
            audience = unverified.get("aud")
            audiences = audience if isinstance(audience, list) else [audience]
            candidates = [p for p in candidates if p.audience in audiences] or candidates[:1]
        if len(candidates) > 1:
            raise TokenRejected(
                "invalid_token", "several tenants trust this issuer: send X-Tenant-ID"
            )
        provider = candidates[0]
        claims = await self._decode(token, header, provider)
        user_id = claims.get(provider.user_claim)
        if not isinstance(user_id, str) or not _USER_ID.fullmatch(user_id):
            raise TokenRejected(
                "invalid_token", f"the token's {provider.user_claim!r} claim is not a user id"
            )
        issued = claims.get("iat")
        async with self.sessionmaker() as session:
            await check_not_revoked(
                session,
                provider.tenant_id,
                user_id,
                float(issued) if isinstance(issued, int | float) else None,
            )
        return VerifiedUser(
            tenant_id=provider.tenant_id,
            tenant_name=provider.tenant_name,
            key_id=provider_key_id(provider.tenant_id),
            user_id=user_id,
            grant=Grant(token_id=str(claims.get("jti", ""))[:64]),
            expires_at=float(claims["exp"]),
        )

    async def _decode(
        self, token: str, header: dict[str, Any], provider: _Provider
    ) -> dict[str, Any]:
        alg = header.get("alg")
        if alg not in provider.algorithms:
            raise TokenRejected(
                "invalid_token", f"the token's algorithm ({alg}) is not one this tenant allows"
            )
        key: jwt.PyJWK | str
        if provider.secret is not None:
            key = provider.secret
        else:
            key = await self._key(provider, header.get("kid"))
        try:
            return jwt.decode(
                token,
                key,
                algorithms=list(provider.algorithms),
                audience=provider.audience,
                issuer=provider.issuer,
                leeway=provider.leeway,
                options={"require": ["exp", "iss", "aud"]},
            )
        except jwt.ExpiredSignatureError:
            raise TokenRejected("token_expired", "the token has expired") from None
        except jwt.ImmatureSignatureError:
            raise TokenRejected("invalid_token", "the token is not valid yet") from None
        except jwt.InvalidAudienceError:
            raise TokenRejected("invalid_token", "the token is for another audience") from None
        except jwt.InvalidIssuerError:
            raise TokenRejected("invalid_token", "the token is from another issuer") from None
        except jwt.MissingRequiredClaimError as exc:
            raise TokenRejected("invalid_token", f"the token lacks {exc.claim!r}") from None
        except jwt.InvalidSignatureError:
            raise TokenRejected("invalid_token", "the token's signature does not verify") from None
        except jwt.PyJWTError:
            raise TokenRejected("invalid_token", "the token is not valid") from None

    async def _providers_of(self, issuer: str) -> list[_Provider]:
        kept = self._providers.get(issuer)
        if kept is not None and time.monotonic() < kept[0]:
            return kept[1]
        async with self.sessionmaker() as session:
            rows = (
                await session.execute(
                    select(IdentityProvider, Tenant.name)
                    .join(Tenant, Tenant.id == IdentityProvider.tenant_id)
                    .where(IdentityProvider.issuer == issuer)
                    .limit(10)
                )
            ).all()
        providers = [self._provider(row, name) for row, name in rows]
        self._providers[issuer] = (
            time.monotonic() + self.settings.api_key_cache_seconds,
            [p for p in providers if p is not None],
        )
        self._providers.move_to_end(issuer)
        while len(self._providers) > 1000:  # unknown issuers are remembered too, boundedly
            self._providers.popitem(last=False)
        return self._providers[issuer][1]

    def _provider(self, row: IdentityProvider, tenant_name: str) -> _Provider | None:
        secret = None
        if row.hs256_secret_sealed is not None:
            try:
                secret = self.sealer.open_text(row.hs256_secret_sealed)
            except SecretsUnavailable:
                log.error("identity secret cannot be opened", tenant_id=str(row.tenant_id))
                return None
        return _Provider(
            tenant_id=row.tenant_id,
            tenant_name=tenant_name,
            issuer=row.issuer,
            audience=row.audience,
            jwks_url=row.jwks_url,
            secret=secret,
            user_claim=row.user_claim,
            algorithms=tuple(row.algorithms),
            leeway=row.leeway_seconds,
        )

    async def _key(self, provider: _Provider, kid: object) -> jwt.PyJWK:
        assert provider.jwks_url is not None
        slot = (provider.tenant_id, provider.jwks_url)
        keys = self._keys.get(slot)
        if keys is None:
            keys = self._keys[slot] = _KeySet()
            while len(self._keys) > 1000:
                self._keys.popitem(last=False)
        kid = kid if isinstance(kid, str) else None
        settings = self.settings
        age = time.monotonic() - keys.fetched_at
        if age > settings.identity_jwks_cache_seconds or (
            kid not in keys.keys and age > settings.identity_jwks_refresh_seconds
        ):
            async with keys.lock:  # one fetch at a time; those waiting use its keys
                if keys.fetched_at == float("-inf") or (
                    time.monotonic() - keys.fetched_at > settings.identity_jwks_refresh_seconds
                ):
                    await self._fetch(provider.jwks_url, keys)
        found = keys.keys.get(kid)
        if found is None and kid is None and len(keys.keys) == 1:
            found = next(iter(keys.keys.values()))
        if found is None:
            raise TokenRejected(
                "invalid_token", "the token names a key its issuer does not publish"
            )
        return found

    async def _fetch(self, url: str, keys: _KeySet) -> None:
        """The JWKS at ``url`` into ``keys``. Keys fetched before are kept when it fails
        (for their cache time again): an IdP that is down for a moment refuses no user."""
        settings = self.settings
        cap = ByteCap(settings.identity_jwks_max_bytes, "the JWKS")
        try:
            async with tenant_client(
                allow_private=settings.identity_allow_private,
                timeout=settings.identity_fetch_timeout_seconds,
                cap=cap,
            ) as client:
                response = await within(
                    cap, client.get(url, headers={"accept": "application/json"})
                )
            response.raise_for_status()
            document = json.loads(response.content)
            found: dict[str | None, jwt.PyJWK] = {}
            for entry in document.get("keys", [])[:MAX_KEYS]:
                if entry.get("use", "sig") != "sig":
                    continue
                try:
                    key = jwt.PyJWK(entry)
                except jwt.PyJWTError:
                    continue  # a key of a type we do not verify with: others may do
                found[entry.get("kid")] = key
        except (httpx.HTTPError, ResponseTooLarge, ValueError, AttributeError, TypeError) as exc:
            keys.fetched_at = time.monotonic()
            log.warning("jwks fetch failed", url=redacted(url), error=type(exc).__name__)
            if keys.keys:
                return
            raise Unavailable(
                "identity_unavailable",
                "the identity provider's keys could not be fetched; retry shortly",
                retry_after=max(1, int(settings.identity_jwks_refresh_seconds)),
            ) from exc
        keys.keys, keys.fetched_at = found, time.monotonic()
