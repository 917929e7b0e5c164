"""What a run is asked to do, and what every run of a process works with."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from atelier.agents.secrets import Sealer
from atelier.conversations.models import Kind
from atelier.coordination.base import Coordination
from atelier.llm.base import ToolSpec
from atelier.llm.catalog import ModelCatalog
from atelier.llm.registry import ModelRegistry
from atelier.llm.titles import TitleGenerator
from atelier.observability.lag import LoopLag
from atelier.runs.heartbeats import Heartbeats
from atelier.runs.log import EventShipper
from atelier.runs.mcp import ToolListCache
from atelier.runs.tools import ToolsFactory
from atelier.settings import Settings
from atelier.supervisor import Supervisor
from atelier.tenants.principal import Principal
from atelier.workspace.base import Storage
from atelier.workspace.cache import WorkspaceCache


def lock_key(conversation_id: uuid.UUID) -> str:
    """The conversation's lock: whoever holds it runs (or deletes) the conversation."""
    return f"conversation:{conversation_id}"


@dataclass(frozen=True)
class RunRequest:
    principal: Principal
    conversation_id: uuid.UUID
    kind: Kind  # a conversation with a workspace, or a chat
    text: str
    model_id: str | None  # the caller's choice; else the conversation's, else the default
    # When the conversation is busy: refuse, queue, or cancel the active run (and undo it).
    strategy: Literal["reject", "enqueue", "interrupt", "rollback"] = "reject"
    queued_run_id: uuid.UUID | None = None  # the queued run this request starts
    supersedes: uuid.UUID | None = None  # regenerate: the run this one answers again
    rolls_back: uuid.UUID | None = None  # the run undone before this one starts
    instructions: str | None = None  # in place of the agent's, for this run only
    # Its own endpoint, told of its end (URL checked already): webhooks.service.for_run.
    webhook: dict[str, str] | None = None
    # Tools its caller runs: a call to one waits for its result (``tool.requested``).
    client_tools: tuple[ToolSpec, ...] = ()


@dataclass
class RunEnvironment:
    """The collaborators of every run of a process (built once, in the lifespan)."""

    settings: Settings
    sessions: async_sessionmaker[AsyncSession]
    coordination: Coordination
    storage: Storage
    workspaces: WorkspaceCache
    models: ModelRegistry
    catalog: ModelCatalog
    supervisor: Supervisor
    owner_id: str  # this process, as run rows name it
    tools_factory: ToolsFactory
    sealer: Sealer  # opens the headers of an agent's MCP servers
    titles: TitleGenerator
    on_first_output: Callable[[], Callable[[], None]]  # a timer per run, for the metric
    shipper: EventShipper = field(init=False)  # every run's events, to the shared log
    heartbeats: Heartbeats = field(init=False)  # every run's proof that this process lives
    lag: LoopLag = field(init=False, default_factory=LoopLag)  # how busy this process is
    mcp_tool_lists: ToolListCache = field(init=False, default_factory=ToolListCache)

    def __post_init__(self) -> None:
        self.shipper = EventShipper(self.coordination)
        self.heartbeats = Heartbeats(self.sessions, self.settings.run_lease_seconds)
