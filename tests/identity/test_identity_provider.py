"""A tenant's own identity provider (PUT /v1/identity): its JWTs, verified against its JWKS
over a real socket, authenticate the user they name -- and every way a token can be wrong
is a 401 with a code, on both backends."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import AsyncIterator

import httpx
import jwt
import pytest

from tests.conftest import Caller
from tests.identity.idp import AUDIENCE, ISSUER, IdentityProvider, served_provider


@pytest.fixture
def settings_overrides() -> dict[str, object]:
    return {"identity_allow_private": True, "identity_jwks_refresh_seconds": 0}


@pytest.fixture
async def idp() -> AsyncIterator[tuple[IdentityProvider, str]]:
    async with served_provider() as found:
        yield found


async def trust(tcp: httpx.AsyncClient, caller: Caller, **body: object) -> httpx.Response:
    answer = await tcp.put(
        "/v1/identity",
        json={"issuer": ISSUER, "audience": AUDIENCE, **body},
        headers=caller.headers(None),
    )
    return answer


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def refusal(tcp: httpx.AsyncClient, token: str) -> tuple[int, str]:
    answer = await tcp.get("/v1/conversations", headers=bearer(token))
    return answer.status_code, answer.json().get("code", "")


class TestAProvidersTokens:
    async def test_a_valid_token_is_its_user_and_rotation_is_followed(
        self, tcp: httpx.AsyncClient, caller: Caller, idp: tuple[IdentityProvider, str]
    ) -> None:
        provider, url = idp
        assert (await trust(tcp, caller, jwks_url=url)).status_code == 200
        token = provider.token("alice")
        made = await tcp.post("/v1/conversations", json={}, headers=bearer(token))
        assert made.status_code == 201, made.text
        listed = await tcp.get("/v1/conversations", headers=caller.headers("alice"))
        assert [c["id"] for c in listed.json()["data"]] == [made.json()["id"]]
        # The provider rotates: a token signed with the new key is followed, no restart.
        provider.rotate()
        rotated = provider.token("alice")
        answer = await tcp.get("/v1/conversations", headers=bearer(rotated))
        assert answer.status_code == 200, answer.text
        # Its administration stays the secret key's.
        answer = await tcp.get("/v1/webhooks", headers=bearer(rotated))
        assert (answer.status_code, answer.json()["code"]) == (403, "forbidden_for_user_token")

    async def test_every_wrong_token_is_refused_with_a_code(
        self, tcp: httpx.AsyncClient, caller: Caller, idp: tuple[IdentityProvider, str]
    ) -> None:
        provider, url = idp
        await trust(tcp, caller, jwks_url=url)
        now = int(time.time())
        assert await refusal(tcp, provider.token(exp=now - 120)) == (401, "token_expired")
        assert await refusal(tcp, provider.token(nbf=now + 600)) == (401, "invalid_token")
        assert await refusal(tcp, provider.token(aud="someone-else")) == (401, "invalid_token")
        assert await refusal(tcp, provider.token(iss="https://evil.test/")) == (
            401,
            "invalid_token",
        )
        unsigned = jwt.encode(
            {"iss": ISSUER, "aud": AUDIENCE, "sub": "alice", "exp": now + 300}, None, "none"
        )
        assert await refusal(tcp, unsigned) == (401, "invalid_token")
        # The classic confusion: HS256 with the provider's public key as the secret.
        head = base64.urlsafe_b64encode(
            json.dumps({"alg": "HS256", "typ": "JWT", "kid": provider.current}).encode()
        ).rstrip(b"=")
        body = base64.urlsafe_b64encode(
            json.dumps({"iss": ISSUER, "aud": AUDIENCE, "sub": "alice", "exp": now + 300}).encode()
        ).rstrip(b"=")
        import hashlib
        import hmac

        signature = base64.urlsafe_b64encode(
            hmac.new(provider.public_pem(), head + b"." + body, hashlib.sha256).digest()
        ).rstrip(b"=")
        confused = (head + b"." + body + b"." + signature).decode()
        assert await refusal(tcp, confused) == (401, "invalid_token")
        # A payload changed after signing.
        good_head, _, good_signature = provider.token("alice").split(".")
        forged = (
            base64.urlsafe_b64encode(
                json.dumps(
                    {"iss": ISSUER, "aud": AUDIENCE, "sub": "bob", "exp": now + 300}
                ).encode()
            )
            .decode()
            .rstrip("=")
        )
        assert await refusal(tcp, f"{good_head}.{forged}.{good_signature}") == (
            401,
            "invalid_token",
        )
        # Revoked: every token of the user issued before now.
        issued_before = provider.token("alice", iat=now - 5)
        assert (
            await tcp.get("/v1/conversations", headers=bearer(issued_before))
        ).status_code == 200
        revoked = await tcp.post(
            "/v1/user-tokens/revoke", json={"user_id": "alice"}, headers=caller.headers(None)
        )
        assert revoked.status_code == 204
        assert await refusal(tcp, issued_before) == (401, "invalid_token")
        # A key the provider never published.
        stranger = IdentityProvider()
        assert await refusal(tcp, stranger.token("alice")) == (401, "invalid_token")

    async def test_a_shared_secret_is_sealed_and_never_shown(
        self, tcp: httpx.AsyncClient, caller: Caller
    ) -> None:
        secret = "s" * 40
        answer = await trust(tcp, caller, hs256_secret=secret)
        assert answer.status_code == 200, answer.text
        assert answer.json()["has_hs256_secret"] is True
        assert secret not in answer.text
        assert secret not in (await tcp.get("/v1/identity", headers=caller.headers(None))).text
        now = int(time.time())
        claims = {"iss": ISSUER, "aud": AUDIENCE, "sub": "carol", "exp": now + 60}
        token = jwt.encode(claims, secret, algorithm="HS256")
        assert (await tcp.get("/v1/conversations", headers=bearer(token))).status_code == 200
        wrong = jwt.encode(claims, "t" * 40, algorithm="HS256")
        assert await refusal(tcp, wrong) == (401, "invalid_token")
        # A read-modify-write keeps the secret it could not see.
        shown = (await tcp.get("/v1/identity", headers=caller.headers(None))).json()
        kept = await trust(tcp, caller, leeway_seconds=5, user_claim=shown["user_claim"])
        assert kept.json()["has_hs256_secret"] is True
        assert (await tcp.get("/v1/conversations", headers=bearer(token))).status_code == 200


class TestSettingsRefused:
    async def test_public_key_algorithms_need_a_jwks_and_none_is_never_one(
        self, tcp: httpx.AsyncClient, caller: Caller
    ) -> None:
        answer = await trust(tcp, caller, hs256_secret="s" * 40, algorithms=["RS256"])
        assert answer.status_code == 422
        answer = await trust(tcp, caller, jwks_url="https://id.example/jwks", algorithms=["none"])
        assert answer.status_code == 422
        answer = await trust(tcp, caller)
        assert (answer.status_code, answer.json()["code"]) == (400, "identity_key_required")


@pytest.mark.parametrize("settings_overrides", [{}], indirect=False)
async def test_a_private_jwks_url_is_refused(tcp: httpx.AsyncClient, caller: Caller) -> None:
    answer = await trust(tcp, caller, jwks_url="http://127.0.0.1:9/jwks")
    assert (answer.status_code, answer.json()["code"]) == (400, "jwks_url_not_allowed")


async def test_a_jwks_past_its_cap_is_not_read(
    tcp: httpx.AsyncClient, caller: Caller, idp: tuple[IdentityProvider, str]
) -> None:
    provider, url = idp
    await trust(tcp, caller, jwks_url=url)
    provider.body = b'{"keys": [' + b" " * 200_000 + b"]}"
    answer = await tcp.get("/v1/conversations", headers=bearer(provider.token()))
    assert (answer.status_code, answer.json()["code"]) == (503, "identity_unavailable")
    assert answer.headers["retry-after"]
