"""Agents: immutable versions, a default per tenant, and runs that run (and record) one."""

from __future__ import annotations

import httpx
import pytest
from fastapi import FastAPI
from httpx_sse import aconnect_sse
from sqlalchemy import func, select

from atelier.agents.models import Agent, AgentVersion
from atelier.llm.fakes import ScriptedModel
from atelier.runs.models import Run
from atelier.runs.spec import WORKSPACE_INSTRUCTIONS
from tests.chats.test_chats import use_model
from tests.conftest import Caller, make_caller
from tests.live import serve_started
from tests.runs.helpers import new_conversation, run_streamed

AGENT = {
    "name": "reviewer",
    "instructions": "You review documents and never change them.",
    "tools": ["read_file", "list_files"],
    "limits": {"max_steps": 3},
    "metadata": {"team": "docs"},
}


async def create(client: httpx.AsyncClient, caller: Caller, **body: object) -> dict:
    response = await client.post("/v1/agents", json={**AGENT, **body}, headers=caller.headers())
    assert response.status_code == 201, response.text
    return dict(response.json())


async def stored_agents(app: FastAPI) -> tuple[int, int]:
    async with app.state.resources.sessionmaker() as session:
        agents = await session.scalar(select(func.count()).select_from(Agent))
        versions = await session.scalar(select(func.count()).select_from(AgentVersion))
    return int(agents or 0), int(versions or 0)


class TestAgentVersions:
    async def test_every_change_is_a_new_immutable_version(self, client, caller) -> None:
        agent = await create(client, caller)
        assert (agent["version"], agent["tools"], agent["limits"]["max_steps"]) == (
            1,
            ["read_file", "list_files"],
            3,
        )
        path = f"/v1/agents/{agent['id']}"
        changed = await client.patch(
            path, json={"instructions": "Be terse."}, headers=caller.headers()
        )
        assert changed.status_code == 200
        assert (changed.json()["version"], changed.json()["instructions"]) == (2, "Be terse.")
        assert changed.json()["tools"] == ["read_file", "list_files"]  # kept from version 1
        first = (await client.get(f"{path}/versions/1", headers=caller.headers())).json()
        assert first["instructions"] == AGENT["instructions"]
        listed = (await client.get(f"{path}/versions", headers=caller.headers())).json()["data"]
        assert [v["version"] for v in listed] == [1, 2]
        renamed = await client.patch(path, json={"name": "critic"}, headers=caller.headers())
        assert (renamed.json()["name"], renamed.json()["version"]) == ("critic", 2)
        missing = await client.get(f"{path}/versions/3", headers=caller.headers())
        assert (missing.status_code, missing.json()["code"]) == (404, "not_found")

    async def test_concurrent_changes_never_share_a_version(self, client, caller) -> None:
        import asyncio

        agent = await create(client, caller)
        path = f"/v1/agents/{agent['id']}"
        answers = await asyncio.gather(
            *(
                client.patch(path, json={"instructions": f"v{i}"}, headers=caller.headers())
                for i in range(5)
            )
        )
        ok = [a.json()["version"] for a in answers if a.status_code == 200]
        assert sorted(ok) == sorted(set(ok))
        listed = (await client.get(f"{path}/versions", headers=caller.headers())).json()["data"]
        assert [v["version"] for v in listed] == list(range(1, len(ok) + 2))

    async def test_every_tenant_has_a_default_agent_that_cannot_be_deleted(
        self, client, caller
    ) -> None:
        listed = (await client.get("/v1/agents", headers=caller.headers())).json()["data"]
        (default,) = [a for a in listed if a["name"] == "default"]
        assert (default["tools"], default["instructions"]) == (None, None)
        gone = await client.delete(f"/v1/agents/{default['id']}", headers=caller.headers())
        assert (gone.status_code, gone.json()["code"]) == (409, "default_agent")

    async def test_names_are_unique_among_live_agents(self, client, caller) -> None:
        agent = await create(client, caller)
        again = await client.post("/v1/agents", json=AGENT, headers=caller.headers())
        assert (again.status_code, again.json()["code"]) == (409, "agent_name_taken")
        assert (
            await client.delete(f"/v1/agents/{agent['id']}", headers=caller.headers())
        ).status_code == 204
        assert (
            await client.get(f"/v1/agents/{agent['id']}", headers=caller.headers())
        ).status_code == 404
        await create(client, caller)  # the name is free again

    @pytest.mark.parametrize(
        ("body", "field"),
        [
            ({"model_id": "no-such-model"}, "model_id"),
            ({"tools": ["read_file", "format_disk"]}, "tools"),
            ({"name": "has space"}, "name"),
            ({"limits": {"max_steps": 0}}, "limits"),
            ({"instructions": "nul\u0000"}, "instructions"),
            ({"approval": {"require": ["write_[file"]}}, "approval"),
            ({"approval": {"require": ["rm -rf *"]}}, "approval"),
            ({"mcp_servers": [{"name": "crm", "url": "file:///etc/passwd"}]}, "mcp_servers"),
            ({"mcp_servers": [{"name": "a b", "url": "https://crm.example/mcp"}]}, "mcp_servers"),
        ],
    )
    async def test_a_bad_definition_is_422_naming_the_field_and_saves_nothing(
        self, app, client, caller, body, field
    ) -> None:
        before = await stored_agents(app)
        response = await client.post("/v1/agents", json={**AGENT, **body}, headers=caller.headers())
        assert (response.status_code, response.json()["code"]) == (422, "validation_error")
        assert field in [e["loc"][1] for e in response.json()["errors"]]
        agent = await create(client, caller, name="kept")
        patched = await client.patch(
            f"/v1/agents/{agent['id']}", json=body, headers=caller.headers()
        )
        assert patched.status_code == 422
        assert await stored_agents(app) == (before[0] + 1, before[1] + 1)

    async def test_another_tenants_agents_are_404(self, app, client, caller) -> None:
        agent = await create(client, caller)
        other = await make_caller(app)
        for method, path in [
            ("get", f"/v1/agents/{agent['id']}"),
            ("patch", f"/v1/agents/{agent['id']}"),
            ("delete", f"/v1/agents/{agent['id']}"),
            ("get", f"/v1/agents/{agent['id']}/versions"),
            ("get", f"/v1/agents/{agent['id']}/versions/1"),
        ]:
            kwargs = {"json": {"instructions": "mine"}} if method == "patch" else {}
            response = await client.request(method, path, headers=other.headers(), **kwargs)
            assert response.status_code == 404, (method, path)
        theirs = (await client.get("/v1/agents", headers=other.headers())).json()["data"]
        assert [a["name"] for a in theirs] == ["default"]
        refused = await client.post(
            "/v1/conversations", json={"agent_id": agent["id"]}, headers=other.headers()
        )
        assert refused.status_code == 422


