"""The whole agent path across real processes (PostgreSQL, Redis, S3, a real MCP server):
an agent with instructions, an MCP server and an approval rule; a run that waits for a
person; every server process killed while it waits; a new process takes the decision,
and the run goes on to the MCP tool's result and the reply."""

from __future__ import annotations

import json

import httpx
from cryptography.fernet import Fernet

from tests.agents.mcp_server import McpServerProcess
from tests.fixtures.processes import Deployment, events


async def test_a_waiting_run_survives_every_process_and_completes(
    deployment: Deployment, servers
) -> None:
    d = deployment
    keys = {
        "ATELIER_SECRETS_KEY": Fernet.generate_key().decode(),
        "ATELIER_MCP_ALLOW_PRIVATE": "true",
    }
    with McpServerProcess() as crm:
        a, b = servers(**keys), servers(**keys)
        await a.ready()
        await b.ready()
        async with httpx.AsyncClient(base_url=a.url, headers=d.headers(), timeout=30) as http:
            agent = await http.post(
                "/v1/agents",
                json={
                    "name": "support",
                    "instructions": "You help support staff.",
                    "mcp_servers": [
                        {"name": "crm", "url": crm.url, "headers": {"Authorization": "Bearer t"}}
                    ],
                    "approval": {"require": ["crm__*"]},
                },
            )
            assert agent.status_code == 201, agent.text
            conversation = (
                await http.post("/v1/conversations", json={"agent_id": agent.json()["id"]})
            ).json()["id"]
            runs = f"/v1/conversations/{conversation}/runs"
            started = await http.post(
                runs, json={"input": 'call crm__find_customer {"email": "ann@example.com"}'}
            )
            run_id = started.json()["id"]
            seen = []
            async for event in events(http, f"{runs}/{run_id}/events", d.headers()):
                seen.append(event)
                if event[1] == "approval.requested":
                    break
        requested = seen[-1]
        assert requested[2]["name"] == "crm__find_customer"

        a.stop()
        b.stop()  # no process of the deployment is left
        c = servers(**keys)
        await c.ready()
        async with httpx.AsyncClient(base_url=c.url, headers=d.headers(), timeout=30) as http:
            waiting = (await http.get(f"{runs}/{run_id}")).json()
            assert waiting["status"] == "awaiting_approval"
            decided = await http.post(
                f"{runs}/{run_id}/approvals/{requested[2]['call_id']}", json={"decision": "approve"}
            )
            assert decided.status_code == 200, decided.text
            rest = []
            async for event in events(
                http, f"{runs}/{run_id}/events?after={requested[0]}", d.headers()
            ):
                rest.append(event)
        names = [name for _, name, _ in rest]
        assert names[0] == "approval.resolved"
        assert names[-1] == "run.completed"
        assert [number for number, _, _ in rest] == list(
            range(requested[0] + 1, requested[0] + 1 + len(rest))
        )
        tool = next(data for _, name, data in rest if name == "tool.completed")
        assert "Ann Lee, plan gold" in tool["output"]
        reply = [data for _, name, data in rest if name == "message.completed"][-1]
        assert "Ann Lee" in reply["content"]
        async with httpx.AsyncClient(base_url=c.url, headers=d.headers(), timeout=30) as http:
            run = (await http.get(f"{runs}/{run_id}")).json()
        assert (run["status"], run["agent_id"], run["agent_version"]) == (
            "completed",
            agent.json()["id"],
            1,
        )
        assert json.dumps(agent.json()).count("Bearer t") == 0
