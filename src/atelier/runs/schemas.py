from __future__ import annotations

import json
import uuid
from datetime import datetime
from decimal import Decimal
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_serializer, field_validator

from atelier.agents.schemas import BUILT_IN_TOOLS
from atelier.conversations.schemas import NO_NUL, ModelId
from atelier.llm.base import ToolSpec
from atelier.runs.events import RunError, RunStatus
from atelier.runs.models import Run
from atelier.usage.money import money_str

MAX_INPUT_CHARS = 100_000
MAX_CLIENT_TOOLS = 64
MAX_PARAMETERS_BYTES = 16_384
CLIENT_TOOL_NAME = r"^[A-Za-z0-9_-]{1,64}$"


class ClientTool(BaseModel):
    """A tool the caller runs: the model may call it; the run then waits for its result."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=CLIENT_TOOL_NAME)
    description: str | None = Field(default=None, max_length=4000, pattern=NO_NUL)
    parameters: dict[str, Any] = Field(default_factory=lambda: {"type": "object"})

    @field_validator("name")
    @classmethod
    def _not_taken(cls, name: str) -> str:
        # MCP tools reach the model as <server>__<tool>; the built-in tools by their names.
        if name in BUILT_IN_TOOLS or "__" in name:
            raise ValueError(f"{name!r} is a built-in tool's name or an MCP tool's form")
        return name

    @field_validator("parameters")
    @classmethod
    def _schema(cls, parameters: dict[str, Any]) -> dict[str, Any]:
        if parameters.get("type", "object") != "object":
            raise ValueError("parameters is the JSON Schema of an object")
        if len(json.dumps(parameters)) > MAX_PARAMETERS_BYTES:
            raise ValueError(f"parameters is at most {MAX_PARAMETERS_BYTES} bytes of JSON")
        return parameters

    def spec(self) -> ToolSpec:
        return ToolSpec(self.name, self.description or "", self.parameters)


def client_tool_specs(tools: list[ClientTool]) -> tuple[ToolSpec, ...]:
    if len({tool.name for tool in tools}) != len(tools):
        raise ValueError("client tools' names must be distinct")
    return tuple(tool.spec() for tool in tools)


class RunIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    input: str = Field(min_length=1, max_length=MAX_INPUT_CHARS, pattern=NO_NUL)
    model_id: str | None = ModelId
    # When a run is active: refuse (409), queue this one behind it, cancel it (its partial
    # work kept) and start this one next, or cancel it and undo its messages and files.
    multitask_strategy: Literal["reject", "enqueue", "interrupt", "rollback"] = "reject"
    client_tools: list[ClientTool] = Field(default_factory=list, max_length=MAX_CLIENT_TOOLS)

    @field_validator("client_tools")
    @classmethod
    def _distinct(cls, tools: list[ClientTool]) -> list[ClientTool]:
        client_tool_specs(tools)
        return tools


class ClientToolResult(BaseModel):
    model_config = ConfigDict(extra="forbid")

    call_id: str = Field(min_length=1, max_length=128)
    output: str | dict[str, Any] | list[Any] | int | float | bool | None
    is_error: bool = False

    def text(self) -> str:
        """The output as the model is given it: a string as it is, anything else as JSON."""
        return self.output if isinstance(self.output, str) else json.dumps(self.output)


class ToolResultsIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    results: list[ClientToolResult] = Field(min_length=1, max_length=MAX_CLIENT_TOOLS)

    @field_validator("results")
    @classmethod
    def _one_each(cls, results: list[ClientToolResult]) -> list[ClientToolResult]:
        if len({result.call_id for result in results}) != len(results):
            raise ValueError("one result per call")
        for result in results:
            if len(result.text()) > MAX_INPUT_CHARS or "\x00" in result.text():
                raise ValueError(f"an output is text of at most {MAX_INPUT_CHARS} characters")
        return results


class RegenerateIn(BaseModel):
    """A new run with the input of an ended one, whose messages become ``superseded``."""

    model_config = ConfigDict(extra="forbid")

    model_id: str | None = ModelId
    multitask_strategy: Literal["reject", "enqueue", "interrupt", "rollback"] = "reject"


class RunOut(BaseModel):
    id: uuid.UUID
    conversation_id: uuid.UUID
    status: RunStatus
    model_id: str
    agent_id: uuid.UUID | None  # the agent version it ran (None: a chat turn)
    agent_version: int | None
    input: str
    input_tokens: int
    output_tokens: int
    cost: Decimal
    error: RunError | None
    created_at: datetime
    started_at: datetime | None
    ended_at: datetime | None

    @field_serializer("cost")
    def _money(self, value: Decimal) -> str:
        return money_str(value)

    @classmethod
    def of(cls, run: Run) -> RunOut:
        return cls(
            id=run.id,
            conversation_id=run.conversation_id,
            status=RunStatus(run.status),
            model_id=run.model_id,
            agent_id=run.agent_id,
            agent_version=run.agent_version,
            input=run.input,
            input_tokens=run.input_tokens,
            output_tokens=run.output_tokens,
            cost=run.cost,
            error=run.error,
            created_at=run.created_at,
            started_at=run.started_at,
            ended_at=run.ended_at,
        )


class RunList(BaseModel):
    data: list[RunOut]


class MessageOut(BaseModel):
    id: uuid.UUID
    seq: int
    role: Literal["user", "assistant", "tool"]
    content: str
    # Tool calls (assistant) and tool results (tool), as the model saw them.
    parts: list[dict[str, Any]] | None
    # True when the run ended (failed, cancelled, timed out) while this reply was streaming.
    incomplete: bool
    # A later run answered the same input again (regenerate): kept, but not in the history.
    superseded: bool = False
    # Why the model stopped: "max_tokens" means the output limit cut the reply short.
    stop_reason: str | None = None
    run_id: uuid.UUID | None
    created_at: datetime


class MessageList(BaseModel):
    data: list[MessageOut]


class DecisionIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    decision: Literal["approve", "deny"]
    reason: str | None = Field(default=None, max_length=2000, pattern=NO_NUL)


class Step(BaseModel):
    """One thing a run did, from what is stored: a model call, a tool call, or a call that
    waited for a person's decision (approval) or its caller's result (client_tool)."""

    type: Literal["model_call", "tool_call", "approval", "client_tool"]
    event_id: int | None  # the id of the run event that announced it (orders the steps)
    # model_call
    model_id: str | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    cache_read_tokens: int | None = None
    cache_write_tokens: int | None = None
    cost: Decimal | None = None
    estimated: bool | None = None
    started_at: datetime | None = None
    time_to_first_token_ms: int | None = None
    text: str | None = None  # its reply (cut at TIMELINE_TEXT_CHARS)
    stop_reason: str | None = None
    incomplete: bool | None = None
    # tool_call, approval, client_tool
    call_id: str | None = None
    name: str | None = None
    arguments: dict[str, Any] | None = None
    output: str | None = None  # the tool's result (cut at TIMELINE_TEXT_CHARS)
    is_error: bool | None = None
    # approval, client_tool: pending, approved or denied; by whom, when, why
    decision: Literal["pending", "approved", "denied"] | None = None
    decided_by: str | None = None
    decided_at: datetime | None = None
    reason: str | None = None
    # every step: when it ended, how long it took
    ended_at: datetime | None = None
    duration_ms: int | None = None

    @field_serializer("cost")
    def _money(self, value: Decimal | None) -> str | None:
        return None if value is None else money_str(value)


class FileChanged(BaseModel):
    path: str
    change: Literal["created", "modified"]  # what the run found: no file, or one it changed


class Timeline(BaseModel):
    run: RunOut
    steps: list[Step]
    files: list[FileChanged]
