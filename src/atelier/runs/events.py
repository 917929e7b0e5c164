"""What a run reports, as types: its statuses, its error codes and its events.

Every event is one pydantic model whose ``type`` is its SSE ``event:`` name; the rest of
the model is the SSE ``data``. A stream ends on a terminal *type*. ``docs/events.md``
and the OpenAPI schema list exactly these models (a test checks both).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from decimal import Decimal
from enum import StrEnum
from typing import Annotated, Any, Literal, NamedTuple, get_args

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, field_serializer

from atelier.usage.money import money_str


class RunStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    AWAITING_APPROVAL = "awaiting_approval"  # no task: waits in its row for a person
    AWAITING_TOOL_RESULT = "awaiting_tool_result"  # the same, for its caller's tool results
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    TIMED_OUT = "timed_out"


ACTIVE_STATUSES = (RunStatus.QUEUED, RunStatus.RUNNING)  # a process executes it
# Held by no process, in its row, until every call it waits on is decided or answered.
WAITING_STATUSES = (RunStatus.AWAITING_APPROVAL, RunStatus.AWAITING_TOOL_RESULT)
UNENDED_STATUSES = (*ACTIVE_STATUSES, *WAITING_STATUSES)


class ErrorCode(StrEnum):
    MODEL_ERROR = "model_error"
    TIMED_OUT = "timed_out"
    STEP_LIMIT = "step_limit"
    OUTPUT_LIMIT = "output_limit"
    STORAGE_UNAVAILABLE = "storage_unavailable"
    DATABASE_UNAVAILABLE = "database_unavailable"
    INTERNAL_ERROR = "internal_error"
    WORKER_LOST = "worker_lost"  # its process died (or the run was taken for dead)
    LEASE_LOST = "lease_lost"  # it could not keep its conversation's lock
    FENCED = "fenced"  # it is no longer its conversation's run
    SHUTDOWN = "shutdown"
    CONVERSATION_DELETED = "conversation_deleted"
    NOT_STARTED = "not_started"  # a queued run that could not start when its turn came
    BUDGET_EXCEEDED = "budget_exceeded"  # a budget had nothing left for the next model call
    STREAM_FAILED = "stream_failed"  # this stream (not the run) could not go on
    # A chat turn's names for a run that timed out or was cancelled.
    MODEL_TIMEOUT = "model_timeout"
    CANCELLED = "cancelled"


class RunError(BaseModel):
    code: ErrorCode
    message: str


class _Event(BaseModel):
    model_config = ConfigDict(frozen=True)

    @functools.cached_property
    def data(self) -> str:
        """The SSE ``data``: the model without its ``type``, one line of JSON (made once,
        for the shared log and every follower)."""
        return self.model_dump_json(exclude={"type"})


class RunStarted(_Event):
    type: Literal["run.started"] = "run.started"
    run_id: str
    conversation_id: str
    model_id: str


class MessageDelta(_Event):
    type: Literal["message.delta"] = "message.delta"
    text: str


class MessageCompleted(_Event):
    type: Literal["message.completed"] = "message.completed"
    message_id: str
    seq: int
    role: Literal["user", "assistant", "tool"]
    content: str
    incomplete: bool
    stop_reason: str | None = None
    # As stored: an assistant message's tool calls ({"type": "tool_call", "id", "name",
    # "arguments"}), a tool message's results ({"type": "tool_result", "call_id",
    # "content", "is_error"}).
    parts: list[dict[str, Any]] | None = None


class ToolStarted(_Event):
    type: Literal["tool.started"] = "tool.started"
    call_id: str
    name: str
    input: dict[str, Any]


class ToolCompleted(_Event):
    type: Literal["tool.completed"] = "tool.completed"
    call_id: str
    name: str
    output: str
    is_error: bool


class ToolsUnavailable(_Event):
    """An MCP server of the agent offered no tools when the run started (unreachable,
    refused, too large an answer): the run goes on without them."""

    type: Literal["tools.unavailable"] = "tools.unavailable"
    server: str
    reason: str


class FileChanged(_Event):
    type: Literal["file.changed"] = "file.changed"
    path: str
    size: int
    change: Literal["created", "modified", "deleted"]


class ApprovalRequested(_Event):
    """A call to a tool that needs a person's approval: the run waits for a decision."""

    type: Literal["approval.requested"] = "approval.requested"
    call_id: str
    name: str
    input: dict[str, Any]


