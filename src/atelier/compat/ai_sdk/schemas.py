"""What ``useChat``'s default transport posts: the chat's id, its messages (UIMessage),
the trigger -- and what Atelier takes beside them in the transport's ``body``."""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from atelier.runs.schemas import ClientTool
from atelier.tenants.principal import USER_ID_PATTERN

CHAT_ID = USER_ID_PATTERN  # visible ASCII, 1-128: useChat's ids, UUIDs, a product's own


class UIMessage(BaseModel):
    model_config = ConfigDict(extra="allow")

    id: str = Field(default="", max_length=256)
    role: Literal["system", "user", "assistant"]
    parts: list[dict[str, Any]] = Field(default_factory=list, max_length=1000)

    def text(self) -> str:
        return "".join(
            part["text"]
            for part in self.parts
            if part.get("type") == "text" and isinstance(part.get("text"), str)
        )

    def texts(self) -> list[str]:
        """Its text parts one by one (an assistant's are split where it called tools)."""
        return [
            part["text"]
            for part in self.parts
            if part.get("type") == "text" and isinstance(part.get("text"), str) and part["text"]
        ]

    def tool_parts(self) -> list[dict[str, Any]]:
        return [
            part
            for part in self.parts
            if isinstance(part.get("type"), str)
            and (part["type"].startswith("tool-") or part["type"] == "dynamic-tool")
            and isinstance(part.get("toolCallId"), str)
        ]


class ChatRequest(BaseModel):
    model_config = ConfigDict(extra="allow")  # a transport's own body fields are its own

    id: str = Field(pattern=CHAT_ID)
    messages: list[UIMessage] = Field(min_length=1, max_length=10_000)
    trigger: Literal["submit-message", "regenerate-message"] = "submit-message"
    messageId: str | None = Field(default=None, max_length=256)
    agent: str | None = Field(default=None, max_length=100)
    model: str | None = Field(default=None, max_length=200)
    client_tools: list[ClientTool] = Field(default_factory=list, max_length=64)


def output_text(output: Any) -> str:
    """A client tool's output as the model is given it: a string as it is, else JSON."""
    return output if isinstance(output, str) else json.dumps(output, ensure_ascii=False)
