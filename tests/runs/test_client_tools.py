"""Tools the caller runs (client tools), over a real socket on both backends: the model's
call is ``tool.requested``, the run waits in its row (held by no process) with the status
``awaiting_tool_result``, and the results posted to ``…/tool-results`` -- from any process
-- take it on, beside server tools in the same run."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from httpx_sse import aconnect_sse

from tests.conftest import Caller
from tests.runs.helpers import new_conversation, wait_status

WEATHER = {
    "name": "lookup_weather",
    "description": "The weather in a city, as the user's device sees it.",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
    },
}
ASK = 'call lookup_weather {"city": "Paris"}'


async def follow(
    client: httpx.AsyncClient, caller: Caller, path: str, until: str, **kwargs: Any
) -> list[tuple[int | None, str, dict]]:
    """The stream's events up to the first ``until`` (the stream may stay open)."""
    events = []
    method = "POST" if kwargs else "GET"
    async with aconnect_sse(client, method, path, headers=caller.headers(), **kwargs) as source:
        async for event in source.aiter_sse():
            events.append(
                (int(event.id) if event.id else None, event.event, json.loads(event.data))
            )
            if event.event == until:
                break
    return events


async def waiting_for_the_client(
    app: FastAPI, client: httpx.AsyncClient, caller: Caller, text: str = ASK
) -> tuple[str, str, list]:
    conversation = await new_conversation(client, caller)
    body = {"input": text, "client_tools": [WEATHER]}
    path = f"/v1/conversations/{conversation}/runs"
    events = await follow(client, caller, path, "tool.requested", json=body)
    run_id = events[0][2]["run_id"]
    async with asyncio.timeout(10):  # it waits in its row, held by no task
        while run_id in {str(r) for r in app.state.resources.runs.local}:
            await asyncio.sleep(0.01)
    return conversation, run_id, events


class TestClientTools:
    async def test_the_run_waits_for_the_result_and_goes_on_with_it(
        self, app: FastAPI, tcp: httpx.AsyncClient, caller: Caller
    ) -> None:
        conversation, run_id, events = await waiting_for_the_client(app, tcp, caller)
        requested = events[-1][2]
        assert (requested["name"], requested["input"]) == ("lookup_weather", {"city": "Paris"})
        runs = f"/v1/conversations/{conversation}/runs/{run_id}"
        waiting = await wait_status(tcp, caller, conversation, run_id, {"awaiting_tool_result"})
        assert waiting["status"] == "awaiting_tool_result"
        result = {"call_id": requested["call_id"], "output": {"celsius": 21, "sky": "clear"}}
        answered = await tcp.post(
            f"{runs}/tool-results", json={"results": [result]}, headers=caller.headers()
        )
        assert answered.status_code == 200, answered.text
        rest = await follow(tcp, caller, f"{runs}/events", "run.completed")
        names = [name for _, name, _ in rest]
        assert names[-1] == "run.completed"
        completed = next(data for _, name, data in rest if name == "tool.completed")
        assert json.loads(completed["output"]) == {"celsius": 21, "sky": "clear"}
        assert completed["is_error"] is False
        # Ids go on: nothing repeated, nothing missing.
        ids = [number for number, _, _ in rest]
        assert ids == list(range(ids[0], ids[0] + len(ids)))
        stored = (
            await tcp.get(f"/v1/conversations/{conversation}/messages", headers=caller.headers())
        ).json()["data"]
        (tool,) = [m for m in stored if m["role"] == "tool"]
        assert json.loads(tool["parts"][0]["content"]) == {"celsius": 21, "sky": "clear"}
        again = await tcp.post(
            f"{runs}/tool-results", json={"results": [result]}, headers=caller.headers()
        )
        assert (again.status_code, again.json()["code"]) == (409, "already_decided")

    async def test_server_and_client_tools_in_one_run(
        self, app: FastAPI, tcp: httpx.AsyncClient, caller: Caller
    ) -> None:
        plan = f"write notes.txt: before\n{ASK}\nread notes.txt"
        conversation, run_id, events = await waiting_for_the_client(app, tcp, caller, plan)
        names = [name for _, name, _ in events]
        assert names.index("file.changed") < names.index("tool.requested")
        assert "tool.completed" in names  # the server's write ran before the wait
        call = events[-1][2]["call_id"]
        runs = f"/v1/conversations/{conversation}/runs/{run_id}"
        results = {"results": [{"call_id": call, "output": "rainy", "is_error": False}]}
        assert (
            await tcp.post(f"{runs}/tool-results", json=results, headers=caller.headers())
        ).status_code == 200
        rest = await follow(tcp, caller, f"{runs}/events", "run.completed")
        outputs = [data["output"] for _, name, data in rest if name == "tool.completed"]
        # The server's write, the client's result, then the server's read of the file.
        assert outputs == ["wrote 6 bytes to notes.txt", "rainy", "before"]

    async def test_refusals_are_clear_and_change_nothing(
        self, app: FastAPI, tcp: httpx.AsyncClient, caller: Caller
    ) -> None:
        conversation = await new_conversation(tcp, caller)
        path = f"/v1/conversations/{conversation}/runs"
        for tools in (
            [{**WEATHER, "name": "write_file"}],  # a built-in tool's name
            [{**WEATHER, "name": "crm__find"}],  # an MCP tool's form
            [WEATHER, WEATHER],  # twice
            [{**WEATHER, "parameters": {"type": "string"}}],
        ):
            refused = await tcp.post(
                path, json={"input": ASK, "client_tools": tools}, headers=caller.headers()
            )
            assert refused.status_code == 422, refused.text
        assert (await tcp.get(path, headers=caller.headers())).json()["data"] == []
        conversation, run_id, events = await waiting_for_the_client(app, tcp, caller)
        runs = f"/v1/conversations/{conversation}/runs/{run_id}"
        unknown = {"results": [{"call_id": "call_nope", "output": "x"}]}
        missing = await tcp.post(f"{runs}/tool-results", json=unknown, headers=caller.headers())
        assert (missing.status_code, missing.json()["code"]) == (404, "not_found")
        decided = await tcp.post(
            f"{runs}/approvals/{events[-1][2]['call_id']}",
            json={"decision": "approve"},
            headers=caller.headers(),
        )
        assert decided.status_code == 404  # a client tool's call is answered, not approved
        other = await tcp.post(
            f"{runs}/tool-results",
            json={"results": [{"call_id": events[-1][2]["call_id"], "output": "x"}]},
            headers=caller.headers("bob"),
        )
        assert other.status_code == 404  # not bob's run
        cancelled = await tcp.post(f"{runs}/cancel", headers=caller.headers())
        assert cancelled.status_code == 202
        ended = await wait_status(tcp, caller, conversation, run_id, {"cancelled"})
        assert ended["status"] == "cancelled"

    @pytest.mark.parametrize("backend", ["services"])
    async def test_a_result_posted_to_another_process_takes_the_run_on(
        self, app: FastAPI, tcp: httpx.AsyncClient, caller: Caller, elsewhere: httpx.AsyncClient
    ) -> None:
        conversation, run_id, events = await waiting_for_the_client(app, tcp, caller)
        runs = f"/v1/conversations/{conversation}/runs/{run_id}"
        result = {"results": [{"call_id": events[-1][2]["call_id"], "output": "sunny"}]}
        answered = await elsewhere.post(
            f"{runs}/tool-results", json=result, headers=caller.headers()
        )
        assert answered.status_code == 200, answered.text
        rest = await follow(elsewhere, caller, f"{runs}/events", "run.completed")
        assert [d["output"] for _, n, d in rest if n == "tool.completed"] == ["sunny"]
