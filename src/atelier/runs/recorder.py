"""What a run saves, and what it announces: each save is one unit of work in the run's own
session, fenced on the conversation's active run, and followed by its typed event. A
durable event (a stored message, a model call's usage, the run's end) is saved with the
id it is announced under, so a stream that lost the event log can send it again.
"""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import TypeVar

import structlog
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

import atelier.runs.service as service
from atelier.agents.service import ResolvedAgent
from atelier.budgets import enforcement as budgets
from atelier.conversations import messages
from atelier.conversations.models import Message
from atelier.db.engine import unreachable
from atelier.llm.base import ChatMessage, ToolCall, ToolResult, ToolSpec, UsageReport
from atelier.llm.models import CatalogModel
from atelier.llm.offline import estimate_tokens
from atelier.runs.admission import Admitted
from atelier.runs.environment import RunRequest
from atelier.runs.events import (
    MessageCompleted,
    RunStarted,
    Usage,
)
from atelier.runs.log import RunEventLog
from atelier.usage.cost import Prices
from atelier.usage.cost import cost as charge
from atelier.usage.service import record_usage
from atelier.workspace.service import file_etags

log = structlog.get_logger("atelier.runs")
T = TypeVar("T")
RETRY_SECONDS = (0.5, 1.0, 2.0, 5.0)
BUDGET_WAIT_FIRST, BUDGET_WAIT_MAX = 0.02, 1.0  # a call waits for others' holds to settle
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
    budgets: tuple[budgets.Binding, ...] = ()  # what binds its spending
    instructions: str | None = None  # its own, in place of its agent's
    client_tools: tuple[ToolSpec, ...] = ()  # tools its caller runs


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
        undo: Callable[[AsyncSession, service.Claimed], Awaitable[None]] | None = None,
    ) -> Opened:
        """Claim the conversation, store the run and the user's message, and read what the
        run needs, in one transaction. ``admit`` may refuse the run (a DomainError),
        which leaves nothing behind; ``undo`` first rolls back the run this one cut in on."""
        async with self.sessions() as session:
            claimed, abandoned = await service.claim(
                session,
                request.principal,
                request.conversation_id,
                request.kind,
                self.run_id,
                abandoned_after=abandoned_after,
                queued=request.queued_run_id is not None,
            )
            admitted = await admit(session, claimed)
            if undo is not None:
                await undo(session, claimed)
            model = admitted.model
            await service.open_run(
                session,
                claimed,
                run_id=self.run_id,
                model_id=model.id,
                agent=admitted.agent,
                text=request.text,
                owner_id=owner_id,
                queued=request.queued_run_id is not None,
                supersedes=request.supersedes,
                instructions=request.instructions,
                webhook=request.webhook,
                client_tools=request.client_tools,
            )
            history = await messages.history(session, claimed.id)
            files = await file_etags(session, claimed) if request.kind == "agent" else {}
            await session.commit()
        self.opened = Opened(
            claimed,
            model,
            admitted.agent,
            history,
            files,
            abandoned,
            admitted.budgets,
            request.instructions,
            request.client_tools,
        )
        self.events.emit(
            RunStarted(run_id=str(self.run_id), conversation_id=str(claimed.id), model_id=model.id)
        )
        return self.opened

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
        prompt_tokens: int = 0,
        timing: tuple[datetime | None, datetime | None] = (None, None),
    ) -> None:
        """An assistant reply and its model call's usage (``prompt_tokens``: our estimate of
        what it was sent; ``timing``: when it was sent, when its first output came). A call
        cut short before the provider said what it used is recorded with our estimate,
        marked so; its budgets are charged either way."""
        assert self.opened is not None
        conversation, model = self.conversation, self.opened.model
        message_event, usage_event = self.events.last_id + 1, self.events.last_id + 2
        output = usage.output_tokens if usage.output_tokens is not None else estimate_tokens(text)
        unreported = usage.input_tokens is None and usage.output_tokens is None
        guess = UsageReport(input_tokens=prompt_tokens, output_tokens=output)
        estimated = unreported and incomplete and stop_reason is None
        async with self.sessions() as session:
            cost = await record_usage(
                session,
                tenant_id=conversation.tenant_id,
                user_id=conversation.user_id,
                model=model,
                usage=guess if estimated else usage,
                conversation_id=conversation.id,
                run_id=self.run_id,
                event_id=usage_event,
                api_key_id=conversation.api_key_id,
                agent_id=self.opened.agent.agent_id if self.opened.agent else None,
                estimated=estimated,
                started_at=timing[0],
                first_token_at=timing[1],
            )
            if estimated:
                usage = guess
            if self.opened.budgets:
                spent = cost if cost is not None else charge(guess, Prices.of(model))
                await budgets.settle(session, self.run_id, self.opened.budgets, spent or Decimal(0))
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
                estimated=estimated,
            )
        )

    async def reserve(self, worst_case: Decimal) -> budgets.Binding | None:
        """Hold the next model call's worst case against the run's budgets, waiting while
        other calls hold what it needs; the budget that is spent, if one is (then nothing
        is held)."""
        assert self.opened is not None
        if not self.opened.budgets:
            return None
        pause = BUDGET_WAIT_FIRST
        while True:
            async with self.sessions() as session:
                refused = await budgets.reserve(
                    session, self.run_id, self.opened.budgets, worst_case
                )
                if refused is None:
                    await session.commit()
                    return None
            if refused.spent:
                return refused.binding
            await asyncio.sleep(pause * random.uniform(0.5, 1.5))
            pause = min(pause * 2, BUDGET_WAIT_MAX)

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
                parts=message.parts,
            )
        )
        assert number == message.event_id, "a run's events have one writer"

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
