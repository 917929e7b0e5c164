"""A tenant's API keys over HTTP: issued with the secret shown once (and sealed in a kept
idempotent answer), listed by prefix and name (paged), revoked at once (with the tokens
they minted), capped per tenant; other tenants' keys are not reachable."""

from __future__ import annotations

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import select

from atelier.idempotency.models import IdempotentRequest
from tests.conftest import Caller, make_caller


async def test_a_key_is_issued_listed_and_revoked(
    app: FastAPI, client: httpx.AsyncClient, caller: Caller
) -> None:
    issued = await client.post(
        "/v1/api-keys",
        json={"name": "ci"},
        headers=caller.headers(None, **{"Idempotency-Key": "issue-ci"}),
    )
    assert issued.status_code == 201, issued.text
    assert issued.headers["cache-control"] == "no-store"
    key = issued.json()
    secret = key["secret"]
    assert secret.startswith(f"atl_{key['prefix']}_")
    new = {"Authorization": f"Bearer {secret}"}
    assert (await client.get("/v1/models", headers=new)).status_code == 200
    async with app.state.resources.sessionmaker() as session:
        kept = await session.scalar(select(IdempotentRequest))
    assert kept is not None
    assert kept.sealed  # the kept answer holds the secret: sealed at rest
    listed = (await client.get("/v1/api-keys?limit=1", headers=caller.headers(None))).json()
    assert [k["name"] for k in listed["data"]] == ["ci"]  # the newest first
    assert "secret" not in listed["data"][0]
    assert secret not in str(listed)
    rest = await client.get(
        f"/v1/api-keys?cursor={listed['next_cursor']}", headers=caller.headers(None)
    )
    assert [k["name"] for k in rest.json()["data"]] == ["test"]
    token = await client.post(
        "/v1/user-tokens", json={"user_id": "bob", "expires_in": 600}, headers=new
    )
    assert token.status_code == 201
    revoked = await client.delete(f"/v1/api-keys/{key['id']}", headers=caller.headers(None))
    assert revoked.status_code == 204
    assert (await client.get("/v1/models", headers=new)).status_code == 401
    held = {"Authorization": f"Bearer {token.json()['token']}"}
    assert (await client.get("/v1/models", headers=held)).status_code == 401
    again = await client.delete(f"/v1/api-keys/{key['id']}", headers=caller.headers(None))
    assert again.status_code == 404
    shown = (await client.get("/v1/api-keys", headers=caller.headers(None))).json()["data"]
    assert next(k for k in shown if k["id"] == key["id"])["revoked_at"] is not None


async def test_another_tenants_keys_are_out_of_reach(
    app: FastAPI, client: httpx.AsyncClient, caller: Caller
) -> None:
    other = await make_caller(app)
    theirs = (await client.get("/v1/api-keys", headers=other.headers(None))).json()["data"]
    refused = await client.delete(f"/v1/api-keys/{theirs[0]['id']}", headers=caller.headers(None))
    assert refused.status_code == 404
    mine = (await client.get("/v1/api-keys", headers=caller.headers(None))).json()["data"]
    assert theirs[0]["id"] not in {k["id"] for k in mine}
    assert (await client.get("/v1/models", headers=other.headers(None))).status_code == 200


async def test_an_end_user_token_manages_no_key(client: httpx.AsyncClient, caller: Caller) -> None:
    token = await client.post(
        "/v1/user-tokens", json={"user_id": "bob", "expires_in": 600}, headers=caller.headers(None)
    )
    held = {"Authorization": f"Bearer {token.json()['token']}"}
    for method, path in (("GET", "/v1/api-keys"), ("POST", "/v1/api-keys")):
        response = await client.request(method, path, json={}, headers=held)
        assert response.status_code == 403, response.text
        assert response.json()["code"] == "forbidden_for_user_token"


@pytest.mark.parametrize("settings_overrides", [{"max_api_keys": 2}])
async def test_active_keys_are_capped(client: httpx.AsyncClient, caller: Caller) -> None:
    made = await client.post("/v1/api-keys", json={"name": "two"}, headers=caller.headers(None))
    assert made.status_code == 201
    refused = await client.post("/v1/api-keys", json={}, headers=caller.headers(None))
    assert refused.status_code == 409
    assert refused.json()["code"] == "limit_reached"
    await client.delete(f"/v1/api-keys/{made.json()['id']}", headers=caller.headers(None))
    assert (
        await client.post("/v1/api-keys", json={}, headers=caller.headers(None))
    ).status_code == 201
