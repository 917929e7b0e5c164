"""Request bodies of the Responses API, as far as Atelier honours them. Sampling hints
(``temperature``, ``top_p``, ``reasoning``, ``max_output_tokens``...) are accepted and
left to the agent's own limits; what would change the contract and cannot be honoured
(tools other than functions, ``store=false``, structured ``text`` formats,
``conversation``) is refused (422), never silently dropped (docs/compat.md). Function
tools are the caller's own: a call to one ends the response with a ``function_call``
item, and the next request's ``function_call_output`` items take the run on."""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from atelier.conversations.schemas import NO_NUL
from atelier.runs.schemas import (
    CLIENT_TOOL_NAME,
    MAX_CLIENT_TOOLS,
    MAX_INPUT_CHARS,
    ClientTool,
    client_tool_specs,
)
from atelier.tenants.principal import USER_ID_PATTERN


class InputText(BaseModel):
    model_config = ConfigDict(extra="ignore")

    type: Literal["input_text", "text", "output_text"]
    text: str = Field(max_length=MAX_INPUT_CHARS, pattern=NO_NUL)


class MessageItem(BaseModel):
    model_config = ConfigDict(extra="ignore")

    type: Literal["message"] = "message"
    role: Literal["user", "system", "developer", "assistant"]
    content: str | Annotated[list[InputText], Field(max_length=100)]

    @field_validator("content")
    @classmethod
    def _fits(cls, value: str | list[InputText]) -> str | list[InputText]:
        text = value if isinstance(value, str) else "".join(part.text for part in value)
        if len(text) > MAX_INPUT_CHARS or "\x00" in text:
            raise ValueError(f"a message is text of at most {MAX_INPUT_CHARS} characters, no NUL")
        return value

    @property
    def text(self) -> str:
        if isinstance(self.content, str):
            return self.content
        return "".join(part.text for part in self.content)


class ApprovalResponse(BaseModel):
    model_config = ConfigDict(extra="ignore")

    type: Literal["mcp_approval_response"]
    approval_request_id: str = Field(min_length=6, max_length=140, pattern=NO_NUL)
    approve: bool
    reason: str | None = Field(default=None, max_length=2000, pattern=NO_NUL)


class FunctionCallOutput(BaseModel):
    model_config = ConfigDict(extra="ignore")

    type: Literal["function_call_output"]
    call_id: str = Field(min_length=1, max_length=128, pattern=NO_NUL)
    output: str | list[InputText] = Field(max_length=100)

    @property
    def text(self) -> str:
        if isinstance(self.output, str):
            return self.output
        return "".join(part.text for part in self.output)


class FunctionCallItem(BaseModel):
    """A function call of an earlier turn, as a client that keeps the history sends it."""

    model_config = ConfigDict(extra="ignore")

    type: Literal["function_call"]
    call_id: str = Field(min_length=1, max_length=128, pattern=NO_NUL)
    name: str = Field(max_length=128, pattern=NO_NUL)
    arguments: str = Field(max_length=MAX_INPUT_CHARS, pattern=NO_NUL)

    @property
    def input(self) -> dict[str, Any]:
        try:
            value = json.loads(self.arguments or "{}")
        except ValueError:
            return {}
        return value if isinstance(value, dict) else {}


class ServerItem(BaseModel):
    """An item of an earlier output that the server made and ran (an MCP call, its tool
    list, an approval request, reasoning): history a client resends, with nothing for the
    run to do."""

    model_config = ConfigDict(extra="ignore")

    type: Literal["mcp_call", "mcp_list_tools", "mcp_approval_request", "reasoning"]


InputItem = ApprovalResponse | FunctionCallOutput | FunctionCallItem | ServerItem | MessageItem


class FunctionTool(BaseModel):
    """A tool the caller runs (``{"type": "function", "name", "description",
    "parameters", "strict"}``)."""

    model_config = ConfigDict(extra="ignore")

    type: Literal["function"]
    name: str = Field(pattern=CLIENT_TOOL_NAME)
    description: str | None = Field(default=None, max_length=4000, pattern=NO_NUL)
    parameters: dict[str, Any] | None = None

    def client_tool(self) -> ClientTool:
        return ClientTool(
            name=self.name,
            description=self.description,
            parameters=self.parameters or {"type": "object", "properties": {}},
        )


class ResponseCreate(BaseModel):
    model_config = ConfigDict(extra="ignore")

    model: str = Field(min_length=1, max_length=128, pattern=NO_NUL)
    input: str | Annotated[list[InputItem], Field(max_length=100)]
    instructions: str | None = Field(default=None, max_length=100_000, pattern=NO_NUL)
    previous_response_id: str | None = Field(default=None, max_length=64, pattern=NO_NUL)
    stream: bool = False
    background: bool = False
    metadata: (
        dict[Annotated[str, Field(max_length=64)], Annotated[str, Field(max_length=512)]] | None
    ) = Field(default=None, max_length=16)
    # The same rule as X-User-ID's: every user is reachable from every API.
    user: str | None = Field(default=None, pattern=USER_ID_PATTERN)
    store: Literal[True] = True  # every response is kept (it is a run)
    # Beside the agent's own tools: functions the caller runs.
    tools: list[FunctionTool] = Field(default_factory=list, max_length=MAX_CLIENT_TOOLS)
    conversation: None = None
    text: dict[str, Any] | None = None

    @field_validator("input")
    @classmethod
    def _text_fits(cls, value: str | list[Any]) -> str | list[Any]:
        if isinstance(value, str) and (len(value) > MAX_INPUT_CHARS or "\x00" in value):
            raise ValueError(f"input is text of at most {MAX_INPUT_CHARS} characters, no NUL")
        return value

    @field_validator("tools")
    @classmethod
    def _client_tools(cls, tools: list[FunctionTool]) -> list[FunctionTool]:
        client_tool_specs([tool.client_tool() for tool in tools])  # distinct, and allowed
        return tools

    @field_validator("text")
    @classmethod
    def _plain_text(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        kind = ((value or {}).get("format") or {}).get("type", "text")
        if kind != "text":
            raise ValueError("only text output is supported (no structured formats)")
        return value
