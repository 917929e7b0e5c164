"""An agent's MCP servers, against a real MCP server (FastMCP over streamable HTTP) in a
process of its own: tools reach the model, every failure is the tool's error, headers are
write-only, and tenant URLs reach public addresses only."""

from __future__ import annotations

import httpx
import pytest
from fastapi import FastAPI
from httpx_sse import aconnect_sse
from sqlalchemy import select
from structlog.testing import capture_logs

from atelier.agents.models import AgentVersion
from tests.agents.mcp_server import McpServerProcess
from tests.conftest import Caller
from tests.live import serve_started
from tests.runs.helpers import new_conversation, run_streamed

TOKEN = "Bearer crm-s3cret-token"


@pytest.fixture
def settings_overrides() -> dict[str, object]:
    return {"mcp_allow_private": True, "mcp_call_timeout_seconds": 2}


async def crm_agent(client: httpx.AsyncClient, caller: Caller, url: str, **server: object) -> dict:
    body = {
        "name": "support",
        "instructions": "You help support staff.",
        "tools": [],
        "mcp_servers": [{"name": "crm", "url": url, "headers": {"Authorization": TOKEN}, **server}],
    }
    response = await client.post("/v1/agents", json=body, headers=caller.headers())
    assert response.status_code == 201, response.text
    return dict(response.json())


def tool_events(events: list) -> list[tuple[str, dict]]:
    return [(name, data) for _, name, data in events if name.startswith("tool.")]


