"""Tenants and their API keys. Services flush; the caller's unit of work commits."""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import uuid
from dataclasses import dataclass

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from atelier.agents import service as agents
from atelier.db import paging
from atelier.db.base import utcnow
from atelier.db.limits import room_for_one
from atelier.errors import NotFound
from atelier.tenants.models import ApiKey, Tenant

KEY_PREFIX = "atl"
# atl_<12 hex lookup prefix>_<43 url-safe secret chars>
KEY_PATTERN = re.compile(r"^atl_([0-9a-f]{12})_[A-Za-z0-9_-]{43}$")
TENANT_NAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9._-]{0,99}$")


class TenantError(ValueError):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class IssuedKey:
    """A key as issued: ``secret`` is shown once and never stored."""

    id: uuid.UUID
    tenant_id: uuid.UUID
    name: str
    secret: str


@dataclass(frozen=True)
class VerifiedKey:
    key_id: uuid.UUID
    tenant_id: uuid.UUID
    tenant_name: str


def hash_key(secret: str) -> str:
    # Keys carry 256 bits of randomness, so a fast hash is safe (no dictionary to attack).
    return hashlib.sha256(secret.encode()).hexdigest()


def key_lookup_prefix(secret: str) -> str | None:
    match = KEY_PATTERN.fullmatch(secret)
    return match.group(1) if match else None


async def create_tenant(session: AsyncSession, name: str) -> Tenant:
    if not TENANT_NAME_PATTERN.fullmatch(name):
        raise TenantError(
            "invalid_tenant_name",
            "tenant names are 1-100 characters: lowercase letters, digits, '.', '_' or '-'",
        )
    if await tenant_by_name(session, name) is not None:
        raise TenantError("tenant_exists", f"tenant {name!r} already exists")
    tenant = Tenant(name=name)
    session.add(tenant)
    await session.flush()
    await agents.ensure_default(session, tenant.id)
    return tenant


async def tenant_by_name(session: AsyncSession, name: str) -> Tenant | None:
    return await session.scalar(select(Tenant).where(Tenant.name == name))


async def any_tenant_exists(session: AsyncSession) -> bool:
    return await session.scalar(select(Tenant.id).limit(1)) is not None


async def create_api_key(session: AsyncSession, tenant: Tenant, name: str = "") -> IssuedKey:
    prefix = secrets.token_hex(6)
    secret = f"{KEY_PREFIX}_{prefix}_{secrets.token_urlsafe(32)}"
    key = ApiKey(tenant_id=tenant.id, name=name[:100], prefix=prefix, key_hash=hash_key(secret))
    session.add(key)
    await session.flush()
    return IssuedKey(id=key.id, tenant_id=tenant.id, name=key.name, secret=secret)


async def api_keys(
    session: AsyncSession, tenant_id: uuid.UUID, limit: int, cursor: str | None
) -> tuple[list[ApiKey], str | None]:
    """A page of the tenant's keys (revoked ones too), the newest first."""
    query = select(ApiKey).where(ApiKey.tenant_id == tenant_id)
    return await paging.page(
        session, query, [ApiKey.created_at, ApiKey.id], limit, cursor, newest_first=True
    )


async def issue_api_key(
    session: AsyncSession, tenant_id: uuid.UUID, name: str, limit: int
) -> IssuedKey:
    """A new key of the tenant, within its cap of active keys (``409 limit_reached``)."""
    active = [ApiKey.tenant_id == tenant_id, ApiKey.revoked_at.is_(None)]
    await room_for_one(session, ApiKey, active, limit, "active API keys", "ATELIER_MAX_API_KEYS")
    tenant = await session.get(Tenant, tenant_id)
    assert tenant is not None
    return await create_api_key(session, tenant, name)


async def revoke_tenant_key(session: AsyncSession, tenant_id: uuid.UUID, key_id: uuid.UUID) -> None:
    """Revoke one of the tenant's keys (``NotFound`` if it has no such active key)."""
    owned = await session.scalar(
        select(ApiKey.id).where(ApiKey.id == key_id, ApiKey.tenant_id == tenant_id)
    )
    if owned is None or not await revoke_api_key(session, key_id):
        raise NotFound("not_found", "no such active API key")


async def revoke_api_key(session: AsyncSession, key_id: uuid.UUID) -> bool:
    """Revoke a key; returns False when no such active key exists."""
    result = await session.execute(
        update(ApiKey)
        .where(ApiKey.id == key_id, ApiKey.revoked_at.is_(None))
        .values(revoked_at=utcnow())
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


async def verify_api_key(session: AsyncSession, secret: str) -> VerifiedKey | None:
    prefix = key_lookup_prefix(secret)
    if prefix is None:
        return None
    row = (
        await session.execute(
            select(ApiKey, Tenant.name)
            .join(Tenant, Tenant.id == ApiKey.tenant_id)
            .where(ApiKey.prefix == prefix, ApiKey.revoked_at.is_(None))
        )
    ).first()
    if row is None or not hmac.compare_digest(row[0].key_hash, hash_key(secret)):
        return None
    key, tenant_name = row
    return VerifiedKey(key_id=key.id, tenant_id=key.tenant_id, tenant_name=tenant_name)
