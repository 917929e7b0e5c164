"""End-user tokens, identity providers and CORS origins as clients write and see them."""

from __future__ import annotations

import urllib.parse
import uuid
from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from atelier.conversations.schemas import NO_NUL
from atelier.http.outbound import http_url
from atelier.tenants.principal import USER_ID_PATTERN

# Never `none`; HMAC only with a shared secret, public-key algorithms only with a JWKS --
# so a token signed HS256 with a JWKS public key as its secret verifies nowhere.
ASYMMETRIC = (
    "RS256",
    "RS384",
    "RS512",
    "PS256",
    "PS384",
    "PS512",
    "ES256",
    "ES384",
    "ES512",
    "EdDSA",
)
SYMMETRIC = ("HS256", "HS384", "HS512")
Algorithm = Literal[
    "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA",
    "HS256", "HS384", "HS512",
]  # fmt: skip
Scope = Literal["read", "write"]
MAX_NAMED = 100  # conversations or agents one token may be limited to


def _every_scope() -> list[Scope]:
    return ["read", "write"]


class UserTokenIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    user_id: str = Field(pattern=USER_ID_PATTERN)
    # Seconds; at most ATELIER_USER_TOKEN_MAX_SECONDS (checked by the endpoint).
    expires_in: int = Field(3600, ge=1)
    scopes: list[Scope] = Field(default_factory=_every_scope, min_length=1, max_length=2)
    conversation_ids: list[uuid.UUID] | None = Field(default=None, max_length=MAX_NAMED)
    agent_ids: list[uuid.UUID] | None = Field(default=None, max_length=MAX_NAMED)


class UserTokenOut(BaseModel):
    token: str
    expires_at: datetime
    user_id: str


class RevokeIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    user_id: str = Field(pattern=USER_ID_PATTERN)


class IdentityIn(BaseModel):
    """A tenant's identity provider: its keys from ``jwks_url`` or one shared secret."""

    model_config = ConfigDict(extra="forbid")

    jwks_url: str | None = Field(default=None, max_length=2048)
    # Write-only; at least 32 characters (RFC 7518: a key as long as the hash).
    hs256_secret: SecretStr | None = Field(default=None, min_length=32, max_length=512)
    issuer: str = Field(min_length=1, max_length=512, pattern=NO_NUL)
    audience: str = Field(min_length=1, max_length=512, pattern=NO_NUL)
    user_claim: str = Field("sub", min_length=1, max_length=100, pattern=NO_NUL)
    algorithms: list[Algorithm] | None = Field(default=None, min_length=1, max_length=12)
    leeway_seconds: int = Field(30, ge=0, le=300)

    @field_validator("jwks_url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        return None if value is None else http_url(value, "jwks_url")

    @model_validator(mode="after")
    def _one_kind_of_key(self) -> IdentityIn:
        if self.jwks_url is not None and self.hs256_secret is not None:
            raise ValueError("give jwks_url or hs256_secret, not both")
        if self.algorithms is not None:
            allowed = SYMMETRIC if self.hs256_secret is not None else ASYMMETRIC
            wrong = [a for a in self.algorithms if a not in allowed]
            if wrong and self.jwks_url is not None:
                raise ValueError(f"{wrong[0]} needs a shared secret, not a JWKS")
            if wrong and self.hs256_secret is not None:
                raise ValueError(f"{wrong[0]} needs a JWKS, not a shared secret")
        return self


class IdentityOut(BaseModel):
    issuer: str
    audience: str
    jwks_url: str | None  # its query values shown as `redacted`
    has_hs256_secret: bool
    user_claim: str
    algorithms: list[str]
    leeway_seconds: int
    updated_at: datetime


def _origin(value: str) -> str:
    """``scheme://host[:port]`` exactly as a browser sends it in ``Origin``."""
    parts = urllib.parse.urlsplit(value)
    if (
        parts.scheme not in ("http", "https")
        or not parts.hostname
        or parts.path not in ("", "/")
        or parts.query
        or parts.fragment
        or parts.username
        or parts.password
    ):
        raise ValueError(f"{value!r} is not an origin (scheme://host[:port])")
    default = {"http": 80, "https": 443}[parts.scheme]
    port = f":{parts.port}" if parts.port not in (None, default) else ""
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    return f"{parts.scheme}://{host}{port}"


Origin = Annotated[str, Field(min_length=1, max_length=255, pattern=r"^[\x21-\x7e]+$")]


class CorsIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # At most ATELIER_MAX_CORS_ORIGINS (checked by the endpoint).
    origins: list[Origin] = Field(max_length=1000)

    @field_validator("origins")
    @classmethod
    def _origins(cls, values: list[str]) -> list[str]:
        return sorted({_origin(v) for v in values})


class CorsOut(BaseModel):
    origins: list[str]


class Limits(BaseModel):
    """What this server accepts, so that a client can check before it sends (a file too
    large for the upload is refused on the page, not after it was sent)."""

    max_file_bytes: int
    max_workspace_bytes: int
    max_request_bytes: int  # a JSON body


class ApiKeyIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(default="", max_length=100, pattern=NO_NUL)


class ApiKeyOut(BaseModel):
    """A key as listed: its public prefix (``atl_<prefix>_…``), never its secret."""

    id: uuid.UUID
    name: str
    prefix: str
    created_at: datetime
    revoked_at: datetime | None


class IssuedApiKey(ApiKeyOut):
    secret: str  # shown once, here; only its hash is kept


class ApiKeyList(BaseModel):
    data: list[ApiKeyOut]
    next_cursor: str | None
