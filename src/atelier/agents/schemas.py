"""An agent's definition as clients write it, and as it is shown."""

from __future__ import annotations

import fnmatch
import json
import re
import uuid
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from atelier.conversations.schemas import MAX_METADATA_BYTES, NO_NUL, ModelId
from atelier.http.outbound import http_url
from atelier.workspace.tool_specs import SPECS

BUILT_IN_TOOLS = tuple(spec.name for spec in SPECS)
NAME = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
SERVER_NAME = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,31}$"
TOOL_NAME = r"^[A-Za-z0-9_.-]{1,128}$"
GLOB = r"^(?:[A-Za-z0-9_.*?-]|\[!?[A-Za-z0-9_.-]+\])+$"
DEFAULT_AGENT = "default"


class AgentLimits(BaseModel):
    """Per run; each is capped by the server's own limit."""

    model_config = ConfigDict(extra="forbid")

    max_steps: int | None = Field(default=None, ge=1, le=10_000)
    deadline_seconds: float | None = Field(default=None, gt=0, le=7 * 86_400)
    max_output_tokens: int | None = Field(default=None, ge=1, le=100_000_000)


class McpServer(BaseModel):
    """An MCP server (streamable HTTP) whose tools reach the model as ``<name>__<tool>``;
    as stored and shown: its headers' names only (their values are write-only)."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=SERVER_NAME)
    url: str = Field(max_length=2048)
    allowed_tools: list[str] | None = Field(default=None, max_length=256)  # None: all
    header_names: list[str] = Field(default_factory=list)

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        return http_url(value, "an MCP server's url")

    @field_validator("allowed_tools")
    @classmethod
    def _tool_names(cls, value: list[str] | None) -> list[str] | None:
        if value is not None and not all(re.fullmatch(TOOL_NAME, name) for name in value):
            raise ValueError(f"tool names match {TOOL_NAME}")
        return value


class McpServerIn(McpServer):
    """As written: ``headers`` (a bearer token, say) are sealed at rest, never returned.
    Left out on a change, the previous version's headers for the same name and url stay."""

    header_names: list[str] = Field(default_factory=list, exclude=True)
    headers: dict[str, str] | None = Field(default=None, max_length=20)

    @field_validator("headers")
    @classmethod
    def _header_values(cls, value: dict[str, str] | None) -> dict[str, str] | None:
        for name, text in (value or {}).items():
            if not re.fullmatch(r"[!#$%&'*+.^_`|~0-9A-Za-z-]{1,100}", name):
                raise ValueError(f"{name!r} is not a header name")
            if len(text) > 8192 or any(c in text for c in "\r\n\x00"):
                raise ValueError(f"the value of {name} is not a valid header value")
        return value


class Approval(BaseModel):
    """Which tool calls wait for a person: glob patterns of tool names (``*``, ``?``,
    ``[abc]``), e.g. ``write_file`` or ``crm__*``."""

    model_config = ConfigDict(extra="forbid")

    require: list[str] = Field(default_factory=list, max_length=100)

    @field_validator("require")
    @classmethod
    def _globs(cls, value: list[str]) -> list[str]:
        for pattern in value:
            if not re.fullmatch(GLOB, pattern) or pattern.count("[") != pattern.count("]"):
                raise ValueError(f"{pattern!r} is not a glob of tool names")
        return value

    def needs(self, tool: str) -> bool:
        return any(fnmatch.fnmatchcase(tool, pattern) for pattern in self.require)


class AgentDefinition(BaseModel):
    """What one version of an agent does (immutable once saved)."""

    model_config = ConfigDict(extra="forbid")

    instructions: str | None = Field(default=None, max_length=100_000, pattern=NO_NUL)
    model_id: str | None = ModelId  # None: the conversation's model, else the default
    tools: list[str] | None = Field(default=None, max_length=len(BUILT_IN_TOOLS))  # None: all
    mcp_servers: list[McpServer] = Field(default_factory=list, max_length=10)
    approval: Approval = Field(default_factory=Approval)
    limits: AgentLimits = Field(default_factory=AgentLimits)
    metadata: dict[str, Any] = Field(default_factory=dict)

    @field_validator("mcp_servers")
    @classmethod
    def _distinct_servers(cls, value: list[McpServer]) -> list[McpServer]:
        names = [server.name for server in value]
        if len(names) != len(set(names)):
            raise ValueError("MCP server names must be distinct")
        return value

    @field_validator("tools")
    @classmethod
    def _known_tools(cls, value: list[str] | None) -> list[str] | None:
        if value is None:
            return None
        unknown = [name for name in value if name not in BUILT_IN_TOOLS]
        if unknown:
            raise ValueError(f"unknown tools {unknown}; built-in tools: {list(BUILT_IN_TOOLS)}")
        return list(dict.fromkeys(value))

    @field_validator("metadata")
    @classmethod
    def _bounded_metadata(cls, value: dict[str, Any]) -> dict[str, Any]:
        if len(json.dumps(value)) > MAX_METADATA_BYTES:
            raise ValueError(f"metadata is at most {MAX_METADATA_BYTES} bytes of JSON")
        return value


class AgentWrite(AgentDefinition):
    mcp_servers: list[McpServerIn] = Field(default_factory=list, max_length=10)  # type: ignore[assignment]


class AgentCreate(AgentWrite):
    name: str = Field(pattern=NAME)


class AgentPatch(AgentWrite):
    """Fields sent replace the latest version's (null unsets); a new version results."""

    name: str | None = Field(default=None, pattern=NAME)


class AgentVersionOut(AgentDefinition):
    agent_id: uuid.UUID
    version: int
    created_at: datetime


class AgentOut(AgentDefinition):
    id: uuid.UUID
    name: str
    version: int  # the latest
    created_at: datetime
    updated_at: datetime


class AgentList(BaseModel):
    data: list[AgentOut]
    next_cursor: str | None = None


class AgentVersionList(BaseModel):
    data: list[AgentVersionOut]
    next_cursor: str | None = None


class McpToolOut(BaseModel):
    name: str
    description: str
    offered: bool  # the server's allowed_tools let the model see it


class McpProbeOut(BaseModel):
    """An MCP server asked for its tools now, as a run would ask."""

    server: str
    available: bool
    reason: str | None  # why it offers no tools
    tools: list[McpToolOut]