class ToolRequested(_Event):
    """The model called a tool the caller runs (a client tool): the run waits for its
    result (``POST …/runs/{run_id}/tool-results``)."""

    type: Literal["tool.requested"] = "tool.requested"
    call_id: str
    name: str
    input: dict[str, Any]


class ApprovalResolved(_Event):
    type: Literal["approval.resolved"] = "approval.resolved"
    call_id: str
    decision: Literal["approve", "deny"]


class TitleUpdated(_Event):
    type: Literal["title.updated"] = "title.updated"
    title: str


class Usage(_Event):
    """One model call's tokens; None where the provider did not say (cost unknown, not 0).
    ``input_tokens`` are those billed at the input price; cache reads and writes apart."""

    type: Literal["usage"] = "usage"
    input_tokens: int | None
    output_tokens: int | None
    cache_read_tokens: int | None = None
    cache_write_tokens: int | None = None
    cost: Decimal | None
    # The call was cut short before the provider said: the counts are our estimate.
    estimated: bool = False

    @field_serializer("cost")
    def _money(self, value: Decimal | None) -> str | None:
        return money_str(value) if value is not None else None


class _Ended(_Event):
    run_id: str
    error: RunError | None = None


class RunCompleted(_Ended):
    type: Literal["run.completed"] = "run.completed"


class RunFailed(_Ended):
    type: Literal["run.failed"] = "run.failed"


class RunCancelled(_Ended):
    type: Literal["run.cancelled"] = "run.cancelled"


class RunTimedOut(_Ended):
    type: Literal["run.timed_out"] = "run.timed_out"


class StreamError(_Event):
    """Terminal: for a run stream, this stream (not the run) could not go on -- resume it;
    for a chat, the turn failed."""

    type: Literal["error"] = "error"
    code: ErrorCode
    message: str


class Done(_Event):
    """Terminal for a chat turn: the reply is complete."""

    type: Literal["done"] = "done"


RunEvent = Annotated[
    RunStarted
    | MessageDelta
    | MessageCompleted
    | ToolStarted
    | ToolCompleted
    | ToolsUnavailable
    | FileChanged
    | ApprovalRequested
    | ToolRequested
    | ApprovalResolved
    | TitleUpdated
    | Usage
    | RunCompleted
    | RunFailed
    | RunCancelled
    | RunTimedOut
    | StreamError,
    Field(discriminator="type"),
]
RUN_EVENTS: TypeAdapter[RunEvent] = TypeAdapter(RunEvent)
ChatEvent = Annotated[
    MessageDelta | MessageCompleted | TitleUpdated | Usage | Done | StreamError,
    Field(discriminator="type"),
]
CHAT_EVENTS: TypeAdapter[ChatEvent] = TypeAdapter(ChatEvent)
RunEnded = RunCompleted | RunFailed | RunCancelled | RunTimedOut

ENDED_BY_STATUS: dict[RunStatus, type[RunEnded]] = {
    RunStatus.COMPLETED: RunCompleted,
    RunStatus.FAILED: RunFailed,
    RunStatus.CANCELLED: RunCancelled,
    RunStatus.TIMED_OUT: RunTimedOut,
}
TERMINAL_TYPES = frozenset(
    {*(model.model_fields["type"].default for model in ENDED_BY_STATUS.values()), "error"}
)


def ended(status: RunStatus, run_id: str, error: RunError | None) -> RunEnded:
    return ENDED_BY_STATUS[status](run_id=run_id, error=error)


@dataclass(frozen=True)
class RunWaiting:
    """Not an event the run gave: a follower's word that the run now waits in its row for
    decisions on the calls it asked about, held by no process (it has no id). APIs whose
    runs end at an interrupt end their stream here; the native stream goes on."""

    run_id: str


class Numbered(NamedTuple):
    """What the engine yields: an event with its id -- None for a run's end that the run
    recorded no id for, and for ``RunWaiting``."""

    id: int | None
    event: RunEvent | RunWaiting


EVENT_TYPES: dict[str, type[_Event]] = {
    model.model_fields["type"].default: model for model in get_args(get_args(RunEvent)[0])
}


def parse(name: str, data: str) -> RunEvent:
    """An event as the shared log keeps it (its type, and its data's JSON) -- its JSON
    kept, not made again for the next follower."""
    event = EVENT_TYPES[name].model_validate_json(data)
    event.__dict__["data"] = data  # the cached_property's slot
    return event  # type: ignore[return-value]
