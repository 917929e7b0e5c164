"""A person's approval: a run waits in its row (no task, no lock) for decisions made from
any process, then goes on; no decision in time is a denial."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import FastAPI
from httpx_sse import aconnect_sse
from sqlalchemy import select

from atelier.llm.base import ModelRequest, Stop, StreamEvent, TextDelta, ToolCall
from atelier.runs.models import Approval, Run
from tests.agents.mcp_server import McpServerProcess
from tests.conftest import Caller
from tests.runs.helpers import new_conversation

CAREFUL = {"name": "careful", "approval": {"require": ["write_*", "delete_file"]}}


@pytest.fixture
def client(tcp: httpx.AsyncClient) -> httpx.AsyncClient:
    """Over a real socket: a stream that waits for a person must arrive as it is sent."""
    return tcp


async def careful_conversation(client: httpx.AsyncClient, caller: Caller) -> str:
    agent = await client.post("/v1/agents", json=CAREFUL, headers=caller.headers())
    assert agent.status_code == 201, agent.text
    return await new_conversation(client, caller, agent_id=agent.json()["id"])


async def stream_until(
    client: httpx.AsyncClient, caller: Caller, path: str, stop: str, **kwargs: object
) -> list[tuple[int | None, str, dict]]:
    """The stream's events up to the first ``stop`` event (the stream stays open)."""
    events = []
    async with aconnect_sse(
        client, "GET" if not kwargs else "POST", path, headers=caller.headers(), **kwargs
    ) as source:  # type: ignore[arg-type]
        async for event in source.aiter_sse():
            events.append(
                (int(event.id) if event.id else None, event.event, json.loads(event.data))
            )
            if event.event == stop:
                break
    return events


async def waiting_run(app: FastAPI, client, caller, text: str) -> tuple[str, str, list]:
    conversation = await careful_conversation(client, caller)
    events = await stream_until(
        client,
        caller,
        f"/v1/conversations/{conversation}/runs",
        "approval.requested",
        json={"input": text},
    )
    run_id = events[0][2]["run_id"]
    # It waits in its row, held by no task of any process.
    async with asyncio.timeout(10):
        while run_id in {str(r) for r in app.state.resources.runs.local}:
            await asyncio.sleep(0.01)
    return conversation, run_id, events


