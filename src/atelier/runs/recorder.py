"""What a run saves, and what it announces: each save is one unit of work in the run's own
session, fenced on the conversation's active run, and followed by its typed event. A
durable event (a stored message, a model call's usage, the run's end) is saved with the
id it is announced under, so a stream that lost the event log can send it again.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Literal, TypeVar

import structlog
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from atelier.agents import service as agents
from atelier.agents.service import ResolvedAgent
from atelier.conversations import messages
from atelier.conversations.messages import Fenced
from atelier.conversations.models import Message
from atelier.db.engine import unreachable
from atelier.llm.base import ChatMessage, ToolCall, ToolResult, UsageReport
from atelier.llm.catalog import ModelCatalog
from atelier.llm.models import CatalogModel
from atelier.llm.offline import estimate_tokens
from atelier.runs import approvals, service
from atelier.runs.admission import Admitted
from atelier.runs.approvals import Decision
from atelier.runs.environment import RunRequest
from atelier.runs.events import (
    ApprovalRequested,
    ApprovalResolved,
    ErrorCode,
    FileChanged,
    MessageCompleted,
    RunError,
    RunEvent,
    RunStarted,
    RunStatus,
    TitleUpdated,
    Usage,
    ended,
)
from atelier.runs.log import RunEventLog
from atelier.usage.service import record_usage
from atelier.workspace.service import file_etags
from atelier.workspace.sync import Collected, WorkspaceSync

log = structlog.get_logger("atelier.runs")
T = TypeVar("T")
RETRY_SECONDS = (0.5, 1.0, 2.0, 5.0)
NOT_RUN = "not run: the run ended first"


@dataclass(frozen=True)
class Opened:
    """A run just committed: its conversation, model, history and workspace's files."""

    conversation: service.Claimed
    model: CatalogModel
    agent: ResolvedAgent | None  # the agent version it runs; None for a chat turn
    history: list[ChatMessage]
    files: dict[str, str]  # path -> etag, when the run works on the workspace
    abandoned: uuid.UUID | None  # a dead process's run this one found and failed


@dataclass
class Ending:
    """What a closed run still announces, with the ids it recorded for them."""

    changes: list[FileChanged] = field(default_factory=list)
    title: str | None = None
    final: RunEvent | None = None


