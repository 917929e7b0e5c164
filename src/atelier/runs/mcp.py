"""Tools from an agent's MCP servers (streamable HTTP), through the official MCP SDK.

A run lists each server's tools when it starts (kept per process for
``ATELIER_MCP_TOOLS_CACHE_SECONDS``); the model sees them as ``<server>__<tool>``. Each
call opens its own session and has ``ATELIER_MCP_CALL_TIMEOUT_SECONDS``. A server that
cannot be reached, hangs, dies or reports an error gives the model an error result, never
a failed run. Connections go to public addresses only (``atelier.http.outbound``), and
what a server sends is counted while it is read: a call's answer past
``ATELIER_MCP_MAX_RESULT_BYTES`` is a tool error, a listing past
``ATELIER_MCP_MAX_LIST_BYTES`` or ``ATELIER_MCP_MAX_TOOLS`` is that server's failure.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import structlog
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import McpError
from mcp.types import CallToolResult

from atelier.agents.schemas import McpServer
from atelier.agents.secrets import Sealer, SecretsUnavailable
from atelier.agents.service import ResolvedAgent
from atelier.http.outbound import ByteCap, ResponseTooLarge, scrubbed, tenant_client, within
from atelier.llm.base import ToolCall, ToolResult, ToolSpec
from atelier.settings import Settings

log = structlog.get_logger("atelier.runs")
MODEL_TOOL_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")  # what every provider accepts
MAX_RESULT_CHARS = 100_000
MAX_PAGES = 20


@dataclass(frozen=True)
class ListedTool:
    name: str  # the server's own name for it
    description: str
    parameters: dict[str, Any]


class Unavailable(Exception):
    """An MCP server offers no tools to this run: why, in words a person can act on."""


class ToolListCache:
    """Per process: a server's tool list, for a short while (keyed by everything that may
    change the answer: url, headers, allow-list)."""

    def __init__(self) -> None:
        self._lists: dict[str, tuple[float, list[ListedTool]]] = {}

    def get(self, key: str, now: float) -> list[ListedTool] | None:
        found = self._lists.get(key)
        return found[1] if found is not None and found[0] > now else None

    def put(self, key: str, tools: list[ListedTool], until: float) -> None:
        self._lists[key] = (until, tools)


class McpTools:
    """The tools of an agent's MCP servers, as one tool source of a run."""

    def __init__(
        self,
        settings: Settings,
        servers: dict[str, McpServer],
        headers: dict[str, dict[str, str]],
        tools: dict[str, tuple[str, str]],  # model's name -> (server, tool)
        specs: list[ToolSpec],
        unavailable: dict[str, str] | None = None,
    ) -> None:
        self.settings = settings
        self.unavailable = unavailable or {}  # server -> why it offers no tools
        self.servers = servers
        self.headers = headers
        self.tools = tools
        self.specs = specs

    @classmethod
    async def listed(
        cls,
        settings: Settings,
        servers: list[McpServer],
        headers: dict[str, dict[str, str]],
        cache: ToolListCache,
    ) -> McpTools:
        """Every server's tools; a server that does not answer offers none (logged, and
        kept in ``unavailable`` for the run to say)."""
        lists = await asyncio.gather(
            *(_tools_of(settings, s, headers.get(s.name, {}), cache) for s in servers)
        )
        tools: dict[str, tuple[str, str]] = {}
        specs = []
        unavailable = {s.name: why for s, (_, why) in zip(servers, lists, strict=True) if why}
        for server, (listed, _) in zip(servers, lists, strict=True):
            for tool in listed:
                if server.allowed_tools is not None and tool.name not in server.allowed_tools:
                    continue
                name = f"{server.name}__{tool.name}"
                if not MODEL_TOOL_NAME.fullmatch(name):
                    log.warning(
                        "MCP tool name not usable by models", server=server.name, tool=tool.name
                    )
                    continue
                tools[name] = (server.name, tool.name)
                specs.append(ToolSpec(name, tool.description, tool.parameters))
        return cls(settings, {s.name: s for s in servers}, headers, tools, specs, unavailable)

    @classmethod
    async def of_agent(
        cls, settings: Settings, sealer: Sealer, agent: ResolvedAgent, cache: ToolListCache
    ) -> McpTools:
        """The agent version's MCP tools; servers whose headers cannot be opened offer none."""
        servers = agent.definition.mcp_servers
        sealed_out: dict[str, str] = {}
        try:
            headers = sealer.open(agent.sealed_secrets)
        except SecretsUnavailable:
            log.error("MCP server headers cannot be opened", agent_id=str(agent.agent_id))
            why = "its headers cannot be opened on this server (ATELIER_SECRETS_KEY)"
            sealed_out = {server.name: why for server in servers if server.header_names}
            servers = [server for server in servers if not server.header_names]
            headers = {}
        listed = await cls.listed(settings, servers, headers, cache)
        listed.unavailable = {**sealed_out, **listed.unavailable}
        return listed

    async def call(self, call: ToolCall) -> ToolResult:
        server_name, tool = self.tools[call.name]
        server = self.servers[server_name]
        timeout = self.settings.mcp_call_timeout_seconds
        cap = ByteCap(self.settings.mcp_max_result_bytes, "the tool's answer")
        try:
            async with asyncio.timeout(timeout):
                async with _session(
                    self.settings, server, self.headers.get(server_name, {}), cap
                ) as session:
                    result = await within(cap, session.call_tool(tool, call.arguments))
        except TimeoutError:
            reason = f"no answer within {timeout:g} s"
        except Exception as exc:  # whatever the server did, the model hears it
            reason = _reason(exc, server.url)
        else:
            return ToolResult(call.id, _text(result), is_error=bool(result.isError))
        log.warning("MCP tool call failed", server=server_name, tool=tool, reason=reason)
        return ToolResult(call.id, f"the MCP server {server_name} failed: {reason}", is_error=True)