class TestApprovals:
    async def test_approved_call_runs_and_the_run_completes(self, app, client, caller) -> None:
        conversation, run_id, events = await waiting_run(app, client, caller, "write a.txt: hi")
        requested = events[-1][2]
        assert (requested["name"], requested["input"]) == (
            "write_file",
            {"path": "a.txt", "content": "hi"},
        )
        run = (
            await client.get(
                f"/v1/conversations/{conversation}/runs/{run_id}", headers=caller.headers()
            )
        ).json()
        assert run["status"] == "awaiting_approval"
        busy = await client.post(
            f"/v1/conversations/{conversation}/runs", json={"input": "x"}, headers=caller.headers()
        )
        assert (busy.status_code, busy.json()["code"]) == (409, "conversation_busy")
        decided = await client.post(
            f"/v1/conversations/{conversation}/runs/{run_id}/approvals/{requested['call_id']}",
            json={"decision": "approve"},
            headers=caller.headers(),
        )
        assert decided.status_code == 200, decided.text
        again = await client.post(
            f"/v1/conversations/{conversation}/runs/{run_id}/approvals/{requested['call_id']}",
            json={"decision": "deny"},
            headers=caller.headers(),
        )
        assert (again.status_code, again.json()["code"]) == (409, "already_decided")
        rest = await stream_until(
            client,
            caller,
            f"/v1/conversations/{conversation}/runs/{run_id}/events?after={events[-1][0]}",
            "run.completed",
        )
        names = [name for _, name, _ in rest]
        assert names[0] == "approval.resolved"
        assert rest[0][2] == {"call_id": requested["call_id"], "decision": "approve"}
        assert "tool.completed" in names
        assert "file.changed" in names
        assert [number for number, _, _ in rest] == list(
            range(events[-1][0] + 1, events[-1][0] + 1 + len(rest))
        )
        tool = next(data for _, name, data in rest if name == "tool.completed")
        assert tool["is_error"] is False
        files = await client.get(
            f"/v1/conversations/{conversation}/files/a.txt", headers=caller.headers()
        )
        assert files.content == b"hi"

    async def test_a_denial_reaches_the_model_as_the_tools_error(self, app, client, caller) -> None:
        conversation, run_id, events = await waiting_run(app, client, caller, "delete notes.txt")
        call_id = events[-1][2]["call_id"]
        await client.post(
            f"/v1/conversations/{conversation}/runs/{run_id}/approvals/{call_id}",
            json={"decision": "deny", "reason": "keep the notes"},
            headers=caller.headers(),
        )
        rest = await stream_until(
            client,
            caller,
            f"/v1/conversations/{conversation}/runs/{run_id}/events?after={events[-1][0]}",
            "run.completed",
        )
        tool = next(data for _, name, data in rest if name == "tool.completed")
        assert tool["is_error"] is True
        assert "denied" in tool["output"]
        assert "keep the notes" in tool["output"]
        reply = [data for _, name, data in rest if name == "message.completed"][-1]
        assert "keep the notes" in reply["content"]  # the offline model repeats what the tool said

    async def test_a_stream_stays_open_while_the_run_waits(self, app, client, caller) -> None:
        conversation, run_id, events = await waiting_run(app, client, caller, "write b.txt: x")
        path = f"/v1/conversations/{conversation}/runs/{run_id}/events"

        async def follow() -> list:
            return await stream_until(client, caller, path, "run.completed")

        follower = asyncio.create_task(follow())
        await asyncio.sleep(0)  # it replays, then waits with the run
        assert not follower.done()
        await client.post(
            f"{path.removesuffix('/events')}/approvals/{events[-1][2]['call_id']}",
            json={"decision": "approve"},
            headers=caller.headers(),
        )
        seen = await asyncio.wait_for(follower, 30)
        assert [n for n, _, _ in seen] == list(range(1, len(seen) + 1))
        assert seen[-1][1] == "run.completed"

    async def test_cancelling_a_waiting_run_ends_it(self, app, client, caller) -> None:
        conversation, run_id, events = await waiting_run(app, client, caller, "write c.txt: x")
        cancelled = await client.post(
            f"/v1/conversations/{conversation}/runs/{run_id}/cancel", headers=caller.headers()
        )
        assert cancelled.status_code == 202
        rest = await stream_until(
            client,
            caller,
            f"/v1/conversations/{conversation}/runs/{run_id}/events?after={events[-1][0]}",
            "run.cancelled",
        )
        assert [(n, name) for n, name, _ in rest] == [(events[-1][0] + 1, "run.cancelled")]
        async with app.state.resources.sessionmaker() as session:
            approval = await session.scalar(select(Approval))
        assert approval is not None
        assert approval.status == "denied"
        again = await client.post(
            f"/v1/conversations/{conversation}/runs",
            json={"input": "hello"},
            headers=caller.headers(),
        )
        assert again.status_code == 202  # the conversation is free


class TestNoDecisionInTime:
    @pytest.fixture
    def settings_overrides(self) -> dict[str, object]:
        return {"approval_timeout_seconds": 0.001}

    async def test_an_undecided_call_is_denied_and_the_run_goes_on(
        self, app, client, caller
    ) -> None:
        conversation, run_id, events = await waiting_run(app, client, caller, "write d.txt: x")
        assert await app.state.resources.runs.upkeep.decided() == 1
        rest = await stream_until(
            client,
            caller,
            f"/v1/conversations/{conversation}/runs/{run_id}/events?after={events[-1][0]}",
            "run.completed",
        )
        assert rest[0][2]["decision"] == "deny"
        tool = next(data for _, name, data in rest if name == "tool.completed")
        assert "no decision within" in tool["output"]
        async with app.state.resources.sessionmaker() as session:
            run = await session.get(Run, uuid.UUID(run_id))
        assert run is not None
        assert run.status == "completed"


