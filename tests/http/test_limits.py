"""What a tenant's requests make us keep is bounded: every list is paged (limit, cursor),
and every collection that grows with requests has a cap (409 limit_reached naming it)."""

from __future__ import annotations

import uuid

import httpx
import pytest

from tests.conftest import Caller

LIMITS = {
    "webhook_allow_private": True,
    "max_agents": 4,
    "max_agent_versions": 3,
    "max_webhooks": 3,
    "max_budgets": 3,
    "max_conversations_per_user": 3,
}


@pytest.fixture
def settings_overrides() -> dict[str, object]:
    return dict(LIMITS)


def make(kind: str, number: int) -> tuple[str, dict]:
    return {
        "agents": ("/v1/agents", {"name": f"agent-{number}"}),
        "webhooks": (
            "/v1/webhooks",
            {"url": f"http://127.0.0.1:9/{number}", "events": ["run.completed"]},
        ),
        "budgets": (
            "/v1/budgets",
            {"scope": "user", "subject": f"u{number}", "period": "day", "limit": "1"},
        ),
    }[kind]


async def all_pages(tcp: httpx.AsyncClient, caller: Caller, path: str) -> list[list[str]]:
    pages, cursor = [], None
    while True:
        params = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        got = await tcp.get(path, params=params, headers=caller.headers(None))
        assert got.status_code == 200, got.text
        body = got.json()
        pages.append([str(row.get("id", row.get("version"))) for row in body["data"]])
        if (cursor := body["next_cursor"]) is None:
            return pages


class TestCaps:
    @pytest.mark.parametrize(("kind", "already"), [("agents", 1), ("webhooks", 0), ("budgets", 0)])
    async def test_past_the_cap_is_409_limit_reached(self, tcp, caller, kind, already) -> None:
        """(Agents: the tenant's default agent counts.) Each page of the list is complete
        and in order; the one past the cap is refused, naming the limit and its setting."""
        made = []
        for number in range(LIMITS[f"max_{kind}"] - already):
            path, body = make(kind, number)
            response = await tcp.post(path, json=body, headers=caller.headers(None))
            assert response.status_code == 201, response.text
            made.append(response.json()["id"])
        path, body = make(kind, 99)
        refused = await tcp.post(path, json=body, headers=caller.headers(None))
        assert refused.status_code == 409, refused.text
        assert (refused.json()["code"], refused.json()["limit"]) == ("limit_reached", kind)
        assert f"ATELIER_MAX_{kind.upper()}" in refused.json()["detail"]
        pages = await all_pages(tcp, caller, path)
        assert [len(page) for page in pages][:-1] == [2] * (len(pages) - 1)
        listed = [row for page in pages for row in page]
        assert set(made) <= set(listed)
        assert len(listed) == len(set(listed)) == LIMITS[f"max_{kind}"]

    async def test_an_agent_keeps_at_most_its_versions(self, tcp, caller) -> None:
        agent = (await tcp.post("/v1/agents", json={"name": "a"}, headers=caller.headers())).json()
        for number in range(2, 4):
            changed = await tcp.patch(
                f"/v1/agents/{agent['id']}",
                json={"instructions": f"v{number}"},
                headers=caller.headers(),
            )
            assert changed.status_code == 200, changed.text
        refused = await tcp.patch(
            f"/v1/agents/{agent['id']}", json={"instructions": "v4"}, headers=caller.headers()
        )
        assert (refused.status_code, refused.json()["limit"]) == (409, "agent_versions")
        renamed = await tcp.patch(
            f"/v1/agents/{agent['id']}", json={"name": "b"}, headers=caller.headers()
        )
        assert renamed.status_code == 200  # a rename makes no version
        pages = await all_pages(tcp, caller, f"/v1/agents/{agent['id']}/versions")
        assert pages == [["1", "2"], ["3"]]

    async def test_a_user_keeps_a_bounded_number_of_conversations_by_every_api(
        self, tcp, caller
    ) -> None:
        """Conversations, chats, forks, LangGraph threads and OpenAI response chains all
        count, per end user; each API refuses the one past the cap in its own shape."""
        alice = caller.headers("alice")
        first = await tcp.post("/v1/conversations", json={}, headers=alice)
        assert (await tcp.post("/v1/chats", json={}, headers=alice)).status_code == 201
        thread = await tcp.post("/langgraph/threads", json={}, headers=alice)
        assert thread.status_code == 200, thread.text
        conversation = first.json()["id"]
        refused = [
            await tcp.post("/v1/conversations", json={}, headers=alice),
            await tcp.post("/v1/chats", json={}, headers=alice),
            await tcp.post(f"/v1/conversations/{conversation}/fork", json={}, headers=alice),
            await tcp.post(
                "/langgraph/threads", json={"thread_id": str(uuid.uuid4())}, headers=alice
            ),
            await tcp.post(
                f"/langgraph/threads/{uuid.uuid4()}/runs/wait",
                json={
                    "assistant_id": "default",
                    "input": {"messages": [{"role": "user", "content": "hi"}]},
                    "if_not_exists": "create",
                },
                headers=alice,
            ),
        ]
        for response in refused:
            assert response.status_code == 409, response.text
            assert (response.json()["code"], response.json()["limit"]) == (
                "limit_reached",
                "conversations",
            )
            assert "ATELIER_MAX_CONVERSATIONS_PER_USER" in response.json()["detail"]
        answer = await tcp.post(
            "/openai/v1/responses", json={"model": "default", "input": "hi"}, headers=alice
        )
        assert answer.status_code == 409, answer.text
        assert answer.json()["error"]["code"] == "limit_reached"
        assert (
            await tcp.post("/v1/chats", json={}, headers=caller.headers("bob"))
        ).status_code == 201
        deleted = await tcp.delete(f"/v1/conversations/{conversation}", headers=alice)
        assert deleted.status_code == 204
        assert (await tcp.post("/v1/conversations", json={}, headers=alice)).status_code == 201

    async def test_a_cursor_this_api_did_not_give_is_400(self, tcp, caller) -> None:
        for cursor in ("nonsense", "W10", "WyJ4Il0"):
            got = await tcp.get(
                "/v1/webhooks", params={"cursor": cursor}, headers=caller.headers(None)
            )
            assert (got.status_code, got.json()["code"]) == (400, "invalid_cursor"), cursor
