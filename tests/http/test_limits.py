"""What a tenant's requests make us keep is bounded: every list is paged (limit, cursor),
and every collection that grows with requests has a cap (409 limit_reached naming it)."""

from __future__ import annotations

import httpx
import pytest

from tests.conftest import Caller
from tests.live import serve_started

LIMITS = {
    "webhook_allow_private": True,
    "max_agents": 4,
    "max_agent_versions": 3,
    "max_webhooks": 3,
    "max_budgets": 3,
}


@pytest.fixture
def settings_overrides() -> dict[str, object]:
    return dict(LIMITS)


@pytest.fixture
async def tcp(app) -> httpx.AsyncClient:  # type: ignore[no-untyped-def]
    async with serve_started(app) as url, httpx.AsyncClient(base_url=url, timeout=30) as client:
        yield client


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

    async def test_a_cursor_this_api_did_not_give_is_400(self, tcp, caller) -> None:
        for cursor in ("nonsense", "W10", "WyJ4Il0"):
            got = await tcp.get(
                "/v1/webhooks", params={"cursor": cursor}, headers=caller.headers(None)
            )
            assert (got.status_code, got.json()["code"]) == (400, "invalid_cursor"), cursor
