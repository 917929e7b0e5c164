"""What a run may call, put together from its sources (the workspace's tools, as the
agent version enables them, and its MCP servers' tools)."""

from __future__ import annotations

from atelier.llm.base import ToolCall, ToolResult
from atelier.runs.tools import Tools


class EnabledTools:
    """Only the tools an agent version enables: the model is offered no other, and a call
    to another (a model may still name one) is an error result."""

    def __init__(self, tools: Tools, names: frozenset[str]) -> None:
        self.tools = tools
        self.names = names
        self.specs = [spec for spec in tools.specs if spec.name in names]

    async def call(self, call: ToolCall) -> ToolResult:
        if call.name not in self.names:
            return ToolResult(call.id, f"tool {call.name!r} is not enabled", is_error=True)
        return await self.tools.call(call)


def enabled(tools: Tools, names: frozenset[str] | None) -> Tools:
    return tools if names is None else EnabledTools(tools, names)


class Toolbox:
    """Several tool sources as one: each call goes to the source that offered its name."""

    def __init__(self, sources: list[Tools]) -> None:
        self.specs = [spec for source in sources for spec in source.specs]
        self._sources = {spec.name: source for source in sources for spec in source.specs}

    async def call(self, call: ToolCall) -> ToolResult:
        source = self._sources.get(call.name)
        if source is None:
            return ToolResult(call.id, f"unknown tool {call.name!r}", is_error=True)
        return await source.call(call)