class TestMcpTools:
    async def test_a_run_calls_an_mcp_tool_over_a_real_socket(
        self, app: FastAPI, caller, crm
    ) -> None:
        async with (
            serve_started(app) as url,
            httpx.AsyncClient(base_url=url, headers=caller.headers()) as client,
        ):
            agent = await crm_agent(client, caller, crm.url)
            created = await client.post("/v1/conversations", json={"agent_id": agent["id"]})
            path = f"/v1/conversations/{created.json()['id']}/runs"
            ask = 'call crm__find_customer {"email": "ann@example.com"}'
            async with aconnect_sse(client, "POST", path, json={"input": ask}) as source:
                events = [(e.event, e.data) async for e in source.aiter_sse()]
            names = [name for name, _ in events]
            assert names[-1] == "run.completed"
            completed = next(data for name, data in events if name == "tool.completed")
            assert "Ann Lee, plan gold" in completed
            assert '"is_error":false' in completed.replace(" ", "")
            run_id = next(data for name, data in events if name == "run.started")
            runs = (await client.get(path)).json()["data"]
            assert (runs[0]["agent_id"], runs[0]["agent_version"]) == (agent["id"], 1)
            assert runs[0]["id"] in run_id

    async def test_headers_reach_the_server_and_never_come_back(
        self, app, client, caller, crm
    ) -> None:
        with capture_logs() as logs:
            agent = await crm_agent(client, caller, crm.url)
            conversation = await new_conversation(client, caller, agent_id=agent["id"])
            events = await run_streamed(client, caller, conversation, "call crm__whoami {}")
        (_, completed) = tool_events(events)[-1]
        assert completed["output"] == TOKEN
        shown = [
            await client.get(f"/v1/agents/{agent['id']}", headers=caller.headers()),
            await client.get("/v1/agents", headers=caller.headers()),
            await client.get(f"/v1/agents/{agent['id']}/versions", headers=caller.headers()),
        ]
        for response in shown:
            assert "crm-s3cret-token" not in response.text
        assert agent["mcp_servers"][0]["header_names"] == ["Authorization"]
        assert "crm-s3cret-token" not in str(logs)
        async with app.state.resources.sessionmaker() as session:
            stored = list(await session.scalars(select(AgentVersion)))
        assert all("crm-s3cret-token" not in f"{v.definition}{v.secrets}" for v in stored)

    async def test_a_change_keeps_headers_unless_it_replaces_them(
        self, client, caller, crm
    ) -> None:
        agent = await crm_agent(client, caller, crm.url)
        path = f"/v1/agents/{agent['id']}"
        await client.patch(path, json={"instructions": "v2"}, headers=caller.headers())
        resent = {"mcp_servers": [{"name": "crm", "url": crm.url}]}
        await client.patch(path, json=resent, headers=caller.headers())
        conversation = await new_conversation(client, caller, agent_id=agent["id"])
        events = await run_streamed(client, caller, conversation, "call crm__whoami {}")
        assert tool_events(events)[-1][1]["output"] == TOKEN
        cleared = {"mcp_servers": [{"name": "crm", "url": crm.url, "headers": {}}]}
        changed = await client.patch(path, json=cleared, headers=caller.headers())
        assert changed.json()["mcp_servers"][0]["header_names"] == []
        events = await run_streamed(client, caller, conversation, "call crm__whoami {}")
        assert tool_events(events)[-1][1]["output"] == "nobody"

    async def test_a_urls_query_is_shown_redacted_and_kept_when_sent_back(
        self, app: FastAPI, caller, crm
    ) -> None:
        """A query's values are often secrets (``?key=...``): answers show them redacted, a
        definition read and written back keeps them, and no failure's reason carries them."""
        async with (
            serve_started(app) as url,
            httpx.AsyncClient(base_url=url, headers=caller.headers()) as client,
        ):
            agent = await crm_agent(client, caller, crm.url + "?key=s3cr3t-k3y&v=2")
            assert agent["mcp_servers"][0]["url"] == crm.url + "?key=redacted&v=redacted"
            path = f"/v1/agents/{agent['id']}"
            for shown in ("/v1/agents", path, f"{path}/versions"):
                assert "s3cr3t-k3y" not in (await client.get(shown)).text
            # Read, modify, write back: the URL keeps its query, the server its headers.
            read = (await client.get(path)).json()
            servers = [
                {k: v for k, v in s.items() if k != "header_names"} for s in read["mcp_servers"]
            ]
            changed = await client.patch(path, json={"instructions": "v2", "mcp_servers": servers})
            assert changed.json()["mcp_servers"][0]["header_names"] == ["Authorization"]
            conversation = await new_conversation(client, caller, agent_id=agent["id"])
            events = await run_streamed(client, caller, conversation, "call crm__where {}")
            assert tool_events(events)[-1][1]["output"] == "key=s3cr3t-k3y&v=2"
            # A server that answers 404: the reason the client is told keeps the key out.
            moved = {"name": "crm", "url": crm.url + "/nowhere?key=s3cr3t-k3y"}
            await client.patch(path, json={"mcp_servers": [moved]})
            with capture_logs() as logs:
                events = await run_streamed(client, caller, conversation, "call crm__where {}")
        (told,) = [data for _, name, data in events if name == "tools.unavailable"]
        assert told["server"] == "crm"
        assert "s3cr3t-k3y" not in f"{events}{logs}"

    async def test_a_new_url_without_headers_does_not_get_the_old_ones(
        self, client, caller, crm
    ) -> None:
        """The secret was given for the old URL: a server moved elsewhere with its headers
        left out sends none there."""
        agent = await crm_agent(client, caller, crm.url)
        with McpServerProcess() as elsewhere:
            moved = {"mcp_servers": [{"name": "crm", "url": elsewhere.url}]}
            changed = await client.patch(
                f"/v1/agents/{agent['id']}", json=moved, headers=caller.headers()
            )
            assert changed.json()["mcp_servers"][0]["header_names"] == []
            conversation = await new_conversation(client, caller, agent_id=agent["id"])
            events = await run_streamed(client, caller, conversation, "call crm__whoami {}")
        assert tool_events(events)[-1][1]["output"] == "nobody"

    @pytest.mark.parametrize(
        ("tool", "expected"),
        [
            ("fail", "the CRM is down"),
            ("hang", "no answer within 2 s"),
            ("die", "no answer within 2 s"),
        ],
    )
    async def test_a_failing_tool_is_the_tools_error_never_a_failed_run(
        self, client, caller, crm, tool, expected
    ) -> None:
        with McpServerProcess() as own:  # "die" takes its server down
            agent = await crm_agent(client, caller, own.url)
            conversation = await new_conversation(client, caller, agent_id=agent["id"])
            events = await run_streamed(client, caller, conversation, f"call crm__{tool} {{}}")
        assert events[-1][1] == "run.completed"
        (_, started), (_, completed) = tool_events(events)
        assert started["name"] == f"crm__{tool}"
        assert completed["is_error"] is True
        assert expected in completed["output"]

    async def test_an_answer_past_the_cap_is_a_tool_error_and_is_not_held(
        self, app, client, caller, crm
    ) -> None:
        """A 20 MiB answer against a 1 MiB cap: reading stops there, and the model is told
        why at once (not when the call's time is up)."""
        agent = await crm_agent(client, caller, crm.url)
        conversation = await new_conversation(client, caller, agent_id=agent["id"])
        events = await run_streamed(client, caller, conversation, 'call crm__flood {"mib": 20}')
        assert events[-1][1] == "run.completed"
        (_, _), (_, completed) = tool_events(events)
        assert completed["is_error"] is True
        assert "the tool's answer is over 1048576 bytes" in completed["output"]

    @pytest.mark.parametrize(
        ("tools", "reason"),
        [(2000, "its tool listing is over 1048576 bytes"), (200, "it lists over 128 tools")],
    )
    async def test_a_listing_past_the_cap_is_that_servers_failure(
        self, client, caller, tools, reason
    ) -> None:
        """2,000 tools with 2,000-character descriptions are over the listing's byte cap;
        200 are over its count cap. The run goes on without that server's tools."""
        with McpServerProcess(extra_tools=tools) as crowded:
            agent = await crm_agent(client, caller, crowded.url)
            conversation = await new_conversation(client, caller, agent_id=agent["id"])
            with capture_logs() as logs:
                events = await run_streamed(client, caller, conversation, "call crm__whoami {}")
        assert events[-1][1] == "run.completed"
        assert tool_events(events) == []
        reasons = [e.get("reason", "") for e in logs]
        assert any(reason in r for r in reasons), reasons

    async def test_an_unreachable_server_offers_no_tools_and_the_run_goes_on(
        self, client, caller
    ) -> None:
        with McpServerProcess() as gone:
            url = gone.url
        agent = await crm_agent(client, caller, url)
        conversation = await new_conversation(client, caller, agent_id=agent["id"])
        with capture_logs() as logs:
            events = await run_streamed(client, caller, conversation, "call crm__whoami {}")
        assert events[-1][1] == "run.completed"
        assert tool_events(events) == []
        assert any(e["event"].startswith("MCP server unavailable") for e in logs)
        # The client is told too, naming the server and why.
        (told,) = [data for _, name, data in events if name == "tools.unavailable"]
        assert told["server"] == "crm"
        assert "ConnectError" in told["reason"] or "connect" in told["reason"].lower()

    async def test_allowed_tools_limit_what_the_model_is_offered(
        self, app, client, caller, crm
    ) -> None:
        from atelier.llm.fakes import ScriptedModel
        from tests.chats.test_chats import use_model

        model = ScriptedModel(["ok"])
        await use_model(app, model)
        agent = await crm_agent(client, caller, crm.url, allowed_tools=["find_customer"])
        conversation = await new_conversation(client, caller, agent_id=agent["id"])
        await run_streamed(client, caller, conversation, "hi")
        assert [t.name for t in model.requests[0].tools] == ["crm__find_customer"]

    @pytest.mark.parametrize("url", ["ftp://crm.example/mcp", "not a url", "http://"])
    async def test_a_url_that_is_not_http_is_422(self, client, caller, url) -> None:
        body = {"name": "x", "mcp_servers": [{"name": "crm", "url": url}]}
        response = await client.post("/v1/agents", json=body, headers=caller.headers())
        assert response.status_code == 422
        assert response.json()["errors"][0]["loc"][:2] == ["body", "mcp_servers"]


