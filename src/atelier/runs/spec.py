"""What a run does: its instructions, whether it works on a workspace, its tools and limits.

A conversation's run runs a version of one of the tenant's agents (the workspace agent,
as that version defines it); a chat turn is a run of the chat agent -- no tools, one
model call -- on the same engine.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TypeVar

from atelier.agents.schemas import AgentDefinition, Approval
from atelier.llm.base import ToolSpec
from atelier.llm.models import CatalogModel
from atelier.settings import Settings

WORKSPACE_INSTRUCTIONS = (
    "You are an agent working on the files of this conversation's workspace. Use the tools "
    "to list, read, write, edit, delete and search files; paths are relative to the "
    "workspace. Say briefly what you did."
)
CHAT_INSTRUCTIONS = "You are a helpful assistant."
N = TypeVar("N", int, float)
CHAT_MAX_TOKENS = 4096  # per reply, for a model whose catalog entry names no limit


@dataclass(frozen=True)
class AgentSpec:
    instructions: str
    workspace: bool  # the run materialises the workspace and may call the workspace tools
    max_steps: int  # model calls per run
    max_output_tokens: int  # across the run's model calls
    deadline_seconds: float
    tools: frozenset[str] | None = None  # the workspace tools it may call; None: all
    approval: Approval = field(default_factory=Approval)  # calls that wait for a person
    client_tools: tuple[ToolSpec, ...] = ()  # calls that wait for the caller's result

    @property
    def client_tool_names(self) -> frozenset[str]:
        return frozenset(tool.name for tool in self.client_tools)


def workspace_agent(
    settings: Settings,
    agent: AgentDefinition | None = None,
    instructions: str | None = None,
    client_tools: tuple[ToolSpec, ...] = (),
) -> AgentSpec:
    """A run of an agent version: its instructions (or the run's own) and tools, its
    limits capped by the server's."""
    agent = agent or AgentDefinition()
    limits = agent.limits
    return AgentSpec(
        instructions=instructions or agent.instructions or WORKSPACE_INSTRUCTIONS,
        workspace=True,
        max_steps=_capped(limits.max_steps, settings.run_max_steps),
        max_output_tokens=_capped(limits.max_output_tokens, settings.run_max_output_tokens),
        deadline_seconds=_capped(limits.deadline_seconds, settings.run_deadline_seconds),
        tools=frozenset(agent.tools) if agent.tools is not None else None,
        approval=agent.approval,
        client_tools=client_tools,
    )


def _capped(wanted: N | None, server: N) -> N:
    return server if wanted is None else min(wanted, server)


def chat_agent(settings: Settings, model: CatalogModel) -> AgentSpec:
    return AgentSpec(
        instructions=CHAT_INSTRUCTIONS,
        workspace=False,
        max_steps=1,
        max_output_tokens=model.max_output_tokens or CHAT_MAX_TOKENS,
        # One model call: it may take as long as a model call may.
        deadline_seconds=settings.model_timeout_seconds,
    )