@dataclass(frozen=True)
class Probe:
    """What an MCP server answered when asked for its tools, now (no cache)."""

    tools: list[ListedTool]
    unavailable: str | None  # why it offers none


async def probe(
    settings: Settings, sealer: Sealer, agent: ResolvedAgent, server_name: str
) -> Probe | None:
    """Connect to one of the agent version's MCP servers as a run would (the same SSRF
    rules, caps and timeouts, its sealed headers) and list its tools; None: no such server."""
    server = next((s for s in agent.definition.mcp_servers if s.name == server_name), None)
    if server is None:
        return None
    try:
        headers = sealer.open(agent.sealed_secrets).get(server.name, {})
    except SecretsUnavailable:
        return Probe([], "its headers cannot be opened on this server (ATELIER_SECRETS_KEY)")
    listed, why = await _tools_of(settings, server, headers, ToolListCache())
    return Probe(listed, why)


async def _tools_of(
    settings: Settings, server: McpServer, headers: dict[str, str], cache: ToolListCache
) -> tuple[list[ListedTool], str | None]:
    """The server's tools, or none and why."""
    loop = asyncio.get_running_loop()
    key = _cache_key(server, headers)
    if (cached := cache.get(key, loop.time())) is not None:
        return cached, None
    cap = ByteCap(settings.mcp_max_list_bytes, "its tool listing")
    try:
        async with asyncio.timeout(settings.mcp_list_timeout_seconds):
            async with _session(settings, server, headers, cap) as session:
                listed: list[ListedTool] = []
                cursor = None
                for _ in range(MAX_PAGES):
                    page = await within(cap, session.list_tools(cursor))
                    listed += [
                        ListedTool(t.name, t.description or "", dict(t.inputSchema))
                        for t in page.tools
                    ]
                    if len(listed) > settings.mcp_max_tools:
                        raise Unavailable(f"it lists over {settings.mcp_max_tools} tools")
                    if not (cursor := page.nextCursor):
                        break
    except Exception as exc:  # an unavailable server offers no tools
        reason = "no answer in time" if isinstance(exc, TimeoutError) else _reason(exc, server.url)
        log.warning(
            "MCP server unavailable; its tools are not offered", server=server.name, reason=reason
        )
        return [], reason
    cache.put(key, listed, loop.time() + settings.mcp_tools_cache_seconds)
    return listed, None


@asynccontextmanager
async def _session(
    settings: Settings, server: McpServer, headers: dict[str, str], cap: ByteCap
) -> AsyncIterator[ClientSession]:
    client = tenant_client(
        allow_private=settings.mcp_allow_private,
        timeout=settings.mcp_call_timeout_seconds,
        headers=headers,
        cap=cap,
    )
    async with (
        client,
        streamable_http_client(server.url, http_client=client) as (read, write, _),
        ClientSession(read, write) as session,
    ):
        await within(cap, session.initialize())
        yield session


def _reason(exc: BaseException, url: str) -> str:
    """The first real failure inside the task groups the SDK raises from, as the model, the
    client and the log may see it (the URL's query redacted)."""
    return scrubbed(_first_failure(exc), url)


def _first_failure(exc: BaseException) -> str:
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    if isinstance(exc, McpError):
        return exc.error.message
    if isinstance(exc, Unavailable | ResponseTooLarge):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"[:500]


def _text(result: CallToolResult) -> str:
    parts = []
    for item in result.content:
        if item.type == "text":
            parts.append(item.text)
        else:
            parts.append(json.dumps(item.model_dump(mode="json", exclude={"data", "blob"})))
    if not parts and result.structuredContent is not None:
        parts.append(json.dumps(result.structuredContent))
    text = "\n".join(parts)
    if len(text) > MAX_RESULT_CHARS:
        text = text[:MAX_RESULT_CHARS] + f"\n[truncated to {MAX_RESULT_CHARS} characters]"
    return text


def _cache_key(server: McpServer, headers: dict[str, str]) -> str:
    seen = json.dumps([server.url, sorted(headers.items())])
    return hashlib.sha256(seen.encode()).hexdigest()
