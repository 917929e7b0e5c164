"""Agents and their immutable versions. Functions flush; the caller's unit of work commits."""

from __future__ import annotations

import functools
import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Select, bindparam, insert, select, tuple_, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from atelier.agents.models import Agent, AgentVersion
from atelier.agents.schemas import (
    DEFAULT_AGENT,
    AgentCreate,
    AgentDefinition,
    AgentOut,
    AgentPatch,
    AgentVersionOut,
    AgentWrite,
    McpServer,
    McpServerIn,
)
from atelier.agents.secrets import Sealer, SecretsUnavailable
from atelier.db import limits, paging
from atelier.db.base import utcnow
from atelier.errors import Conflict, DomainError, Invalid, NotFound, Refused, Unavailable
from atelier.http.outbound import UrlNotAllowed, check_public, redacted, unredacted
from atelier.llm.catalog import ModelCatalog

NOT_FOUND = NotFound("not_found", "no such agent")
DEFAULT_MAX_AGENTS = 500  # the settings' defaults, for callers without settings
DEFAULT_MAX_AGENT_VERSIONS = 1000


@dataclass(frozen=True)
class ResolvedAgent:
    """The agent version a run runs (agent None: the tenant has no agent rows at all)."""

    agent_id: uuid.UUID | None
    version: int | None
    definition: AgentDefinition
    sealed_secrets: str | None = None  # its MCP servers' headers, opened only by the run


def check_model(catalog: ModelCatalog, definition: AgentDefinition) -> None:
    """A model the catalog does not offer is the field's error, before anything is saved."""
    if definition.model_id is not None and catalog.get(definition.model_id) is None:
        raise Invalid(
            "validation_error",
            "the request is not valid",
            extra={
                "errors": [
                    {
                        "loc": ["body", "model_id"],
                        "msg": f"no enabled model {definition.model_id!r}; see GET /v1/models",
                        "type": "unknown_model",
                    }
                ]
            },
        )


async def check_mcp_urls(body: AgentCreate | AgentPatch, *, allow_private: bool) -> None:
    """Refuse MCP server URLs that resolve to addresses tenants may not reach, when the
    agent is saved (by the webhooks' rules); connecting checks again."""
    for server in body.mcp_servers or ():
        try:
            await check_public(server.url, allow_private=allow_private)
        except UrlNotAllowed as exc:
            raise Refused("mcp_url_not_allowed", f"MCP server {server.name!r}: {exc}") from exc


async def create(
    session: AsyncSession,
    tenant_id: uuid.UUID,
    body: AgentCreate,
    sealer: Sealer,
    limit: int = DEFAULT_MAX_AGENTS,
) -> tuple[Agent, AgentVersion]:
    live = [Agent.tenant_id == tenant_id, Agent.deleted_at.is_(None)]
    await limits.room_for_one(session, Agent, live, limit, "agents", "ATELIER_MAX_AGENTS")
    definition, secrets = _stored(body, sealer)
    if await _live_named(session, tenant_id, body.name) is not None:
        raise _name_taken(body.name)
    now = utcnow()
    agent = Agent(
        tenant_id=tenant_id, name=body.name, latest_version=1, created_at=now, updated_at=now
    )
    session.add(agent)
    try:
        await session.flush()
    except IntegrityError as exc:  # the same name, created a moment ago
        raise _name_taken(body.name) from exc
    first = AgentVersion(
        agent_id=agent.id, version=1, definition=definition, secrets=secrets, created_at=now
    )
    session.add(first)
    await session.flush()
    return agent, first


async def ensure_default(session: AsyncSession, tenant_id: uuid.UUID) -> None:
    """The tenant's ``default`` agent: the built-in workspace agent, every tool, the
    server's limits. Created with the tenant."""
    if await _live_named(session, tenant_id, DEFAULT_AGENT) is None:
        await create(session, tenant_id, AgentCreate(name=DEFAULT_AGENT), Sealer([]))


