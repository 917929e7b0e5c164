"""Tenant isolation, swept over every operation of the API (from its OpenAPI schema).

Alice (tenant A) owns a conversation with a file, runs and messages, a chat, and her
tenant has an agent. Every
operation is called with her ids by a user of another tenant and by another user of her
own tenant: each answers 404, lists leak none of her ids, and her data is unchanged
afterwards. A tenant header that contradicts the key is 403 everywhere.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.conftest import Caller, make_caller
from tests.runs.helpers import new_conversation, run_streamed

PUBLIC_URL = "https://93.184.215.14/hook"  # public, and no DNS is needed to know it

# A valid body for each operation that takes one: a 422 must not hide a missing 404.
BODIES: dict[tuple[str, str], dict[str, Any]] = {
    ("post", "/v1/conversations"): {"json": {}},
    ("patch", "/v1/conversations/{conversation_id}"): {"json": {"title": "mine now"}},
    ("post", "/v1/conversations/{conversation_id}/runs"): {"json": {"input": "list files"}},
    ("put", "/v1/conversations/{conversation_id}/files/{path}"): {"content": b"overwritten"},
    ("post", "/v1/conversations/{conversation_id}/files"): {
        "files": {"file": ("x.txt", b"planted", "text/plain")}
    },
    ("post", "/v1/chats"): {"json": {}},
    ("patch", "/v1/chats/{chat_id}"): {"json": {"title": "mine now"}},
    ("post", "/v1/chats/{chat_id}/messages"): {"json": {"content": "hello"}},
    ("post", "/v1/agents"): {"json": {"name": "intruder"}},
    ("patch", "/v1/agents/{agent_id}"): {"json": {"instructions": "mine now"}},
    ("post", "/v1/conversations/{conversation_id}/runs/{run_id}/approvals/{call_id}"): {
        "json": {"decision": "approve"}
    },
    ("post", "/v1/conversations/{conversation_id}/runs/{run_id}/tool-results"): {
        "json": {"results": [{"call_id": "call_1", "output": "x"}]}
    },
    ("post", "/v1/conversations/{conversation_id}/fork"): {"json": {"at_seq": 1}},
    ("post", "/v1/webhooks"): {"json": {"url": PUBLIC_URL, "events": ["budget.exceeded"]}},
    ("patch", "/v1/webhooks/{webhook_id}"): {"json": {"url": PUBLIC_URL + "/mine"}},
    ("post", "/v1/budgets"): {"json": {"scope": "tenant", "period": "day", "limit": "0"}},
    ("patch", "/v1/budgets/{budget_id}"): {"json": {"limit": "0"}},
    ("patch", "/langgraph/threads/{thread_id}"): {"json": {"metadata": {"mine": "now"}}},
    **{
        ("post", f"/langgraph/threads/{{thread_id}}/runs{tail}"): {
            "json": {
                "assistant_id": "default",
                "input": {"messages": [{"role": "user", "content": "hi"}]},
            }
        }
        for tail in ("", "/stream", "/wait")
    },
    ("post", "/openai/v1/responses"): {"json": {"model": "default", "input": "hi"}},
    ("put", "/v1/cors"): {"json": {"origins": ["https://app.example"]}},
    ("post", "/ai-sdk/chat"): {
        "json": {
            "id": "mine",
            "messages": [{"role": "user", "parts": [{"type": "text", "text": "hi"}]}],
        }
    },
    ("post", "/ag-ui/agents/{agent}"): {
        "json": {"threadId": "mine", "runId": "r", "messages": [{"role": "user", "content": "hi"}]}
    },
    ("put", "/v1/identity"): {
        "json": {"issuer": "https://id.example/", "audience": "atelier", "hs256_secret": "s" * 40}
    },
    ("post", "/v1/user-tokens"): {"json": {"user_id": "alice"}},
    ("post", "/v1/api-keys"): {"json": {"name": "intruder"}},
    ("post", "/v1/user-tokens/revoke"): {"json": {"user_id": "alice"}},
}
# Tenant-wide by contract (agents): another tenant gets 404, another user of the same
# tenant may use them.
TENANT_WIDE = {
    "/v1/agents/{agent_id}",
    "/v1/agents/{agent_id}/versions",
    "/v1/webhooks/{webhook_id}",
    "/v1/webhooks/{webhook_id}/rotate-secret",
    "/v1/webhooks/{webhook_id}/deliveries",
    "/v1/budgets/{budget_id}",
    "/langgraph/assistants/{assistant_id}",
    "/ag-ui/agents/{agent}",
    "/v1/webhooks/{webhook_id}/deliveries/{delivery_id}/redeliver",
    "/v1/agents/{agent_id}/mcp-servers/{server_name}/test",
    # The tenant's keys: any user of the tenant may (a user id is no authority over keys).
    "/v1/api-keys/{key_id}",
}
# Operations that name none of Alice's resources: they must answer, but only with the
# caller's own (empty) data.
UNOWNED = {
    ("get", "/health"),
    ("get", "/ready"),
    ("get", "/metrics"),
    ("get", "/v1/models"),
    ("get", "/v1/usage"),
    ("get", "/v1/conversations"),
    ("post", "/v1/conversations"),
    ("get", "/v1/chats"),
    ("post", "/v1/chats"),
    ("get", "/v1/agents"),
    ("post", "/v1/agents"),
    ("get", "/v1/webhooks"),
    ("post", "/v1/webhooks"),
    ("get", "/v1/budgets"),
    ("post", "/v1/budgets"),
    ("get", "/langgraph/info"),
    ("post", "/langgraph/assistants/search"),
    ("post", "/langgraph/assistants/count"),
    ("post", "/langgraph/threads"),
    ("post", "/langgraph/threads/search"),
    ("post", "/openai/v1/responses"),
    # The tenant's own settings: another tenant (or user) reads and writes only its own.
    ("get", "/v1/cors"),
    # A new chat of the caller's own; a chat id the caller has no chat by is a new chat
    # (no messages; no stream open: 204, as useChat's resume expects), whoever names it.
    ("post", "/ai-sdk/chat"),
    ("get", "/ai-sdk/chat/{chat_id}/stream"),
    ("get", "/ai-sdk/chat/{chat_id}/messages"),
    ("put", "/v1/cors"),
    ("put", "/v1/identity"),
    ("post", "/v1/user-tokens"),
    ("post", "/v1/user-tokens/revoke"),
    ("get", "/v1/limits"),
    # The tenant's own keys: another tenant lists and makes only its own.
    ("get", "/v1/api-keys"),
    ("post", "/v1/api-keys"),
}


class Owned:
    def __init__(
        self,
        conversation: str,
        run: str,
        chat: str,
        agent: str,
        webhook: str,
        budget: str,
        key: str,
    ) -> None:
        self.ids = {
            "key_id": key,
            "delivery_id": "00000000-0000-4000-8000-000000000001",
            "server_name": "crm",
            "webhook_id": webhook,
            "budget_id": budget,
            "conversation_id": conversation,
            "thread_id": conversation,
            "run_id": run,
            "response_id": f"resp_{run.replace('-', '')}",
            "chat_id": chat,
            "agent_id": agent,
            "assistant_id": agent,
            "agent": agent,
            "number": "1",
            "call_id": "call_1",
            "path": "secret/plan.txt",
            "checkpoint_id": "seq-2",
        }


@pytest.fixture
async def alice(client: httpx.AsyncClient, caller: Caller) -> Owned:
    conversation = await new_conversation(client, caller, title="Alice's")
    put = await client.put(
        f"/v1/conversations/{conversation}/files/secret/plan.txt",
        content=b"alice's secret",
        headers=caller.headers(),
    )
    assert put.status_code == 201
    events = await run_streamed(client, caller, conversation, "read secret/plan.txt")
    chat = (
        await client.post("/v1/chats", json={"title": "Alice's chat"}, headers=caller.headers())
    ).json()["id"]
    sent = await client.post(
        f"/v1/chats/{chat}/messages", json={"content": "hi"}, headers=caller.headers()
    )
    assert sent.status_code == 200
    agent = (
        await client.post("/v1/agents", json={"name": "alices"}, headers=caller.headers())
    ).json()["id"]
    webhook = (
        await client.post(
            "/v1/webhooks",
            json={"url": PUBLIC_URL, "events": ["budget.exceeded"]},
            headers=caller.headers(),
        )
    ).json()["id"]
    budget = (
        await client.post(
            "/v1/budgets",
            json={"scope": "user", "subject": "alice", "period": "day", "limit": "1000"},
            headers=caller.headers(),
        )
    ).json()["id"]
    key = (await client.get("/v1/api-keys", headers=caller.headers())).json()["data"][0]["id"]
    return Owned(conversation, events[0][2]["run_id"], chat, agent, webhook, budget, key)


def operations(app) -> list[tuple[str, str]]:  # type: ignore[no-untyped-def]
    spec = app.openapi()
    return sorted(
        (method, path)
        for path, item in spec["paths"].items()
        for method in item
        if method in {"get", "post", "put", "patch", "delete", "head"}
    )


async def snapshot(client: httpx.AsyncClient, caller: Caller, owned: Owned) -> list[Any]:
    ids = owned.ids
    conversation = f"/v1/conversations/{ids['conversation_id']}"
    urls = [
        conversation,
        f"{conversation}/files",
        f"{conversation}/files/{ids['path']}",
        f"{conversation}/messages",
        f"{conversation}/runs",
        f"/v1/chats/{ids['chat_id']}",
        f"/v1/chats/{ids['chat_id']}/messages",
        f"/v1/agents/{ids['agent_id']}",
        f"/v1/agents/{ids['agent_id']}/versions",
        f"/v1/webhooks/{ids['webhook_id']}",
        f"/v1/webhooks/{ids['webhook_id']}/deliveries",
        f"/v1/budgets/{ids['budget_id']}",
    ]
    states = []
    for url in urls:
        response = await client.get(url, headers=caller.headers())
        assert response.status_code == 200, url
        body = response.content
        states.append(body if "files/" in url else _without_volatile(response.json()))
    return states


def _without_volatile(body: Any) -> Any:
    """Drop what changes by itself (updated_at, a title that lands in the background)."""
    if isinstance(body, dict):
        return {k: _without_volatile(v) for k, v in body.items() if k != "updated_at"}
    if isinstance(body, list):
        return [_without_volatile(v) for v in body]
    return body


async def test_every_operation_refuses_other_tenants_and_other_users(
    app, client: httpx.AsyncClient, caller: Caller, alice: Owned
) -> None:
    intruders = {
        "another tenant": (await make_caller(app)).headers("alice"),
        "another user": caller.headers("mallory"),
    }
    before = await snapshot(client, caller, alice)
    swept = operations(app)
    assert len(swept) >= 29  # every operation of the API contract and more
    for method, template in swept:
        url = template.format(**alice.ids)
        for who, headers in intruders.items():
            if who == "another user" and template.removesuffix("/{number}") in TENANT_WIDE:
                continue
            response = await client.request(
                method.upper(), url, headers=headers, **BODIES.get((method, template), {})
            )
            if (method, template) in UNOWNED:
                assert response.status_code < 400, (who, method, template, response.text)
                for name, secret in alice.ids.items():
                    if name in ("number", "call_id", "delivery_id", "server_name") or (
                        who == "another user"
                        and name
                        in (
                            "agent_id",
                            "assistant_id",
                            "agent",
                            "webhook_id",
                            "budget_id",
                            "key_id",
                        )
                    ):
                        continue  # no secret; the tenant's agents are every user's
                    assert secret not in response.text, (who, method, template)
            else:
                assert response.status_code == 404, (who, method, template, response.text)
                # (OpenAI's error shape on its surface.)
                shape = "application/json" if url.startswith("/openai/") else "application/problem"
                assert response.headers["content-type"].startswith(shape)
    assert await snapshot(client, caller, alice) == before


async def test_a_tenant_header_that_contradicts_the_key_is_403_everywhere(
    app, client: httpx.AsyncClient, caller: Caller, alice: Owned
) -> None:
    other = await make_caller(app)
    for method, template in operations(app):
        if template in ("/health", "/ready", "/metrics"):
            continue
        url = template.format(**alice.ids)
        response = await client.request(
            method.upper(),
            url,
            headers=caller.headers(**{"X-Tenant-ID": str(other.tenant_id)}),
            **BODIES.get((method, template), {}),
        )
        assert response.status_code == 403, (method, template, response.text)
