"""End-user tokens over a real socket, on both backends: a product's server mints one with
its secret key, and whoever holds it *is* that user of that tenant and no one else."""

from __future__ import annotations

import base64
import json
import uuid

import httpx
import pytest
from fastapi import FastAPI

from tests.conftest import Caller, make_caller


async def mint(tcp: httpx.AsyncClient, caller: Caller, user: str = "alice", **body: object) -> str:
    answer = await tcp.post(
        "/v1/user-tokens", json={"user_id": user, **body}, headers=caller.headers(None)
    )
    assert answer.status_code == 201, answer.text
    assert answer.json()["user_id"] == user
    return str(answer.json()["token"])


def bearer(token: str, **extra: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}", **extra}


async def conversation(tcp: httpx.AsyncClient, headers: dict[str, str]) -> str:
    made = await tcp.post("/v1/conversations", json={}, headers=headers)
    assert made.status_code == 201, made.text
    return str(made.json()["id"])


class TestATokenIsItsUser:
    async def test_it_reaches_its_users_conversations_and_no_one_elses(
        self, tcp: httpx.AsyncClient, caller: Caller
    ) -> None:
        token = await mint(tcp, caller, "alice")
        mine = await conversation(tcp, bearer(token))
        bobs = await conversation(tcp, caller.headers("bob"))
        # As the key names her, so the token is her.
        listed = await tcp.get("/v1/conversations", headers=caller.headers("alice"))
        assert [c["id"] for c in listed.json()["data"]] == [mine]
        assert (
            await tcp.get(f"/v1/conversations/{mine}", headers=bearer(token))
        ).status_code == 200
        # X-API-Key, as the LangGraph SDK sends it, works the same.
        assert (
            await tcp.get(f"/v1/conversations/{mine}", headers={"X-API-Key": token})
        ).status_code == 200
        hidden = await tcp.get(f"/v1/conversations/{bobs}", headers=bearer(token))
        assert hidden.status_code == 404
        assert hidden.json()["code"] == "not_found"

    async def test_no_header_or_field_names_another_user(
        self, tcp: httpx.AsyncClient, caller: Caller
    ) -> None:
        token = await mint(tcp, caller, "alice")
        same = await tcp.get("/v1/conversations", headers=bearer(token, **{"X-User-ID": "alice"}))
        assert same.status_code == 200
        other = await tcp.get("/v1/conversations", headers=bearer(token, **{"X-User-ID": "bob"}))
        assert other.status_code == 403
        assert other.json()["code"] == "user_mismatch"
        response = await tcp.post(
            "/openai/v1/responses",
            json={"model": "offline", "input": "hi", "user": "bob"},
            headers=bearer(token),
        )
        assert response.status_code == 403
        assert response.json()["error"]["code"] == "user_mismatch"

    @pytest.mark.parametrize(
        ("method", "path", "body"),
        [
            ("POST", "/v1/agents", {"name": "x"}),
            ("GET", "/v1/budgets", None),
            ("GET", "/v1/webhooks", None),
            ("GET", "/v1/usage", None),
            ("PUT", "/v1/cors", {"origins": []}),
            ("GET", "/v1/identity", None),
            ("POST", "/v1/user-tokens", {"user_id": "mallory"}),
            ("POST", "/v1/user-tokens/revoke", {"user_id": "bob"}),
        ],
    )
    async def test_tenant_administration_takes_a_secret_key(
        self,
        tcp: httpx.AsyncClient,
        caller: Caller,
        method: str,
        path: str,
        body: dict[str, object] | None,
    ) -> None:
        token = await mint(tcp, caller)
        answer = await tcp.request(method, path, json=body, headers=bearer(token))
        assert answer.status_code == 403, answer.text
        assert answer.json()["code"] == "forbidden_for_user_token"