async def get(session: AsyncSession, tenant_id: uuid.UUID, agent_id: uuid.UUID) -> Agent:
    agent = await session.scalar(
        select(Agent).where(
            Agent.id == agent_id, Agent.tenant_id == tenant_id, Agent.deleted_at.is_(None)
        )
    )
    if agent is None:
        raise NOT_FOUND
    return agent


async def list_live(
    session: AsyncSession,
    tenant_id: uuid.UUID,
    limit: int,
    cursor: str | None,
    only: frozenset[uuid.UUID] | None = None,
) -> tuple[list[tuple[Agent, AgentVersion]], str | None]:
    """A page of the tenant's live agents by name (``only`` those, when given), each with
    its latest version."""
    query = select(Agent).where(Agent.tenant_id == tenant_id, Agent.deleted_at.is_(None))
    if only is not None:
        query = query.where(Agent.id.in_(only))
    agents, next_cursor = await paging.page(
        session,
        query,
        [Agent.name, Agent.id],
        limit,
        cursor,
    )
    latest = (
        {
            (v.agent_id, v.version): v
            for v in await session.scalars(
                select(AgentVersion).where(
                    tuple_(AgentVersion.agent_id, AgentVersion.version).in_(
                        [(a.id, a.latest_version) for a in agents]
                    )
                )
            )
        }
        if agents
        else {}
    )
    return [(a, latest[(a.id, a.latest_version)]) for a in agents], next_cursor


async def find(session: AsyncSession, tenant_id: uuid.UUID, key: str) -> Agent | None:
    """A live agent of the tenant by its id, or by its name (how other APIs name one)."""
    try:
        which = Agent.id == uuid.UUID(key)
    except ValueError:
        which = Agent.name == key
    return await session.scalar(
        select(Agent).where(Agent.tenant_id == tenant_id, Agent.deleted_at.is_(None), which)
    )


async def latest(session: AsyncSession, agent: Agent) -> AgentVersion:
    return await _version(session, agent.id, agent.latest_version)


async def change(
    session: AsyncSession,
    tenant_id: uuid.UUID,
    agent_id: uuid.UUID,
    body: AgentPatch,
    sealer: Sealer,
    max_versions: int = DEFAULT_MAX_AGENT_VERSIONS,
) -> tuple[Agent, AgentVersion]:
    """A new version from the latest one and the fields sent; a rename alone makes none.
    An agent keeps at most ``max_versions`` (its runs name theirs, so none is dropped)."""
    agent = await get(session, tenant_id, agent_id)
    sent = body.model_fields_set
    if "name" in sent and body.name is None:
        raise Invalid("invalid_name", "an agent's name cannot be removed")
    if body.name is not None and body.name != agent.name:
        if agent.name == DEFAULT_AGENT:
            raise Conflict("default_agent", "the default agent keeps its name")
        if await _live_named(session, tenant_id, body.name) is not None:
            raise _name_taken(body.name)
        agent.name = body.name
    fields = sent - {"name"}
    if fields and agent.latest_version >= max_versions:
        setting = "ATELIER_MAX_AGENT_VERSIONS; or create a new agent"
        raise limits.reached("agent_versions", max_versions, setting)
    if fields:
        previous = await latest(session, agent)
        write = AgentWrite.model_validate({**previous.definition, "mcp_servers": []}).model_copy(
            update={name: getattr(body, name) for name in fields}
        )
        if "mcp_servers" not in fields:  # kept as they were, headers and all
            write = write.model_copy(update={"mcp_servers": _as_written(previous)})
        definition, secrets = _stored(write, sealer, previous)
        # A new version number, taken in SQL: two concurrent changes never share one.
        number = await session.scalar(
            update(Agent)
            .where(Agent.id == agent.id)
            .values(latest_version=Agent.latest_version + 1, updated_at=utcnow())
            .returning(Agent.latest_version)
        )
        assert number is not None
        await session.execute(
            insert(AgentVersion).values(
                agent_id=agent.id,
                version=number,
                definition=definition,
                secrets=secrets,
                created_at=utcnow(),
            )
        )
        await session.refresh(agent)
    agent.updated_at = utcnow()
    try:
        await session.flush()
    except IntegrityError as exc:
        raise _name_taken(str(body.name)) from exc
    return agent, await latest(session, agent)


