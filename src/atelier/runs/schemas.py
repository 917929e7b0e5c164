from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_serializer

from atelier.conversations.schemas import NO_NUL, ModelId
from atelier.runs.events import RunError, RunStatus
from atelier.runs.models import Run
from atelier.usage.money import money_str

MAX_INPUT_CHARS = 100_000


class RunIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    input: str = Field(min_length=1, max_length=MAX_INPUT_CHARS, pattern=NO_NUL)
    model_id: str | None = ModelId
    # When a run is active: refuse (409), queue this one behind it, cancel it (its partial
    # work kept) and start this one next, or cancel it and undo its messages and files.
    multitask_strategy: Literal["reject", "enqueue", "interrupt", "rollback"] = "reject"


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