class TestRefusedTokens:
    async def test_expired_tampered_revoked_and_foreign_tokens_are_401(
        self, tcp: httpx.AsyncClient, caller: Caller, app: FastAPI
    ) -> None:
        token = await mint(tcp, caller, "alice")
        assert (await tcp.get("/v1/conversations", headers=bearer(token))).status_code == 200

        expired = app.state.resources.tokens.mint(
            tenant_id=caller.tenant_id,
            key_id=uuid.uuid4(),
            user_id="alice",
            lifetime=-60,
            scopes=frozenset({"read", "write"}),
            conversation_ids=None,
            agent_ids=None,
        ).token
        answer = await tcp.get("/v1/conversations", headers=bearer(expired))
        assert (answer.status_code, answer.json()["code"]) == (401, "token_expired")

        head, payload, signature = token.removeprefix("atu_").split(".")
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        claims["sub"] = "bob"
        forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).decode().rstrip("=")
        answer = await tcp.get(
            "/v1/conversations", headers=bearer(f"atu_{head}.{forged}.{signature}")
        )
        assert (answer.status_code, answer.json()["code"]) == (401, "invalid_token")

        revoked = await tcp.post(
            "/v1/user-tokens/revoke", json={"user_id": "alice"}, headers=caller.headers(None)
        )
        assert revoked.status_code == 204
        answer = await tcp.get("/v1/conversations", headers=bearer(token))
        assert (answer.status_code, answer.json()["code"]) == (401, "invalid_token")
        # A token minted after the revocation works.
        again = await mint(tcp, caller, "alice")
        assert (await tcp.get("/v1/conversations", headers=bearer(again))).status_code == 200

    async def test_a_token_stops_with_the_key_that_minted_it(
        self, tcp: httpx.AsyncClient, caller: Caller, app: FastAPI
    ) -> None:
        from atelier.tenants.service import revoke_api_key, verify_api_key

        token = await mint(tcp, caller)
        async with app.state.resources.sessionmaker() as session:
            key = await verify_api_key(session, caller.key)
            assert key is not None
            await revoke_api_key(session, key.key_id)
            await session.commit()
        app.state.resources.key_cache.clear()
        answer = await tcp.get("/v1/conversations", headers=bearer(token))
        assert (answer.status_code, answer.json()["code"]) == (401, "invalid_token")

    async def test_another_tenants_token_reaches_nothing_here(
        self, tcp: httpx.AsyncClient, caller: Caller, app: FastAPI
    ) -> None:
        other = await make_caller(app)
        theirs = await conversation(tcp, other.headers("alice"))
        token = await mint(tcp, caller, "alice")
        answer = await tcp.get(f"/v1/conversations/{theirs}", headers=bearer(token))
        assert answer.status_code == 404

    async def test_a_lifetime_past_the_maximum_is_refused(
        self, tcp: httpx.AsyncClient, caller: Caller
    ) -> None:
        answer = await tcp.post(
            "/v1/user-tokens",
            json={"user_id": "alice", "expires_in": 10**7},
            headers=caller.headers(None),
        )
        assert (answer.status_code, answer.json()["code"]) == (400, "expires_in_too_long")


class TestGrants:
    async def test_a_read_token_reads_and_writes_nothing(
        self, tcp: httpx.AsyncClient, caller: Caller
    ) -> None:
        mine = await conversation(tcp, caller.headers("alice"))
        token = await mint(tcp, caller, scopes=["read"])
        assert (
            await tcp.get(f"/v1/conversations/{mine}", headers=bearer(token))
        ).status_code == 200
        answer = await tcp.post("/v1/conversations", json={}, headers=bearer(token))
        assert (answer.status_code, answer.json()["code"]) == (403, "insufficient_scope")

    async def test_a_token_for_some_conversations_reaches_only_them(
        self, tcp: httpx.AsyncClient, caller: Caller
    ) -> None:
        one = await conversation(tcp, caller.headers("alice"))
        two = await conversation(tcp, caller.headers("alice"))
        token = await mint(tcp, caller, conversation_ids=[one])
        listed = await tcp.get("/v1/conversations", headers=bearer(token))
        assert [c["id"] for c in listed.json()["data"]] == [one]
        assert (await tcp.get(f"/v1/conversations/{two}", headers=bearer(token))).status_code == 404
        answer = await tcp.post("/v1/conversations", json={}, headers=bearer(token))
        assert (answer.status_code, answer.json()["code"]) == (403, "outside_token_scope")
        bobs = await conversation(tcp, caller.headers("bob"))
        refused = await tcp.post(
            "/v1/user-tokens",
            json={"user_id": "alice", "conversation_ids": [bobs]},
            headers=caller.headers(None),
        )
        assert (refused.status_code, refused.json()["code"]) == (400, "unknown_conversation")

    async def test_a_token_for_some_agents_sees_and_runs_only_them(
        self, tcp: httpx.AsyncClient, caller: Caller
    ) -> None:
        made = await tcp.post("/v1/agents", json={"name": "helper"}, headers=caller.headers(None))
        helper = made.json()["id"]
        token = await mint(tcp, caller, agent_ids=[helper])
        agents = await tcp.get("/v1/agents", headers=bearer(token))
        assert [a["name"] for a in agents.json()["data"]] == ["helper"]
        default = await conversation(tcp, bearer(token))  # the tenant's default agent
        run = await tcp.post(
            f"/v1/conversations/{default}/runs", json={"input": "hi"}, headers=bearer(token)
        )
        assert (run.status_code, run.json()["code"]) == (403, "agent_not_granted")
        allowed = await tcp.post(
            "/v1/conversations", json={"agent_id": helper}, headers=bearer(token)
        )
        run = await tcp.post(
            f"/v1/conversations/{allowed.json()['id']}/runs",
            json={"input": "hi"},
            headers=bearer(token),
        )
        assert run.status_code == 202, run.text