async def delete(session: AsyncSession, tenant_id: uuid.UUID, agent_id: uuid.UUID) -> None:
    """Gone for new use; its versions stay for the conversations that pinned one."""
    agent = await get(session, tenant_id, agent_id)
    if agent.name == DEFAULT_AGENT:
        raise Conflict("default_agent", "the default agent cannot be deleted")
    agent.deleted_at = utcnow()
    await session.flush()


async def versions(
    session: AsyncSession, tenant_id: uuid.UUID, agent_id: uuid.UUID, limit: int, cursor: str | None
) -> tuple[list[AgentVersion], str | None]:
    """A page of the agent's versions, oldest first."""
    agent = await get(session, tenant_id, agent_id)
    query = select(AgentVersion).where(AgentVersion.agent_id == agent.id)
    return await paging.page(session, query, [AgentVersion.version], limit, cursor)


async def version(
    session: AsyncSession, tenant_id: uuid.UUID, agent_id: uuid.UUID, number: int
) -> AgentVersion:
    agent = await get(session, tenant_id, agent_id)
    found = await session.get(AgentVersion, (agent.id, number))
    if found is None:
        raise NotFound("not_found", f"agent has no version {number}")
    return found


async def check_choice(
    session: AsyncSession, tenant_id: uuid.UUID, agent_id: uuid.UUID | None, number: int | None
) -> None:
    """A conversation may name a live agent of its tenant, and one of its versions."""
    if agent_id is None:
        if number is not None:
            raise _invalid("agent_version", "agent_version needs an agent_id")
        return
    agent = await session.scalar(
        select(Agent).where(
            Agent.id == agent_id, Agent.tenant_id == tenant_id, Agent.deleted_at.is_(None)
        )
    )
    if agent is None:
        raise _invalid("agent_id", "no such agent")
    if number is not None and number > agent.latest_version:
        raise _invalid("agent_version", f"the agent has no version {number}")


async def resolve(
    session: AsyncSession, tenant_id: uuid.UUID, agent_id: uuid.UUID | None, pinned: int | None
) -> ResolvedAgent:
    """The version a conversation's next run uses: the pinned one, else the latest; the
    tenant's default agent when it names none. A deleted agent's latest is refused.
    One statement: it is on the way to a run's first token."""
    row = (
        await session.execute(
            _resolving(agent_id is None, pinned is None),
            {"tenant_id": tenant_id, "agent_id": agent_id, "version": pinned},
        )
    ).first()
    if row is None and agent_id is None:  # a tenant made before agents, never migrated
        return ResolvedAgent(None, None, AgentDefinition())
    if row is None or (row.deleted_at is not None and pinned is None):
        raise Conflict("agent_deleted", "the conversation's agent was deleted; choose another")
    return ResolvedAgent(
        row.agent_id,
        row.version,
        _definition(row.agent_id, row.version, row.definition),
        row.secrets,
    )


@functools.cache
def _resolving(default: bool, latest: bool) -> Select[Any]:
    """``resolve``'s statement, built once per shape (it is on every run's way to its start)."""
    which = (
        (Agent.name == DEFAULT_AGENT) & Agent.deleted_at.is_(None)
        if default
        else Agent.id == bindparam("agent_id")
    )
    number = Agent.latest_version if latest else bindparam("version")
    return (
        select(
            Agent.deleted_at,
            AgentVersion.agent_id,
            AgentVersion.version,
            AgentVersion.definition,
            AgentVersion.secrets,
        )
        .join(AgentVersion, (AgentVersion.agent_id == Agent.id) & (AgentVersion.version == number))
        .where(Agent.tenant_id == bindparam("tenant_id"), which)
    )


_DEFINITIONS: dict[tuple[uuid.UUID, int], AgentDefinition] = {}
_DEFINITIONS_KEPT = 1024


