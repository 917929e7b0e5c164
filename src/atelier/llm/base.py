"""The LLM port: one streamed model call with tools.

A provider turns ``(messages, tools)`` into a stream of ``TextDelta``, ``ToolCall``,
``UsageReport`` and a final ``Stop``. Closing the stream (or cancelling its task)
closes the provider connection.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace
from typing import Any, Literal, Protocol

Role = Literal["user", "assistant", "tool"]


@dataclass(frozen=True)
class ToolSpec:
    name: str
    description: str
    parameters: dict[str, Any]  # JSON Schema of the arguments

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "description": self.description, "parameters": self.parameters}

    @classmethod
    def of(cls, stored: dict[str, Any]) -> ToolSpec:
        return cls(stored["name"], stored.get("description") or "", stored["parameters"])


@dataclass(frozen=True)
class ToolCall:
    id: str
    name: str
    arguments: dict[str, Any]


@dataclass(frozen=True)
class ToolResult:
    call_id: str
    content: str
    is_error: bool = False
    duration_ms: int | None = None  # how long the tool took (kept for the run's timeline)
    decision: str | None = None  # "approved" or "denied": a person's word on the call


@dataclass(frozen=True)
class ChatMessage:
    role: Role
    content: str = ""
    tool_calls: tuple[ToolCall, ...] = ()
    tool_results: tuple[ToolResult, ...] = ()


@dataclass(frozen=True)
class TextDelta:
    text: str


@dataclass(frozen=True)
class UsageReport:
    """Token counts as the provider reported them; None means it did not say.

    ``input_tokens`` are those billed at the input price: tokens read from or written to
    the prompt cache are counted apart, never twice. A provider yields a report whenever
    its counts change, each one the whole count so far: the last one is the call's.
    """

    input_tokens: int | None = None
    output_tokens: int | None = None
    cache_read_tokens: int | None = None
    cache_write_tokens: int | None = None

    def merged(self, **counts: int | None) -> UsageReport:
        """These counts over this report's: the latest value the provider gave wins, and a
        count it left out (or sent as null) keeps the earlier one."""
        return replace(self, **{k: v for k, v in counts.items() if isinstance(v, int)})

    @property
    def context_tokens(self) -> int:
        """Tokens of the prompt, however they were billed."""
        return sum(
            n or 0 for n in (self.input_tokens, self.cache_read_tokens, self.cache_write_tokens)
        )


@dataclass(frozen=True)
class Stop:
    reason: Literal["end_turn", "tool_use", "max_tokens", "stop_sequence", "other"]


StreamEvent = TextDelta | ToolCall | UsageReport | Stop


class ModelError(Exception):
    """The provider failed (refused, unreachable, reported an error, or its stream ended
    without the protocol's end marker)."""


@dataclass(frozen=True)
class ModelRequest:
    model: str  # the provider's model id
    messages: list[ChatMessage]
    system: str = ""
    tools: list[ToolSpec] = field(default_factory=list)
    max_tokens: int = 4096


class ChatModel(Protocol):
    provider: str

    def stream(self, request: ModelRequest) -> AsyncIterator[StreamEvent]: ...
