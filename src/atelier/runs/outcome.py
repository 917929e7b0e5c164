"""How a run's work ended, as the status and error its row and terminal event will say."""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass
from typing import Literal

import structlog
from sqlalchemy.exc import DBAPIError

from atelier.conversations.messages import Fenced
from atelier.llm.base import ModelError, ToolCall
from atelier.runs.events import ErrorCode, RunError, RunStatus
from atelier.settings import Settings
from atelier.workspace.base import StorageError

log = structlog.get_logger("atelier.runs")
StopReason = Literal["cancelled", "shutdown", "lease_lost", "reaped", "idle"]


class AwaitingApproval(Exception):
    """The model asked for calls a person must approve first: the run waits in its row."""

    def __init__(self, calls: list[ToolCall]) -> None:
        super().__init__(f"{len(calls)} tool calls wait for approval")
        self.calls = calls


@dataclass(frozen=True)
class Outcome:
    status: RunStatus
    error: RunError | None = None
    waiting: list[ToolCall] | None = None  # the calls an awaiting run waits with

    @classmethod
    def failed(cls, code: ErrorCode, message: str, status: RunStatus = RunStatus.FAILED) -> Outcome:
        return cls(status, RunError(code=code, message=message))

    @property
    def may_write(self) -> bool:
        """A run that lost its row must not write; SQL fences every other write."""
        return self.error is None or self.error.code not in (
            ErrorCode.WORKER_LOST,
            ErrorCode.FENCED,
        )

    @property
    def may_upload(self) -> bool:
        """Storage is not fenced: only the lock holder may change the workspace."""
        return self.may_write and (self.error is None or self.error.code != ErrorCode.LEASE_LOST)


COMPLETED = Outcome(RunStatus.COMPLETED)
FENCED = Outcome.failed(ErrorCode.FENCED, "the run is no longer its conversation's run")
STOPPED: dict[str, Outcome] = {
    "cancelled": Outcome(RunStatus.CANCELLED),
    "shutdown": Outcome.failed(
        ErrorCode.SHUTDOWN, "the server shut down before the run finished", RunStatus.CANCELLED
    ),
    "lease_lost": Outcome.failed(ErrorCode.LEASE_LOST, "the run lost its conversation lock"),
    "reaped": Outcome.failed(ErrorCode.WORKER_LOST, "the run was taken for dead"),
}


def outcome_of(
    work: asyncio.Task[Outcome], stopped: StopReason | None, settings: Settings, run_id: uuid.UUID
) -> Outcome:
    """What the run's finished work means: stopped for a reason, its own result, or the
    failure that ended it."""
    if work.cancelled() and stopped == "idle":
        idle = settings.run_idle_timeout_seconds
        message = f"no model or tool progress for {idle:g} s"
        return Outcome.failed(ErrorCode.TIMED_OUT, message, RunStatus.TIMED_OUT)
    if work.cancelled():
        return STOPPED[stopped or "shutdown"]
    exc = work.exception()
    if exc is None:
        return work.result()
    if isinstance(exc, AwaitingApproval):
        return Outcome(RunStatus.AWAITING_APPROVAL, waiting=exc.calls)
    if isinstance(exc, TimeoutError):
        message = str(exc) or "the run took too long"
        return Outcome.failed(ErrorCode.TIMED_OUT, message, RunStatus.TIMED_OUT)
    if isinstance(exc, Fenced):
        return FENCED
    if isinstance(exc, ModelError):
        log.warning("model call failed", run_id=str(run_id), error=str(exc))
        return Outcome.failed(ErrorCode.MODEL_ERROR, str(exc))
    if isinstance(exc, StorageError):
        return Outcome.failed(ErrorCode.STORAGE_UNAVAILABLE, f"workspace storage failed: {exc}")
    if isinstance(exc, DBAPIError):
        log.warning("run stopped by a database failure", run_id=str(run_id), exc_info=exc)
        message = "the database failed during the run; what it had saved is kept"
        return Outcome.failed(ErrorCode.DATABASE_UNAVAILABLE, message)
    log.error("run failed", run_id=str(run_id), exc_info=exc)
    return Outcome.failed(ErrorCode.INTERNAL_ERROR, type(exc).__name__)