class TestPrivateAddressesAreRefused:
    @pytest.fixture
    def settings_overrides(self) -> dict[str, object]:
        return {"mcp_allow_private": False, "mcp_call_timeout_seconds": 2}

    @pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "127.000.000.001", "0177.0.0.1"])
    async def test_refused_when_the_agent_is_saved(self, client, caller, crm, host) -> None:
        """A literal loopback address, a name that resolves to one, and spellings that
        one parser reads as loopback and another refuses: 4xx, never stored, never 500."""
        url = crm.url.replace("127.0.0.1", host)
        body = {"name": "crm-agent", "mcp_servers": [{"name": "crm", "url": url}]}
        created = await client.post("/v1/agents", json=body, headers=caller.headers())
        assert created.status_code in (400, 422), created.text
        expected = "mcp_url_not_allowed" if host in ("127.0.0.1", "localhost") else None
        assert created.json()["code"] == (expected or "validation_error")
        listed = await client.get("/v1/agents", headers=caller.headers())
        assert "crm-agent" not in {a["name"] for a in listed.json()["data"]}

    @pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
    async def test_loopback_after_dns_resolution(
        self, client, caller, crm, host, monkeypatch
    ) -> None:
        """Public when the agent was saved, loopback when a run connects (DNS answers
        change): refused again at connection."""
        from atelier.agents import service

        async def public_then(url: str, *, allow_private: bool) -> None:
            return None

        url = crm.url.replace("127.0.0.1", host)
        monkeypatch.setattr(service, "check_public", public_then)
        agent = await crm_agent(client, caller, url)
        monkeypatch.undo()
        conversation = await new_conversation(client, caller, agent_id=agent["id"])
        with capture_logs() as logs:
            events = await run_streamed(client, caller, conversation, "call crm__whoami {}")
        assert tool_events(events) == []  # no tools from it: nothing was sent there
        reasons = [e.get("reason", "") for e in logs]
        assert any("non-public address" in reason for reason in reasons)