class Recorder:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        events: RunEventLog,
        run_id: uuid.UUID,
    ) -> None:
        self.sessions = sessions
        self.events = events
        self.run_id = run_id
        self.opened: Opened | None = None

    async def open(
        self,
        request: RunRequest,
        *,
        owner_id: str,
        abandoned_after: float,
        admit: Callable[[AsyncSession, service.Claimed], Awaitable[Admitted]],
    ) -> Opened:
        """Claim the conversation, store the run and the user's message, and read what the
        run needs, in one transaction. ``admit`` may refuse the run (a ProblemError),
        which leaves nothing behind."""
        async with self.sessions() as session:
            claimed, abandoned = await service.claim(
                session,
                request.principal,
                request.conversation_id,
                request.kind,
                self.run_id,
                abandoned_after=abandoned_after,
            )
            admitted = await admit(session, claimed)
            model = admitted.model
            await service.open_run(
                session,
                claimed,
                run_id=self.run_id,
                model_id=model.id,
                agent=admitted.agent,
                text=request.text,
                owner_id=owner_id,
            )
            history = await messages.history(session, claimed.id)
            files = await file_etags(session, claimed) if request.kind == "agent" else {}
            await session.commit()
        self.opened = Opened(claimed, model, admitted.agent, history, files, abandoned)
        self.events.emit(
            RunStarted(run_id=str(self.run_id), conversation_id=str(claimed.id), model_id=model.id)
        )
        return self.opened

    async def reopen(
        self, owner_id: str, catalog: ModelCatalog
    ) -> tuple[Opened, list[ToolCall], dict[str, Decision]] | None:
        """Take up a run that waited for approvals, with the calls it waited with and the
        decisions on them; None if another process took it, or it ended meanwhile."""
        async with self.sessions() as session:
            found = await service.unpause_run(session, self.run_id, owner_id)
            if found is None:
                return None
            run, claimed = found
            agent = await agents.resolve(
                session, claimed.tenant_id, run.agent_id, run.agent_version or 1
            )
            history, calls = await messages.waiting_history(session, claimed.id)
            files = await file_etags(session, claimed)
            decided = await approvals.decisions(session, self.run_id)
            await session.commit()
        self.opened = Opened(
            claimed, catalog.resolve(run.model_id), agent, history, files, abandoned=None
        )
        for call in calls:
            if (decision := decided.get(call.id)) is not None:
                verdict: Literal["approve", "deny"] = "approve" if decision.approved else "deny"
                self.events.emit(ApprovalResolved(call_id=call.id, decision=verdict))
        return self.opened, list(calls), decided

    async def suspend(
        self,
        calls: list[ToolCall],
        *,
        sync: WorkspaceSync | None,
        directory: Path | None,
        expires_at: datetime,
    ) -> bool:
        """Leave the run waiting for approval of ``calls``: the files it changed uploaded
        and recorded, the calls stored, and its row ``awaiting_approval`` with the id of
        its last event, in one unit of work; then those events. False if storage refused
        files (the run then ends as any run does)."""

        async def suspend_once() -> Collected | None:
            async with self.sessions() as session:
                collected, _, _ = await self._collect(
                    session, sync, directory, RunStatus.RUNNING, None
                )
                if collected.error is not None:
                    return None
                paused = self.events.last_id + len(collected.changes) + len(calls)
                await approvals.request(session, self.run_id, calls, expires_at)
                if not await service.pause_run(session, self.run_id, paused):
                    raise Fenced
                await session.commit()
            return collected

        collected = await self.persisting("run could not wait for approval", suspend_once)
        if collected is None:
            return False
        if sync is not None and directory is not None:
            await sync.remember(directory, collected)
        for change in collected.changes:
            self.events.emit(FileChanged(path=change.path, size=change.size, change=change.change))
        for call in calls:
            self.events.emit(
                ApprovalRequested(call_id=call.id, name=call.name, input=call.arguments)
            )
        return True

    @property
    def conversation(self) -> service.Claimed:
        assert self.opened is not None
        return self.opened.conversation

    async def reply(
        self,
        text: str,
        calls: list[ToolCall],
        usage: UsageReport,
        *,
        incomplete: bool,
        stop_reason: str | None,
    ) -> None:
        """An assistant reply and its model call's usage."""
        assert self.opened is not None
        conversation, model = self.conversation, self.opened.model
        message_event, usage_event = self.events.last_id + 1, self.events.last_id + 2
        output = usage.output_tokens if usage.output_tokens is not None else estimate_tokens(text)
        async with self.sessions() as session:
            cost = await record_usage(
                session,
                tenant_id=conversation.tenant_id,
                user_id=conversation.user_id,
                model=model,
                usage=usage,
                conversation_id=conversation.id,
                run_id=self.run_id,
                event_id=usage_event,
            )
            charged = cost or Decimal(0)
            message = await messages.append(
                session,
                conversation.id,
                self.run_id,
                "assistant",
                text,
                parts=messages.call_parts(calls) or None,
                incomplete=incomplete,
                stop_reason=stop_reason,
                event_id=message_event,
                counted=messages.Counted(
                    usage.input_tokens or 0,
                    usage.output_tokens or 0,
                    charged,
                    # What the next call carries: this call's prompt and its answer.
                    context_tokens=usage.context_tokens + output,
                ),
            )
            await service.count_usage(
                session, self.run_id, usage.input_tokens or 0, usage.output_tokens or 0, charged
            )
            await session.commit()
        self._announce(message)
        self.events.emit(
            Usage(
                input_tokens=usage.input_tokens,
                output_tokens=usage.output_tokens,
                cache_read_tokens=usage.cache_read_tokens,
                cache_write_tokens=usage.cache_write_tokens,
                cost=cost,
            )
        )

    async def tool_results(
        self, calls: list[ToolCall], results: list[ToolResult]
    ) -> list[ToolResult]:
        """The results of ``calls``; a call without one gets an error result (not run)."""
        done = {result.call_id for result in results}
        results = results + [ToolResult(c.id, NOT_RUN, True) for c in calls if c.id not in done]
        async with self.sessions() as session:
            message = await messages.append(
                session,
                self.conversation.id,
                self.run_id,
                "tool",
                "",
                parts=messages.result_parts(results),
                event_id=self.events.last_id + 1,
            )
            await session.commit()
        self._announce(message)
        return results

    def _announce(self, message: Message) -> None:
        number = self.events.emit(
            MessageCompleted(
                message_id=str(message.id),
                seq=message.seq,
                role=message.role,
                content=message.content,
                incomplete=message.incomplete,
                stop_reason=message.stop_reason,
            )
        )
        assert number == message.event_id, "a run's events have one writer"

    async def close(
        self,
        status: RunStatus,
        error: RunError | None,
        *,
        sync: WorkspaceSync | None,
        directory: Path | None,
        title: str | None,
    ) -> tuple[RunStatus, RunError | None, Ending]:
        """Upload and record the files the run changed and give the run its end, in one
        unit of work, retried until the database takes it (the run keeps its lock
        meanwhile, so nobody takes it for dead; the files are uploaded again and recorded
        with it, so none is left in storage without its row). Returns the final status
        (storage may have failed) and what is left to announce."""

        async def close_once() -> tuple[RunStatus, RunError | None, Collected]:
            async with self.sessions() as session:
                collected, final_status, final_error = await self._collect(
                    session, sync, directory, status, error
                )
                final_id = self.events.last_id + len(collected.changes) + (title is not None) + 1
                await service.end_run(
                    session, self.run_id, final_status, final_error, last_event_id=final_id
                )
                await session.commit()
            return final_status, final_error, collected

        status, error, collected = await self.persisting("run could not be closed", close_once)
        if sync is not None and directory is not None:
            await sync.remember(directory, collected)
        changes = [
            FileChanged(path=c.path, size=c.size, change=c.change) for c in collected.changes
        ]
        return status, error, Ending(changes, title, ended(status, str(self.run_id), error))

    async def _collect(
        self,
        session: AsyncSession,
        sync: WorkspaceSync | None,
        directory: Path | None,
        status: RunStatus,
        error: RunError | None,
    ) -> tuple[Collected, RunStatus, RunError | None]:
        """The run's files, uploaded and recorded in ``session``; a run that completed but
        whose files storage refused (some or all) ends failed, with those it took."""
        if sync is None or directory is None:
            return Collected([], {}, None), status, error
        try:
            collected = await sync.collect_and_upload(session, self.conversation, directory)
        except DBAPIError:
            raise
        except Exception:  # the local copy could not be read: the row still ends
            log.exception("run files could not be collected", run_id=str(self.run_id))
            failure = RunError(code=ErrorCode.INTERNAL_ERROR, message="the run's files were lost")
            ended_as = RunStatus.FAILED if status == RunStatus.COMPLETED else status
            return Collected([], {}, None), ended_as, error or failure
        if collected.error is not None and status == RunStatus.COMPLETED:
            status = RunStatus.FAILED
            error = RunError(
                code=ErrorCode.STORAGE_UNAVAILABLE,
                message=f"workspace storage failed: {collected.error}",
            )
        return collected, status, error

    async def persisting(self, what: str, work: Callable[[], Awaitable[T]]) -> T:
        """``work`` (one unit of work), retried while the database is unreachable (what it
        refuses for a reason, a constraint say, is raised: no retry would change that)."""
        attempt = 0
        while True:
            try:
                return await work()
            except DBAPIError as exc:
                if not unreachable(exc):
                    raise
                attempt += 1
                log.warning(
                    f"{what}; retrying",
                    run_id=str(self.run_id),
                    attempt=attempt,
                    error=str(exc)[:200],
                )
                await asyncio.sleep(RETRY_SECONDS[min(attempt, len(RETRY_SECONDS)) - 1])

    def announce(self, ending: Ending) -> None:
        """The closed run's last events, under the ids its row recorded."""
        for change in ending.changes:
            self.events.emit(change)
        if ending.title is not None:
            self.events.emit(TitleUpdated(title=ending.title))
        if ending.final is not None:
            self.events.emit(ending.final)
