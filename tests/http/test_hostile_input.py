"""Input that one backend takes and the other cannot store is refused up front, alike on
both: PostgreSQL text cannot hold NUL, SQLite can (found by probing what the fuzzer
missed)."""

from __future__ import annotations

import pytest

from tests.runs.helpers import messages, new_conversation


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/conversations", {"title": "a\x00b"}),
        ("/v1/chats", {"title": "a\x00b"}),
        ("{conversation}/runs", {"input": "hi\x00there"}),
        ("{chat}/messages", {"content": "hi\x00there"}),
    ],
)
async def test_nul_in_text_is_422_and_stores_nothing(client, caller, path, body) -> None:
    conversation = await new_conversation(client, caller)
    chat = (await client.post("/v1/chats", json={}, headers=caller.headers())).json()["id"]
    url = path.format(conversation=f"/v1/conversations/{conversation}", chat=f"/v1/chats/{chat}")
    response = await client.post(url, json=body, headers=caller.headers())
    assert response.status_code == 422
    assert response.json()["code"] == "validation_error"
    assert await messages(client, caller, conversation) == []


async def test_nul_inside_metadata_json_round_trips(client, caller) -> None:
    response = await client.post(
        "/v1/conversations", json={"metadata": {"k\x00": "v\x00"}}, headers=caller.headers()
    )
    assert response.status_code == 201
    assert response.json()["metadata"] == {"k\x00": "v\x00"}
