"""A run's timeline (the console's run inspector): every model call, approval and tool call
from what is stored, in the order they happened, with their figures; the files it changed
and how it ended. Also the lookups the console builds on: a page's runs by id, the
server's limits, and conversations found by title."""

from __future__ import annotations

import httpx
import pytest
from fastapi import FastAPI

from tests.agents.test_approvals import client as client  # over a real socket
from tests.agents.test_approvals import waiting_run
from tests.conftest import Caller
from tests.runs.helpers import new_conversation, run_streamed, wait_ended


async def test_a_runs_timeline_says_what_it_did_in_order(
    app: FastAPI, client: httpx.AsyncClient, caller: Caller
) -> None:
    conversation, run_id, events = await waiting_run(app, client, caller, "write a.txt: hi")
    base = f"/v1/conversations/{conversation}/runs/{run_id}"
    waiting = (await client.get(f"{base}/timeline", headers=caller.headers())).json()
    assert [step["type"] for step in waiting["steps"]] == ["model_call", "approval"]
    assert waiting["steps"][1]["decision"] == "pending"
    assert waiting["run"]["status"] == "awaiting_approval"
    call_id = events[-1][2]["call_id"]
    decided = await client.post(
        f"{base}/approvals/{call_id}", json={"decision": "approve"}, headers=caller.headers()
    )
    assert decided.status_code == 200, decided.text
    await wait_ended(client, caller, conversation, run_id)
    response = await client.get(f"{base}/timeline", headers=caller.headers())
    assert response.status_code == 200, response.text
    timeline = response.json()
    assert [step["type"] for step in timeline["steps"]] == [
        "model_call",
        "approval",
        "tool_call",
        "model_call",
    ]
    first, approval, tool, last = timeline["steps"]
    assert first["model_id"] == timeline["run"]["model_id"]
    assert first["input_tokens"] > 0
    assert first["output_tokens"] > 0
    assert first["time_to_first_token_ms"] is not None
    assert first["duration_ms"] >= first["time_to_first_token_ms"]
    assert first["cost"] is not None
    assert approval["decision"] == "approved"
    assert approval["decided_by"] == "alice"
    assert approval["decided_at"] is not None
    assert (tool["name"], tool["arguments"]) == ("write_file", {"path": "a.txt", "content": "hi"})
    assert tool["is_error"] is False
    assert tool["decision"] == "approved"  # kept with the result: the history says it too
    assert "a.txt" in tool["output"]
    assert isinstance(tool["duration_ms"], int)
    assert last["text"]
    ids = [step["event_id"] for step in timeline["steps"]]
    assert ids == sorted(ids)
    assert timeline["files"] == [{"path": "a.txt", "change": "created"}]
    assert timeline["run"]["status"] == "completed"
    assert timeline["run"]["input_tokens"] == first["input_tokens"] + last["input_tokens"]


async def test_a_plain_run_has_one_step_and_no_one_else_reads_it(
    client: httpx.AsyncClient, caller: Caller
) -> None:
    conversation = await new_conversation(client, caller)
    events = await run_streamed(client, caller, conversation, "hello")
    run_id = events[0][2]["run_id"]
    base = f"/v1/conversations/{conversation}/runs/{run_id}"
    mine = await client.get(f"{base}/timeline", headers=caller.headers())
    assert [step["type"] for step in mine.json()["steps"]] == ["model_call"]
    theirs = await client.get(f"{base}/timeline", headers=caller.headers("mallory"))
    assert theirs.status_code == 404


async def test_a_page_of_messages_asks_for_its_runs_by_id(
    client: httpx.AsyncClient, caller: Caller
) -> None:
    conversation = await new_conversation(client, caller)
    runs = []
    for text in ("one", "two", "three"):
        events = await run_streamed(client, caller, conversation, text)
        runs.append(events[0][2]["run_id"])
    picked = await client.get(
        f"/v1/conversations/{conversation}/runs",
        params=[("id", runs[0]), ("id", runs[2])],
        headers=caller.headers(),
    )
    assert picked.status_code == 200, picked.text
    assert {run["id"] for run in picked.json()["data"]} == {runs[0], runs[2]}
    too_many = await client.get(
        f"/v1/conversations/{conversation}/runs",
        params=[("id", runs[0])] * 201,
        headers=caller.headers(),
    )
    assert too_many.status_code == 422


@pytest.mark.parametrize("settings_overrides", [{"max_file_size": 3 * 1024 * 1024}])
async def test_the_limits_are_published_and_said_in_words(
    client: httpx.AsyncClient, caller: Caller
) -> None:
    limits = await client.get("/v1/limits", headers=caller.headers())
    assert limits.status_code == 200, limits.text
    assert limits.json()["max_file_bytes"] == 3 * 1024 * 1024
    conversation = await new_conversation(client, caller)
    refused = await client.put(
        f"/v1/conversations/{conversation}/files/big.bin",
        content=b"x" * (3 * 1024 * 1024 + 1),
        headers=caller.headers(),
    )
    assert refused.status_code == 413
    assert "over the 3 MiB limit" in refused.json()["detail"]


async def test_conversations_are_found_by_title_words_taken_literally(
    client: httpx.AsyncClient, caller: Caller
) -> None:
    for title in ("Quarterly report", "report 100%", "Holiday plans", "report_x"):
        await new_conversation(client, caller, title=title)
    await new_conversation(client, caller, title="someone else's report")

    async def found(q: str) -> set[str]:
        listed = await client.get("/v1/conversations", params={"q": q}, headers=caller.headers())
        assert listed.status_code == 200, listed.text
        return {c["title"] for c in listed.json()["data"]}

    assert await found("REPORT") == {
        "Quarterly report",
        "report 100%",
        "report_x",
        "someone else's report",
    }
    assert await found("100%") == {"report 100%"}
    assert await found("t_x") == {"report_x"}
    assert await found("%") == {"report 100%"}
    assert await found("nothing like it") == set()
