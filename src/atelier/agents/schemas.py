"""An agent's definition as clients write it, and as it is shown."""

from __future__ import annotations

import json
import uuid
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from atelier.conversations.schemas import MAX_METADATA_BYTES, NO_NUL, ModelId
from atelier.runs.tools import SPECS

BUILT_IN_TOOLS = tuple(spec.name for spec in SPECS)
NAME = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
DEFAULT_AGENT = "default"


class AgentLimits(BaseModel):
    """Per run; each is capped by the server's own limit."""

    model_config = ConfigDict(extra="forbid")

    max_steps: int | None = Field(default=None, ge=1, le=10_000)
    deadline_seconds: float | None = Field(default=None, gt=0, le=7 * 86_400)
    max_output_tokens: int | None = Field(default=None, ge=1, le=100_000_000)


class AgentDefinition(BaseModel):
    """What one version of an agent does (immutable once saved)."""

    model_config = ConfigDict(extra="forbid")

    instructions: str | None = Field(default=None, max_length=100_000, pattern=NO_NUL)
    model_id: str | None = ModelId  # None: the conversation's model, else the default
    tools: list[str] | None = Field(default=None, max_length=len(BUILT_IN_TOOLS))  # None: all
    limits: AgentLimits = Field(default_factory=AgentLimits)
    metadata: dict[str, Any] = Field(default_factory=dict)

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


class AgentCreate(AgentDefinition):
    name: str = Field(pattern=NAME)


class AgentPatch(AgentDefinition):
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


class AgentVersionList(BaseModel):
    data: list[AgentVersionOut]
