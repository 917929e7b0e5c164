from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Path, Response

from atelier.agents import service
from atelier.agents.schemas import (
    AgentCreate,
    AgentList,
    AgentOut,
    AgentPatch,
    AgentVersionList,
    AgentVersionOut,
    McpProbeOut,
    McpToolOut,
)
from atelier.db.paging import MAX_LIMIT
from atelier.http.deps import CallerDep, Cursor, Limit, PrincipalDep, ResourcesDep, SessionDep
from atelier.http.errors import ProblemError
from atelier.runs import probe_mcp_server
from atelier.tenants.principal import Principal

router = APIRouter(prefix="/v1/agents", tags=["agents"])
VersionNumber = Annotated[int, Path(ge=1, le=2**31 - 1)]


def _granted(principal: Principal, agent_id: uuid.UUID) -> uuid.UUID:
    """``agent_id`` if the caller may see it: an agent a token does not grant is no agent."""
    if not principal.may_use_agent(agent_id):
        raise ProblemError(404, "not_found", "no such agent")
    return agent_id


@router.post("", status_code=201)
async def create_agent(
    body: AgentCreate, principal: PrincipalDep, session: SessionDep, resources: ResourcesDep
) -> AgentOut:
    service.check_model(resources.catalog, body)
    await service.check_mcp_urls(body, allow_private=resources.settings.mcp_allow_private)
    agent, first = await service.create(
        session, principal.tenant_id, body, resources.sealer, resources.settings.max_agents
    )
    return service.present(agent, first)


@router.get("")
async def list_agents(
    principal: CallerDep, session: SessionDep, limit: Limit = MAX_LIMIT, cursor: Cursor = None
) -> AgentList:
    """An end user's token sees the agents it may run."""
    rows, next_cursor = await service.list_live(
        session, principal.tenant_id, limit, cursor, principal.agents_granted
    )
    return AgentList(
        data=[service.present(agent, latest) for agent, latest in rows], next_cursor=next_cursor
    )


@router.get("/{agent_id}")
async def get_agent(agent_id: uuid.UUID, principal: CallerDep, session: SessionDep) -> AgentOut:
    agent = await service.get(session, principal.tenant_id, _granted(principal, agent_id))
    return service.present(agent, await service.latest(session, agent))


@router.patch("/{agent_id}")
async def update_agent(
    agent_id: uuid.UUID,
    body: AgentPatch,
    principal: PrincipalDep,
    session: SessionDep,
    resources: ResourcesDep,
) -> AgentOut:
    service.check_model(resources.catalog, body)
    await service.check_mcp_urls(body, allow_private=resources.settings.mcp_allow_private)
    agent, latest = await service.change(
        session,
        principal.tenant_id,
        agent_id,
        body,
        resources.sealer,
        resources.settings.max_agent_versions,
    )
    return service.present(agent, latest)


@router.delete("/{agent_id}", status_code=204)
async def delete_agent(
    agent_id: uuid.UUID, principal: PrincipalDep, session: SessionDep
) -> Response:
    await service.delete(session, principal.tenant_id, agent_id)
    return Response(status_code=204)


@router.get("/{agent_id}/versions")
async def list_versions(
    agent_id: uuid.UUID,
    principal: CallerDep,
    session: SessionDep,
    limit: Limit = MAX_LIMIT,
    cursor: Cursor = None,
) -> AgentVersionList:
    found, next_cursor = await service.versions(
        session, principal.tenant_id, _granted(principal, agent_id), limit, cursor
    )
    return AgentVersionList(
        data=[service.present_version(v) for v in found], next_cursor=next_cursor
    )


@router.get("/{agent_id}/versions/{number}")
async def get_version(
    agent_id: uuid.UUID, number: VersionNumber, principal: CallerDep, session: SessionDep
) -> AgentVersionOut:
    found = await service.version(
        session, principal.tenant_id, _granted(principal, agent_id), number
    )
    return service.present_version(found)


@router.post("/{agent_id}/mcp-servers/{server_name}/test")
async def test_mcp_server(
    agent_id: uuid.UUID,
    server_name: Annotated[str, Path(max_length=64)],
    principal: PrincipalDep,
    session: SessionDep,
    resources: ResourcesDep,
) -> McpProbeOut:
    """Connects to one of the latest version's MCP servers as a run would (the outbound
    rules, caps and timeouts, its headers) and says what it lists, or why it lists nothing."""
    # Another tenant's agent (or a deleted one) is no agent: 404, as everywhere.
    await service.get(session, principal.tenant_id, agent_id)
    agent = await service.resolve(session, principal.tenant_id, agent_id, None)
    found = await probe_mcp_server(resources.settings, resources.sealer, agent, server_name)
    if found is None:
        raise ProblemError(404, "not_found", f"the agent has no MCP server {server_name!r}")
    allowed = next(s for s in agent.definition.mcp_servers if s.name == server_name).allowed_tools
    return McpProbeOut(
        server=server_name,
        available=found.unavailable is None,
        reason=found.unavailable,
        tools=[
            McpToolOut(
                name=tool.name,
                description=tool.description,
                offered=allowed is None or tool.name in allowed,
            )
            for tool in found.tools
        ],
    )