class TestRunsRunAnAgentVersion:
    async def test_a_run_uses_the_agents_instructions_tools_and_limits(
        self, app, client, caller
    ) -> None:
        model = ScriptedModel(["Looks", " fine."])
        await use_model(app, model)
        agent = await create(client, caller)
        conversation = await new_conversation(client, caller, agent_id=agent["id"])
        events = await run_streamed(client, caller, conversation, "review it")
        assert events[-1][1] == "run.completed"
        (request,) = model.requests
        assert request.system == AGENT["instructions"]
        assert [t.name for t in request.tools] == ["list_files", "read_file"]
        run_id = events[0][2]["run_id"]
        run = (
            await client.get(
                f"/v1/conversations/{conversation}/runs/{run_id}", headers=caller.headers()
            )
        ).json()
        assert (run["agent_id"], run["agent_version"]) == (agent["id"], 1)

    async def test_latest_or_pinned_version_and_a_deleted_agent(self, app, client, caller) -> None:
        model = ScriptedModel(["ok"])
        await use_model(app, model)
        agent = await create(client, caller)
        path = f"/v1/agents/{agent['id']}"
        await client.patch(path, json={"instructions": "Version two."}, headers=caller.headers())
        latest = await new_conversation(client, caller, agent_id=agent["id"])
        pinned = await new_conversation(client, caller, agent_id=agent["id"], agent_version=1)
        await run_streamed(client, caller, latest, "a")
        await run_streamed(client, caller, pinned, "b")
        assert [r.system for r in model.requests] == ["Version two.", AGENT["instructions"]]
        assert (await client.delete(path, headers=caller.headers())).status_code == 204
        refused = await client.post(
            f"/v1/conversations/{latest}/runs", json={"input": "c"}, headers=caller.headers()
        )
        assert (refused.status_code, refused.json()["code"]) == (409, "agent_deleted")
        events = await run_streamed(client, caller, pinned, "d")  # a pinned version goes on
        assert events[-1][1] == "run.completed"
        async with app.state.resources.sessionmaker() as session:
            runs = list(await session.scalars(select(Run).order_by(Run.created_at)))
        assert [(r.agent_version, r.status) for r in runs] == [
            (2, "completed"),
            (1, "completed"),
            (1, "completed"),
        ]

    async def test_a_conversation_without_an_agent_runs_the_default(
        self, app, client, caller
    ) -> None:
        model = ScriptedModel(["ok"])
        await use_model(app, model)
        conversation = await new_conversation(client, caller)
        events = await run_streamed(client, caller, conversation, "hi")
        assert events[-1][1] == "run.completed"
        assert model.requests[0].system == WORKSPACE_INSTRUCTIONS
        assert len(model.requests[0].tools) == 6
        default = (await client.get("/v1/agents", headers=caller.headers())).json()["data"][0]
        async with app.state.resources.sessionmaker() as session:
            run = await session.scalar(select(Run))
        assert run is not None
        assert (str(run.agent_id), run.agent_version) == (default["id"], 1)

    async def test_agent_limits_are_capped_by_the_servers(self, app, client, caller) -> None:
        from atelier.agents.schemas import AgentDefinition, AgentLimits
        from atelier.runs.spec import workspace_agent

        settings = app.state.settings
        spec = workspace_agent(
            settings,
            AgentDefinition(limits=AgentLimits(max_steps=10**4, deadline_seconds=1.5)),
        )
        assert spec.max_steps == settings.run_max_steps
        assert spec.deadline_seconds == 1.5

    async def test_the_agent_flow_over_a_real_socket(self, app, caller) -> None:
        async with (
            serve_started(app) as url,
            httpx.AsyncClient(base_url=url, headers=caller.headers()) as client,
        ):
            agent = (await client.post("/v1/agents", json=AGENT)).json()
            created = await client.post("/v1/conversations", json={"agent_id": agent["id"]})
            assert created.json()["agent_id"] == agent["id"]
            path = f"/v1/conversations/{created.json()['id']}/runs"
            async with aconnect_sse(client, "POST", path, json={"input": "write a.txt: hi"}) as s:
                names = [event.event async for event in s.aiter_sse()]
            # write_file is not among the agent's tools: the offline model is not offered it.
            assert "tool.started" not in names
            assert names[-1] == "run.completed"