class TestAnMcpToolThatNeedsApproval:
    """The whole path on each backend: instructions, an MCP server, an approval rule."""

    @pytest.fixture
    def settings_overrides(self) -> dict[str, object]:
        return {"mcp_allow_private": True}

    async def test_approve_then_the_mcp_tools_result_and_the_reply(
        self, app, client, caller
    ) -> None:
        with McpServerProcess() as crm:
            agent = await client.post(
                "/v1/agents",
                json={
                    "name": "support",
                    "instructions": "You help support staff.",
                    "tools": [],
                    "mcp_servers": [{"name": "crm", "url": crm.url}],
                    "approval": {"require": ["crm__*"]},
                },
                headers=caller.headers(),
            )
            conversation = await new_conversation(client, caller, agent_id=agent.json()["id"])
            ask = 'call crm__find_customer {"email": "ann@example.com"}'
            first = await stream_until(
                client,
                caller,
                f"/v1/conversations/{conversation}/runs",
                "approval.requested",
                json={"input": ask},
            )
            run_id, call = first[0][2]["run_id"], first[-1][2]
            assert call["name"] == "crm__find_customer"
            path = f"/v1/conversations/{conversation}/runs/{run_id}"
            await client.post(
                f"{path}/approvals/{call['call_id']}",
                json={"decision": "approve"},
                headers=caller.headers(),
            )
            rest = await stream_until(
                client, caller, f"{path}/events?after={first[-1][0]}", "run.completed"
            )
        tool = next(data for _, name, data in rest if name == "tool.completed")
        assert "Ann Lee, plan gold" in tool["output"]
        assert "Ann Lee" in [d for _, n, d in rest if n == "message.completed"][-1]["content"]
        run = (await client.get(path, headers=caller.headers())).json()
        assert (run["agent_id"], run["agent_version"]) == (agent.json()["id"], 1)


class TwoWrites:
    """A model that asks for two writes in one step, then says it is done."""

    provider = "offline"

    async def stream(self, request: ModelRequest) -> AsyncIterator[StreamEvent]:
        if request.messages[-1].role == "user":
            yield ToolCall("call_x", "write_file", {"path": "x.txt", "content": "1"})
            yield ToolCall("call_y", "write_file", {"path": "y.txt", "content": "2"})
            yield Stop("tool_use")
        else:
            yield TextDelta("done")
            yield Stop("end_turn")


class TestSeveralCallsInOneStep:
    async def test_the_run_goes_on_only_once_every_call_is_decided(
        self, app, client, caller
    ) -> None:
        app.state.resources.models.providers["offline"] = TwoWrites()
        conversation = await careful_conversation(client, caller)
        runs = f"/v1/conversations/{conversation}/runs"
        first = await stream_until(client, caller, runs, "usage", json={"input": "two files"})
        run_id = first[0][2]["run_id"]
        path = f"{runs}/{run_id}"
        decide = f"{path}/approvals"
        async with asyncio.timeout(10):  # it waits in its row, held by no task
            while run_id in {str(r) for r in app.state.resources.runs.local}:
                await asyncio.sleep(0.01)
        approved = await client.post(
            f"{decide}/call_x", json={"decision": "approve"}, headers=caller.headers()
        )
        assert approved.json()["status"] == "awaiting_approval"  # call_y is not decided
        assert run_id not in {str(r) for r in app.state.resources.runs.local}
        denied = await client.post(
            f"{decide}/call_y", json={"decision": "deny"}, headers=caller.headers()
        )
        assert denied.status_code == 200
        rest = await stream_until(client, caller, f"{path}/events", "run.completed")
        names = [name for _, name, _ in rest]
        assert names.count("approval.requested") == 2
        assert names.count("approval.resolved") == 2
        results = {d["call_id"]: d["is_error"] for _, n, d in rest if n == "tool.completed"}
        assert results == {"call_x": False, "call_y": True}
        x = await client.get(
            f"/v1/conversations/{conversation}/files/x.txt", headers=caller.headers()
        )
        y = await client.get(
            f"/v1/conversations/{conversation}/files/y.txt", headers=caller.headers()
        )
        assert (x.status_code, y.status_code) == (200, 404)
