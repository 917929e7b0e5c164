"""How end users reach Atelier themselves: tokens a product's server mints for them, the
tenant's own identity provider, and the origins its frontends run on. All of it is tenant
administration: a secret key only."""

from __future__ import annotations

import uuid

from fastapi import APIRouter, Response
from sqlalchemy.ext.asyncio import AsyncSession

from atelier.agents.secrets import SecretsUnavailable
from atelier.errors import Refused, Unavailable
from atelier.http.deps import CallerDep, Cursor, Limit, PrincipalDep, ResourcesDep, SessionDep
from atelier.http.errors import ProblemError
from atelier.resources import Resources
from atelier.tenants import cors, identity, service, tokens
from atelier.tenants.models import ApiKey
from atelier.tenants.schemas import (
    ApiKeyIn,
    ApiKeyList,
    ApiKeyOut,
    CorsIn,
    CorsOut,
    IdentityIn,
    IdentityOut,
    IssuedApiKey,
    Limits,
    RevokeIn,
    UserTokenIn,
    UserTokenOut,
)

router = APIRouter(prefix="/v1", tags=["identity"])


@router.post("/user-tokens", status_code=201)
async def mint_user_token(
    body: UserTokenIn, principal: PrincipalDep, session: SessionDep, resources: ResourcesDep
) -> UserTokenOut:
    """A token that *is* ``user_id`` for ``expires_in`` seconds: for a browser to hold."""
    longest = resources.settings.user_token_max_seconds
    if body.expires_in > longest:
        raise Refused(
            "expires_in_too_long",
            f"expires_in may be at most {longest} s (ATELIER_USER_TOKEN_MAX_SECONDS)",
        )
    await tokens.check_named(
        session, principal.tenant_id, body.user_id, body.conversation_ids, body.agent_ids
    )
    try:
        minted = resources.tokens.mint(
            tenant_id=principal.tenant_id,
            key_id=principal.key_id,
            user_id=body.user_id,
            lifetime=body.expires_in,
            scopes=frozenset(body.scopes),
            conversation_ids=body.conversation_ids,
            agent_ids=body.agent_ids,
        )
    except SecretsUnavailable as exc:
        raise Unavailable("secrets_unavailable", str(exc)) from exc
    return UserTokenOut(token=minted.token, expires_at=minted.expires_at, user_id=minted.user_id)


@router.post("/user-tokens/revoke", status_code=204)
async def revoke_user_tokens(
    body: RevokeIn, principal: PrincipalDep, session: SessionDep, resources: ResourcesDep
) -> Response:
    """Every token of the user issued until now stops working: here at once, in other
    processes within ATELIER_API_KEY_CACHE_SECONDS."""
    settings = resources.settings
    await tokens.revoke_user(
        session,
        principal.tenant_id,
        body.user_id,
        max_lifetime=settings.user_token_max_seconds,
        limit=settings.max_token_revocations,
    )
    await session.commit()
    resources.key_cache.clear()
    return Response(status_code=204)


async def _identity_changed(session: AsyncSession, resources: Resources) -> None:
    """Committed before this process forgets what it verified with the old provider: a
    request in between could otherwise cache the old one again."""
    await session.commit()
    resources.identity.forget()
    resources.key_cache.clear()


@router.put("/identity")
async def put_identity(
    body: IdentityIn, principal: PrincipalDep, session: SessionDep, resources: ResourcesDep
) -> IdentityOut:
    row = await identity.put(
        session,
        resources.sealer,
        principal.tenant_id,
        body,
        allow_private=resources.settings.identity_allow_private,
    )
    await _identity_changed(session, resources)
    return identity.shown(row)


@router.get("/identity")
async def get_identity(principal: PrincipalDep, session: SessionDep) -> IdentityOut:
    row = await identity.get(session, principal.tenant_id)
    if row is None:
        raise ProblemError(404, "not_found", "the tenant has no identity provider")
    return identity.shown(row)


@router.delete("/identity", status_code=204)
async def delete_identity(
    principal: PrincipalDep, session: SessionDep, resources: ResourcesDep
) -> Response:
    if not await identity.delete(session, principal.tenant_id):
        raise ProblemError(404, "not_found", "the tenant has no identity provider")
    await _identity_changed(session, resources)
    return Response(status_code=204)


@router.put("/cors")
async def put_cors(
    body: CorsIn, principal: PrincipalDep, session: SessionDep, resources: ResourcesDep
) -> CorsOut:
    kept = await cors.replace(
        session, principal.tenant_id, body.origins, limit=resources.settings.max_cors_origins
    )
    await session.commit()
    resources.origins.forget()
    return CorsOut(origins=kept)


@router.get("/cors")
async def get_cors(principal: PrincipalDep, session: SessionDep) -> CorsOut:
    return CorsOut(origins=await cors.origins(session, principal.tenant_id))


@router.get("/limits", tags=["limits"])
async def limits(_: CallerDep, resources: ResourcesDep) -> Limits:
    settings = resources.settings
    return Limits(
        max_file_bytes=settings.max_file_size,
        max_workspace_bytes=settings.max_workspace_bytes,
        max_request_bytes=settings.max_json_body_bytes,
    )


@router.get("/api-keys", tags=["api keys"])
async def list_api_keys(
    principal: PrincipalDep, session: SessionDep, limit: Limit = 50, cursor: Cursor = None
) -> ApiKeyList:
    """The tenant's keys, newest first, revoked ones too: prefixes and names, no secret."""
    rows, next_cursor = await service.api_keys(session, principal.tenant_id, limit, cursor)
    return ApiKeyList(
        data=[ApiKeyOut.model_validate(row, from_attributes=True) for row in rows],
        next_cursor=next_cursor,
    )


@router.post("/api-keys", status_code=201, tags=["api keys"])
async def issue_api_key(
    body: ApiKeyIn,
    principal: PrincipalDep,
    session: SessionDep,
    resources: ResourcesDep,
    response: Response,
) -> IssuedApiKey:
    """A new key for the tenant; its secret is in this answer only."""
    issued = await service.issue_api_key(
        session, principal.tenant_id, body.name, resources.settings.max_api_keys
    )
    await session.commit()
    response.headers["cache-control"] = "no-store"
    row = await session.get(ApiKey, issued.id)
    assert row is not None
    return IssuedApiKey(
        **ApiKeyOut.model_validate(row, from_attributes=True).model_dump(), secret=issued.secret
    )


@router.delete("/api-keys/{key_id}", status_code=204, tags=["api keys"])
async def revoke_api_key(
    key_id: uuid.UUID, principal: PrincipalDep, session: SessionDep, resources: ResourcesDep
) -> Response:
    """Revoked at once here, in other processes within ATELIER_API_KEY_CACHE_SECONDS; the
    end-user tokens it minted stop with it. A key may revoke itself."""
    await service.revoke_tenant_key(session, principal.tenant_id, key_id)
    await session.commit()
    resources.key_cache.clear()
    return Response(status_code=204)