class TestConnectionTest:
    """``POST /v1/agents/{id}/mcp-servers/{name}/test``: the console's "test the connection"."""

    async def test_a_server_lists_its_tools_and_says_which_are_offered(
        self, client, caller, crm
    ) -> None:
        agent = await crm_agent(client, caller, crm.url, allowed_tools=["find_customer"])
        path = f"/v1/agents/{agent['id']}/mcp-servers/crm/test"
        tested = await client.post(path, headers=caller.headers())
        assert tested.status_code == 200, tested.text
        answer = tested.json()
        assert (answer["available"], answer["reason"]) == (True, None)
        offered = {tool["name"]: tool["offered"] for tool in answer["tools"]}
        assert offered["find_customer"] is True
        assert offered["whoami"] is False
        assert "crm-s3cret-token" not in tested.text

    async def test_a_server_that_does_not_answer_says_why(self, client, caller) -> None:
        from tests.conftest import free_port

        gone = f"http://127.0.0.1:{free_port()}/mcp"
        agent = await crm_agent(client, caller, gone)
        tested = await client.post(
            f"/v1/agents/{agent['id']}/mcp-servers/crm/test", headers=caller.headers()
        )
        assert tested.status_code == 200, tested.text
        assert tested.json()["available"] is False
        assert tested.json()["reason"]
        missing = await client.post(
            f"/v1/agents/{agent['id']}/mcp-servers/nope/test", headers=caller.headers()
        )
        assert missing.status_code == 404

    @pytest.mark.parametrize("settings_overrides", [{"mcp_allow_private": False}])
    async def test_a_private_address_is_refused_on_connect(self, app, client, caller) -> None:
        """Saved when private addresses were allowed, tested when they are not: refused at
        the connection, as a run's would be."""
        app.state.resources.settings.mcp_allow_private = True
        agent = await crm_agent(client, caller, "http://127.0.0.1:9/mcp")
        app.state.resources.settings.mcp_allow_private = False
        tested = await client.post(
            f"/v1/agents/{agent['id']}/mcp-servers/crm/test", headers=caller.headers()
        )
        assert tested.json()["available"] is False
        assert "non-public address" in tested.json()["reason"]
