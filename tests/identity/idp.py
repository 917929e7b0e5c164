"""A product's identity provider, as tests need one: RSA keys of its own, a JWKS served over
a real socket (rotated at will), and tokens signed however a test wants them."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from fastapi import FastAPI, Response

from tests.live import serve

ISSUER = "https://id.product.test/"
AUDIENCE = "atelier"


class IdentityProvider:
    def __init__(self) -> None:
        self.keys: dict[str, rsa.RSAPrivateKey] = {}
        self.published: list[str] = []
        self.fetches = 0
        self.body: bytes | None = None  # a JWKS answer of a test's making
        self.rotate()

    def rotate(self) -> str:
        """A new key, published beside the old; tokens are signed with it from now on."""
        kid = f"key-{len(self.keys) + 1}"
        self.keys[kid] = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.published.append(kid)
        self.current = kid
        return kid

    def jwks(self) -> dict[str, Any]:
        keys = []
        for kid in self.published:
            jwk = jwt.algorithms.RSAAlgorithm.to_jwk(self.keys[kid].public_key(), as_dict=True)
            keys.append(jwk | {"kid": kid, "alg": "RS256", "use": "sig"})
        return {"keys": keys}

    def public_pem(self, kid: str | None = None) -> bytes:
        return (
            self.keys[kid or self.current]
            .public_key()
            .public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )

    def token(self, sub: str = "alice", kid: str | None = None, **claims: Any) -> str:
        now = int(time.time())
        body = {"iss": ISSUER, "aud": AUDIENCE, "sub": sub, "iat": now, "exp": now + 300}
        body |= claims
        kid = kid or self.current
        return jwt.encode(body, self.keys[kid], algorithm="RS256", headers={"kid": kid})

    def app(self) -> FastAPI:
        app = FastAPI()

        @app.get("/.well-known/jwks.json")
        async def jwks() -> Response:
            self.fetches += 1
            if self.body is not None:
                return Response(self.body, media_type="application/json")
            import json

            return Response(json.dumps(self.jwks()), media_type="application/json")

        return app


@asynccontextmanager
async def served_provider() -> AsyncIterator[tuple[IdentityProvider, str]]:
    provider = IdentityProvider()
    async with serve(provider.app()) as url:
        yield provider, f"{url}/.well-known/jwks.json"
