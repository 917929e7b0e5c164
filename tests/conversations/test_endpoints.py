import uuid

import httpx
import pytest
from fastapi import FastAPI

from tests.conftest import Caller, make_caller


class TestCreateAndRead:
    async def test_create_returns_the_contract_fields(
        self, client: httpx.AsyncClient, caller: Caller
    ) -> None:
        response = await client.post(
            "/v1/conversations",
            json={"title": "Q3 report", "model_id": "offline", "metadata": {"project": 7}},
            headers=caller.headers(),
        )
        assert response.status_code == 201
        body = response.json()
        assert body["title"] == "Q3 report"
        assert body["model_id"] == "offline"
        assert body["metadata"] == {"project": 7}
        assert body["active_run_id"] is None
        assert body["total_cost"] == "0.000000"
        assert body["total_input_tokens"] == body["total_output_tokens"] == 0
        assert body["context_window"] == 32768
        assert body["context_status"] == "ok"
        assert body["context_usage_percent"] == 0.0
        fetched = await client.get(f"/v1/conversations/{body['id']}", headers=caller.headers())
        assert fetched.json() == body

    async def test_without_a_model_context_is_measured_against_the_default(
        self, client: httpx.AsyncClient, caller: Caller
    ) -> None:
        body = (await client.post("/v1/conversations", json={}, headers=caller.headers())).json()
        assert body["model_id"] is None
        assert body["context_window"] == 32768
        assert body["context_status"] == "ok"

    async def test_unknown_model_is_refused(
        self, client: httpx.AsyncClient, caller: Caller
    ) -> None:
        response = await client.post(
            "/v1/conversations", json={"model_id": "nope"}, headers=caller.headers()
        )
        assert response.status_code == 400
        assert response.json()["code"] == "unknown_model"

    async def test_user_id_is_required(self, client: httpx.AsyncClient, caller: Caller) -> None:
        response = await client.post(
            "/v1/conversations", json={}, headers=caller.headers(user=None)
        )
        assert response.status_code == 400
        assert response.json()["code"] == "user_id_required"

    @pytest.mark.parametrize(
        "body",
        [
            {"title": "x" * 501},
            {"model_id": ""},
            {"model_id": "bad model"},
            {"metadata": {"k": "v" * 20_000}},
            {"unknown": 1},
            {"metadata": [1, 2]},
        ],
    )
    async def test_invalid_bodies_are_422_problems(
        self, client: httpx.AsyncClient, caller: Caller, body
    ) -> None:
        response = await client.post("/v1/conversations", json=body, headers=caller.headers())
        assert response.status_code == 422
        assert response.headers["content-type"] == "application/problem+json"
        assert response.json()["code"] == "validation_error"

    async def test_malformed_json_is_a_problem(
        self, client: httpx.AsyncClient, caller: Caller
    ) -> None:
        response = await client.post(
            "/v1/conversations",
            content=b"{not json",
            headers={**caller.headers(), "content-type": "application/json"},
        )
        assert response.status_code == 422

    async def test_malformed_id_is_422(self, client: httpx.AsyncClient, caller: Caller) -> None:
        response = await client.get("/v1/conversations/not-a-uuid", headers=caller.headers())
        assert response.status_code == 422


class TestUpdate:
    async def test_patch_changes_only_what_is_sent(
        self, client: httpx.AsyncClient, caller: Caller
    ) -> None:
        created = (
            await client.post(
                "/v1/conversations",
                json={"title": "a", "metadata": {"x": 1}},
                headers=caller.headers(),
            )
        ).json()
        patched = await client.patch(
            f"/v1/conversations/{created['id']}", json={"title": "b"}, headers=caller.headers()
        )
        assert patched.status_code == 200
        assert patched.json()["title"] == "b"
        assert patched.json()["metadata"] == {"x": 1}
        cleared = await client.patch(
            f"/v1/conversations/{created['id']}", json={"title": None}, headers=caller.headers()
        )
        assert cleared.json()["title"] is None


class TestPagination:
    async def test_newest_first_with_a_cursor(
        self, client: httpx.AsyncClient, caller: Caller
    ) -> None:
        ids = [
            (
                await client.post(
                    "/v1/conversations", json={"title": str(n)}, headers=caller.headers()
                )
            ).json()["id"]
            for n in range(5)
        ]
        seen: list[str] = []
        cursor = None
        while True:
            params = {"limit": 2} | ({"cursor": cursor} if cursor else {})
            page = (
                await client.get("/v1/conversations", params=params, headers=caller.headers())
            ).json()
            seen += [c["id"] for c in page["data"]]
            cursor = page["next_cursor"]
            if cursor is None:
                break
        assert seen == list(reversed(ids))

    @pytest.mark.parametrize("cursor", ["garbage", "Zm9vfGJhcg", "", "x" * 201])
    async def test_bad_cursors_are_400_or_422(
        self, client: httpx.AsyncClient, caller: Caller, cursor: str
    ) -> None:
        response = await client.get(
            "/v1/conversations", params={"cursor": cursor}, headers=caller.headers()
        )
        assert response.status_code in (400, 422)
        assert response.headers["content-type"] == "application/problem+json"

    @pytest.mark.parametrize("limit", [0, 101, -1, "x"])
    async def test_bad_limits_are_422(
        self, client: httpx.AsyncClient, caller: Caller, limit
    ) -> None:
        response = await client.get(
            "/v1/conversations", params={"limit": limit}, headers=caller.headers()
        )
        assert response.status_code == 422


class TestIsolation:
    async def test_other_users_and_tenants_get_404(
        self, app: FastAPI, client: httpx.AsyncClient, caller: Caller
    ) -> None:
        created = (
            await client.post("/v1/conversations", json={}, headers=caller.headers("alice"))
        ).json()
        stranger = await make_caller(app)
        url = f"/v1/conversations/{created['id']}"
        for headers in (caller.headers("bob"), stranger.headers("alice")):
            assert (await client.get(url, headers=headers)).status_code == 404
            assert (
                await client.patch(url, json={"title": "x"}, headers=headers)
            ).status_code == 404
            assert (await client.delete(url, headers=headers)).status_code == 404
            listing = await client.get("/v1/conversations", headers=headers)
            assert listing.json()["data"] == []
        assert (await client.get(url, headers=caller.headers("alice"))).status_code == 200

    async def test_unknown_id_is_404(self, client: httpx.AsyncClient, caller: Caller) -> None:
        response = await client.get(f"/v1/conversations/{uuid.uuid4()}", headers=caller.headers())
        assert response.status_code == 404
        assert response.json()["code"] == "not_found"
