from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import JSON, ForeignKey, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from atelier.db.base import Base, IdMixin, utcnow


class Tenant(IdMixin, Base):
    __tablename__ = "tenants"

    name: Mapped[str] = mapped_column(String(100), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class ApiKey(IdMixin, Base):
    """An API key, stored as a SHA-256 hash; ``prefix`` is the public part used for lookup."""

    __tablename__ = "api_keys"

    tenant_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("tenants.id", ondelete="CASCADE"), index=True
    )
    name: Mapped[str] = mapped_column(String(100), default="")
    prefix: Mapped[str] = mapped_column(String(32), unique=True)
    key_hash: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    revoked_at: Mapped[datetime | None]


class TokenRevocation(Base):
    """Every end-user token of ``user_id`` issued at or before ``revoked_at`` is refused.

    A row outlives no token it refuses: once the longest token lifetime has passed, it
    refuses nothing and is removed."""

    __tablename__ = "user_token_revocations"

    tenant_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("tenants.id", ondelete="CASCADE"), primary_key=True
    )
    user_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    revoked_at: Mapped[datetime] = mapped_column(default=utcnow)


class IdentityProvider(Base):
    """The tenant's own identity provider: its JWTs authenticate the user they name.

    Keys come from ``jwks_url`` (asymmetric algorithms) or are one shared secret, sealed."""

    __tablename__ = "identity_providers"

    tenant_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("tenants.id", ondelete="CASCADE"), primary_key=True
    )
    issuer: Mapped[str] = mapped_column(String(512), index=True)
    audience: Mapped[str] = mapped_column(String(512))
    jwks_url: Mapped[str | None] = mapped_column(Text)
    hs256_secret_sealed: Mapped[str | None] = mapped_column(Text)
    user_claim: Mapped[str] = mapped_column(String(100))
    algorithms: Mapped[list[str]] = mapped_column(JSON)
    leeway_seconds: Mapped[int] = mapped_column(Integer)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class CorsOrigin(Base):
    """An origin the tenant's frontends run on: browsers there may call Atelier."""

    __tablename__ = "cors_origins"

    tenant_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("tenants.id", ondelete="CASCADE"), primary_key=True
    )
    origin: Mapped[str] = mapped_column(String(255), primary_key=True, index=True)
