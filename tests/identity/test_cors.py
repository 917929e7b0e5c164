"""CORS per tenant over a real socket: preflights from a listed origin are answered without
a key and without counting against any limit; answers carry CORS headers for their own
tenant's origins only."""

from __future__ import annotations

import httpx
import pytest
from fastapi import FastAPI

from tests.conftest import Caller, make_caller

APP = "https://app.product.test"
PREFLIGHT = {
    "Origin": APP,
    "Access-Control-Request-Method": "POST",
    "Access-Control-Request-Headers": "authorization, content-type, last-event-id, x-stainless-os",
}


@pytest.fixture
def settings_overrides() -> dict[str, object]:
    # Limits on, and tiny for callers without a key: a preflight must never meet them.
    return {
        "rate_limit_enabled": True,
        "rate_limit_anonymous_per_minute": 1,
        "rate_limit_anonymous_burst": 1,
    }


async def allow(tcp: httpx.AsyncClient, caller: Caller, *origins: str) -> httpx.Response:
    return await tcp.put("/v1/cors", json={"origins": list(origins)}, headers=caller.headers(None))


async def test_a_listed_origins_preflight_is_answered_without_a_key(
    tcp: httpx.AsyncClient, caller: Caller
) -> None:
    kept = await allow(tcp, caller, "https://APP.product.test:443/", "http://localhost:5173")
    assert kept.status_code == 200, kept.text
    assert kept.json()["origins"] == ["http://localhost:5173", APP]
    assert (await tcp.get("/v1/cors", headers=caller.headers(None))).json() == kept.json()
    for _ in range(5):  # well past the anonymous limit
        answer = await tcp.options("/v1/conversations", headers=PREFLIGHT)
        assert answer.status_code == 204
        assert answer.headers["access-control-allow-origin"] == APP
        allowed = answer.headers["access-control-allow-headers"]
        for header in ("authorization", "x-api-key", "last-event-id", "idempotency-key"):
            assert header in allowed
        assert "x-stainless-os" in allowed
        assert "POST" in answer.headers["access-control-allow-methods"]


async def test_an_unlisted_origin_gets_no_cors_headers(
    tcp: httpx.AsyncClient, caller: Caller
) -> None:
    await allow(tcp, caller, APP)
    elsewhere = {**PREFLIGHT, "Origin": "https://evil.test"}
    answer = await tcp.options("/v1/conversations", headers=elsewhere)
    assert (answer.status_code, answer.json()["code"]) == (403, "origin_not_allowed")
    assert "access-control-allow-origin" not in answer.headers
    listed = await tcp.get("/v1/conversations", headers=caller.headers(Origin="https://evil.test"))
    assert listed.status_code == 200
    assert "access-control-allow-origin" not in listed.headers


async def test_answers_carry_cors_headers_for_their_own_tenants_origins(
    tcp: httpx.AsyncClient, caller: Caller, app: FastAPI
) -> None:
    other = await make_caller(app)
    await allow(tcp, other, APP)
    # Listed by another tenant only: this tenant's answers carry nothing for it.
    mine = await tcp.get("/v1/conversations", headers=caller.headers(Origin=APP))
    assert "access-control-allow-origin" not in mine.headers
    await allow(tcp, caller, APP)
    mine = await tcp.post("/v1/conversations", json={}, headers=caller.headers(Origin=APP))
    assert mine.headers["access-control-allow-origin"] == APP
    assert "Location" in mine.headers["access-control-expose-headers"]
    assert "Origin" in mine.headers["vary"]
    # An expired or missing token's 401 is readable by the page, so it can fetch a new one.
    refused = await tcp.get(
        "/v1/conversations", headers={"Origin": APP, "Authorization": "Bearer x"}
    )
    assert refused.status_code == 401
    assert refused.headers["access-control-allow-origin"] == APP


async def test_origins_are_origins_and_capped(tcp: httpx.AsyncClient, caller: Caller) -> None:
    for wrong in ("app.product.test", "https://app.product.test/path", "ftp://x.test", "*"):
        answer = await allow(tcp, caller, wrong)
        assert answer.status_code == 422, wrong
    answer = await allow(tcp, caller, *(f"https://{n}.product.test" for n in range(51)))
    assert (answer.status_code, answer.json()["code"]) == (409, "limit_reached")


@pytest.mark.parametrize(
    "settings_overrides",
    [
        {
            "rate_limit_enabled": True,
            "rate_limit_per_minute": 1,
            "rate_limit_burst": 3,
            "rate_limit_expensive_cost": 1,
        }
    ],
)
async def test_a_tokens_user_meets_that_users_rate_limit(
    tcp: httpx.AsyncClient, caller: Caller
) -> None:
    """Per end user, as with X-User-ID: two tokens of one user share a bucket; another
    user's token has its own."""
    minted = []
    for user in ("alice", "alice", "bob"):
        answer = await tcp.post(
            "/v1/user-tokens", json={"user_id": user}, headers=caller.headers(None)
        )
        minted.append(answer.json()["token"])
    first, second, bobs = (f"Bearer {t}" for t in minted)
    assert (await tcp.get("/v1/conversations", headers={"Authorization": first})).status_code == 200
    assert (
        await tcp.get("/v1/conversations", headers={"Authorization": second})
    ).status_code == 200
    assert (await tcp.get("/v1/conversations", headers={"Authorization": first})).status_code == 200
    limited = await tcp.get("/v1/conversations", headers={"Authorization": second})
    assert (limited.status_code, limited.json()["code"]) == (429, "rate_limited")
    assert (await tcp.get("/v1/conversations", headers={"Authorization": bobs})).status_code == 200
