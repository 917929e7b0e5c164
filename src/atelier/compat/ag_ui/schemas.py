"""AG-UI's ``RunAgentInput``, as much of it as Atelier reads (the rest is allowed and left)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from atelier.compat.ai_sdk.schemas import CHAT_ID


class Message(BaseModel):
    model_config = ConfigDict(extra="allow")

    id: str = Field(default="", max_length=256)
    role: str = Field(max_length=32)
    content: Any = None
    toolCallId: str | None = Field(default=None, max_length=256)
    toolCalls: list[dict[str, Any]] | None = Field(default=None, max_length=1000)
    error: str | None = Field(default=None, max_length=100_000)  # a tool message's failure

    def text(self) -> str:
        if isinstance(self.content, str):
            return self.content
        if isinstance(self.content, list):
            return "".join(
                part.get("text", "")
                for part in self.content
                if isinstance(part, dict) and part.get("type") == "text"
            )
        return ""


class Tool(BaseModel):
    model_config = ConfigDict(extra="allow")

    name: str = Field(max_length=64)
    description: str = Field(default="", max_length=4000)
    parameters: dict[str, Any] = Field(default_factory=lambda: {"type": "object"})


class ResumeEntry(BaseModel):
    model_config = ConfigDict(extra="allow")

    interruptId: str = Field(max_length=256)
    status: Literal["resolved", "cancelled"]
    payload: Any = None


class Context(BaseModel):
    model_config = ConfigDict(extra="allow")

    description: str = Field(default="", max_length=4000)
    value: str = Field(default="", max_length=100_000)


class RunAgentInput(BaseModel):
    model_config = ConfigDict(extra="allow")

    threadId: str = Field(pattern=CHAT_ID)
    runId: str = Field(min_length=1, max_length=256)
    messages: list[Message] = Field(default_factory=list, max_length=10_000)
    tools: list[Tool] = Field(default_factory=list, max_length=64)
    context: list[Context] = Field(default_factory=list, max_length=100)
    state: Any = None
    forwardedProps: Any = None
    resume: list[ResumeEntry] | None = Field(default=None, max_length=64)