def _definition(agent_id: uuid.UUID, version: int, stored: dict[str, Any]) -> AgentDefinition:
    """A version's definition, validated once: a version never changes once written."""
    key = (agent_id, version)
    found = _DEFINITIONS.get(key)
    if found is None:
        found = AgentDefinition.model_validate(stored)
        if len(_DEFINITIONS) >= _DEFINITIONS_KEPT:
            _DEFINITIONS.pop(next(iter(_DEFINITIONS)))
        _DEFINITIONS[key] = found
    return found


def present(agent: Agent, latest_version: AgentVersion) -> AgentOut:
    return AgentOut(
        id=agent.id,
        name=agent.name,
        version=latest_version.version,
        created_at=agent.created_at,
        updated_at=agent.updated_at,
        **_shown(latest_version.definition),
    )


def present_version(found: AgentVersion) -> AgentVersionOut:
    return AgentVersionOut(
        agent_id=found.agent_id,
        version=found.version,
        created_at=found.created_at,
        **_shown(found.definition),
    )


def _shown(definition: dict[str, Any]) -> dict[str, Any]:
    """A definition as answers show it: its servers' URLs with their queries redacted."""
    servers = [s | {"url": redacted(s["url"])} for s in definition.get("mcp_servers", [])]
    return definition | {"mcp_servers": servers}


def _stored(
    write: AgentWrite, sealer: Sealer, previous: AgentVersion | None = None
) -> tuple[dict[str, Any], str | None]:
    """The definition to keep (headers' names only) and its headers, sealed. A server sent
    without headers keeps those of the previous version's server of the same name and url;
    a URL sent back as it was shown (its query redacted) is the one kept."""
    before = (
        {s["name"]: s["url"] for s in previous.definition.get("mcp_servers", [])}
        if previous
        else {}
    )
    kept = _open_secrets(sealer, previous)
    secrets: dict[str, dict[str, str]] = {}
    servers = []
    for server in write.mcp_servers:
        url = unredacted(server.url, before.get(server.name))
        headers = server.headers
        if headers is None and before.get(server.name) == url:
            headers = kept.get(server.name)
        if headers:
            secrets[server.name] = headers
        servers.append(
            McpServer(
                name=server.name,
                url=url,
                allowed_tools=server.allowed_tools,
                header_names=sorted(headers or {}),
            )
        )
    fields = write.model_dump(include=set(AgentDefinition.model_fields) - {"mcp_servers"})
    definition = AgentDefinition.model_validate({**fields, "mcp_servers": servers})
    try:
        sealed = sealer.seal(secrets) if secrets else None
    except SecretsUnavailable as exc:
        raise Unavailable("secrets_unavailable", str(exc)) from exc
    return definition.model_dump(mode="json"), sealed


def _as_written(version: AgentVersion) -> list[McpServerIn]:
    """A version's servers as a change that leaves them alone would send them."""
    return [
        McpServerIn.model_validate({k: v for k, v in server.items() if k != "header_names"})
        for server in version.definition.get("mcp_servers", [])
    ]


def _open_secrets(sealer: Sealer, version: AgentVersion | None) -> dict[str, dict[str, str]]:
    if version is None or version.secrets is None:
        return {}
    try:
        return sealer.open(version.secrets)
    except SecretsUnavailable as exc:
        raise Unavailable("secrets_unavailable", str(exc)) from exc


async def _live_named(session: AsyncSession, tenant_id: uuid.UUID, name: str) -> Agent | None:
    return await session.scalar(
        select(Agent).where(
            Agent.tenant_id == tenant_id, Agent.name == name, Agent.deleted_at.is_(None)
        )
    )


async def _version(session: AsyncSession, agent_id: uuid.UUID, number: int) -> AgentVersion:
    found = await session.get(AgentVersion, (agent_id, number))
    assert found is not None, "an agent's versions are never removed"
    return found


def _name_taken(name: str) -> DomainError:
    return Conflict("agent_name_taken", f"an agent named {name!r} already exists")


def _invalid(field: str, message: str) -> DomainError:
    return Invalid(
        "validation_error",
        "the request is not valid",
        extra={"errors": [{"loc": ["body", field], "msg": message, "type": "invalid_agent"}]},
    )
