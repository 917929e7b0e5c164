"""One run, executed by a supervised task that owns its lock, sessions and deadline.

The task holds the conversation lock (a renewed lease) for the run's whole life. It
commits the user's message and the run row, tells the request it was accepted, and
then works in a child task (``_work``) that can be stopped for a reason: a cancel
request, a lost lock, a reaped row, shutdown; or that times out by itself (deadline,
idle). Whatever ends the work, the run task saves what there is -- the partial reply,
the tool results, the files the agent changed -- gives the row its final status,
frees the conversation, and appends exactly one terminal event.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import structlog
from sqlalchemy.ext.asyncio import AsyncSession

from atelier.conversations.models import Conversation, Message
from atelier.coordination.lease import Lease
from atelier.llm.base import (
    ChatMessage,
    ModelError,
    ModelRequest,
    Stop,
    TextDelta,
    ToolCall,
    ToolResult,
    ToolSpec,
    UsageReport,
)
from atelier.llm.models import CatalogModel
from atelier.llm.offline import estimate_tokens
from atelier.runs import events, service
from atelier.usage.money import money_str
from atelier.usage.service import record_usage
from atelier.workspace.base import StorageError
from atelier.workspace.sync import FileChange, WorkspaceSync

if TYPE_CHECKING:
    from atelier.runs.manager import RunManager

log = structlog.get_logger("atelier.runs")
T = TypeVar("T")

SYSTEM_PROMPT = (
    "You are an agent working on the files of this conversation's workspace. Use the tools "
    "to list, read, write, edit, delete and search files; paths are relative to the "
    "workspace. Say briefly what you did."
)


class Tools(Protocol):
    specs: list[ToolSpec]

    async def call(self, call: ToolCall) -> ToolResult: ...


ToolsFactory = Callable[[Path], Tools]


@dataclass(frozen=True)
class Outcome:
    status: str  # completed | failed | cancelled | timed_out
    error_code: str | None = None
    error_message: str | None = None

    @property
    def error(self) -> dict[str, str] | None:
        if self.error_code is None:
            return None
        return {"code": self.error_code, "message": self.error_message or ""}

    @property
    def may_write(self) -> bool:
        """A run that lost its row must not write; SQL fences every other write."""
        return self.error_code not in ("worker_lost", "fenced")

    @property
    def may_upload(self) -> bool:
        """Storage is not fenced: only the lock holder may change the workspace."""
        return self.may_write and self.error_code != "lease_lost"


STOPPED = {
    "cancelled": Outcome("cancelled"),
    "shutdown": Outcome("cancelled", "shutdown", "the server shut down before the run finished"),
    "lease_lost": Outcome("failed", "lease_lost", "the run lost its conversation lock"),
    "reaped": Outcome("failed", "worker_lost", "the run was taken for dead"),
}


def lock_key(conversation_id: uuid.UUID) -> str:
    return f"conversation:{conversation_id}"


class RunTask:
    def __init__(
        self,
        manager: RunManager,
        *,
        run_id: uuid.UUID,
        conversation: Conversation,
        model: CatalogModel,
        text: str,
        wants_title: bool,
    ) -> None:
        self.manager = manager
        self.resources = manager.resources
        self.settings = manager.resources.settings
        self.run_id = run_id
        self.conversation = conversation  # detached: only its ids are read
        self.conversation_id = conversation.id
        self.tenant_id = conversation.tenant_id
        self.user_id = conversation.user_id
        self.model = model
        self.text = text
        self.wants_title = wants_title
        self._loop = asyncio.get_running_loop()
        self.accepted: asyncio.Future[None] = self._loop.create_future()
        self.created = time.monotonic()
        self._stop_reason: str | None = None
        self._work: asyncio.Task[Outcome] | None = None
        self._last_progress: float | None = None  # loop time; None until the agent starts
        self._workdir = Path()  # this process's copy of the workspace, once the run has it
        self._directory: Path | None = None  # set once the workspace is materialised there
        # What a stopped run still has to save: the reply being streamed, the usage its
        # call reported, and tool calls stored without their results yet.
        self._reply: list[str] | None = None
        self._reply_usage = UsageReport()
        self._pending_calls: list[ToolCall] = []
        self._results: list[ToolResult] = []
        self._first_event_seen = False
        self.events = events.RunEventLog(manager.resources.coordination, run_id)

    # -- control ---------------------------------------------------------------------

    def stop(self, reason: str) -> None:
        """Stop the work for ``reason`` (see STOPPED); the run then saves and ends."""
        if self._stop_reason is None:
            self._stop_reason = reason
        if self._work is not None and not self._work.done():
            self._work.cancel()

    def emit(self, name: str, data: dict[str, Any]) -> None:
        self.events.emit(name, data)

    # -- life ------------------------------------------------------------------------

    async def execute(self) -> None:
        settings = self.settings
        try:
            async with Lease(
                self.resources.coordination,
                lock_key(self.conversation_id),
                ttl_seconds=settings.run_lease_seconds,
                on_lost=lambda: self.stop("lease_lost"),
            ):
                await self._open()
                self.accepted.set_result(None)
                async with self.resources.workspaces.use(self.conversation_id) as workdir:
                    self._workdir = workdir
                    outcome = await self._supervise()
                    outcome = await _to_the_end(self._close(outcome))
        except BaseException as exc:
            if not self.accepted.done():
                if isinstance(exc, asyncio.CancelledError):
                    self.accepted.cancel()
                else:
                    self.accepted.set_exception(exc)
                return
            if isinstance(exc, asyncio.CancelledError):
                # Cancelled again while letting go of the lock: still end the stream.
                self.manager.finished("cancelled")
                self.emit("run.cancelled", events.terminal_data(self.run_id, None))
                raise
            log.exception("run could not be closed", run_id=str(self.run_id))
            outcome = Outcome("failed", "internal_error", "the run could not be saved")
        self.manager.finished(outcome.status)
        if outcome.status == "completed" and self.wants_title:
            await self._title()
        self.emit(
            events.TERMINAL_EVENTS[outcome.status], events.terminal_data(self.run_id, outcome.error)
        )
        await self.events.expire(settings.run_event_retention_seconds)

    async def _open(self) -> None:
        async with self.resources.sessionmaker() as session:
            abandoned = await service.open_run(
                session,
                self.conversation,
                run_id=self.run_id,
                model_id=self.model.id,
                text=self.text,
                owner_id=self.manager.owner_id,
                # Under the lock, an active run this quiet has lost its lease: its process died.
                abandoned_after=self.settings.run_lease_seconds / 2,
            )
            await session.commit()
        self.emit(
            "run.started",
            {
                "run_id": str(self.run_id),
                "conversation_id": str(self.conversation_id),
                "model_id": self.model.id,
            },
        )
        if abandoned is not None:
            # Its process died holding this conversation; its watchers learn it ended.
            self.manager.reaped(abandoned)
            await events.announce_end(
                self.resources.coordination,
                abandoned,
                "failed",
                {"code": "worker_lost", "message": service.WORKER_LOST},
                self.settings.run_event_retention_seconds,
            )

    async def _supervise(self) -> Outcome:
        watchers = [
            asyncio.create_task(self._heartbeat(), name=f"run-heartbeat-{self.run_id}"),
            asyncio.create_task(self._watch_idle(), name=f"run-idle-{self.run_id}"),
        ]
        self._work = asyncio.create_task(self._steps(), name=f"run-work-{self.run_id}")
        if self._stop_reason is not None:  # stopped while it was being accepted
            self._work.cancel()
        try:
            while not self._work.done():
                try:
                    await asyncio.wait({self._work})
                except asyncio.CancelledError:
                    # Shutdown: stop the work, then still save what it did.
                    self.stop("shutdown")
        finally:
            for watcher in watchers:
                watcher.cancel()
            await asyncio.gather(*watchers, return_exceptions=True)
        return self._outcome_of(self._work)

    def _outcome_of(self, work: asyncio.Task[Outcome]) -> Outcome:
        if work.cancelled() and self._stop_reason == "idle":
            idle = self.settings.run_idle_timeout_seconds
            return Outcome("timed_out", "timed_out", f"no model or tool progress for {idle:g} s")
        if work.cancelled():
            return STOPPED[self._stop_reason or "shutdown"]
        exc = work.exception()
        if exc is None:
            return work.result()
        if isinstance(exc, TimeoutError):
            return Outcome("timed_out", "timed_out", str(exc) or "the run took too long")
        if isinstance(exc, service.Fenced):
            return Outcome("failed", "fenced", "the run is no longer its conversation's run")
        if isinstance(exc, ModelError):
            return Outcome("failed", "model_error", str(exc))
        if isinstance(exc, StorageError):
            return Outcome("failed", "storage_unavailable", f"workspace storage failed: {exc}")
        log.error("run failed", run_id=str(self.run_id), exc_info=exc)
        return Outcome("failed", "internal_error", type(exc).__name__)

    async def _heartbeat(self) -> None:
        while True:
            await asyncio.sleep(self.settings.run_lease_seconds / 3)
            try:
                async with self.resources.sessionmaker() as session:
                    alive = await service.heartbeat(session, self.run_id)
                    await session.commit()
            except Exception:
                log.warning("run heartbeat failed", run_id=str(self.run_id), exc_info=True)
                continue
            if not alive:
                self.stop("reaped")
                return

    async def _watch_idle(self) -> None:
        """Stop the work once neither the model nor a tool made progress for too long.

        A watchdog rather than a timer moved on every token: progress costs one store.
        """
        idle = self.settings.run_idle_timeout_seconds
        loop = self._loop
        while True:
            if self._last_progress is None:
                await asyncio.sleep(idle / 4)
                continue
            quiet = loop.time() - self._last_progress
            if quiet >= idle:
                self.stop("idle")
                return
            await asyncio.sleep(idle - quiet)

    # -- the agent loop ----------------------------------------------------------------

    async def _steps(self) -> Outcome:
        seconds = self.settings.run_deadline_seconds
        deadline = asyncio.timeout(seconds)
        try:
            async with deadline:
                return await self._agent()
        except TimeoutError as exc:
            if deadline.expired():
                raise TimeoutError(f"the run exceeded its deadline of {seconds:g} s") from exc
            raise

    async def _agent(self) -> Outcome:
        settings, resources = self.settings, self.resources
        provider = resources.models.get(self.model.provider)
        if provider is None:
            raise ModelError(f"provider {self.model.provider!r} is not configured")
        self._directory = self._workdir
        async with resources.sessionmaker() as session:
            await service.mark_running(session, self.run_id)
            await WorkspaceSync(resources.storage, settings).materialize(
                session, self.conversation, self._directory
            )
            messages = await service.history(session, self.conversation_id)
            await session.commit()
        tools = self.manager.tools_factory(self._directory)
        produced = 0
        for _ in range(settings.run_max_steps):
            budget = min(
                settings.run_max_output_tokens - produced,
                self.model.max_output_tokens or settings.run_max_output_tokens,
            )
            if budget <= 0:
                return Outcome(
                    "failed", "output_limit", "the run used its whole output token budget"
                )
            self._progress()
            reply, calls, usage = await self._call_model(
                provider.stream(
                    ModelRequest(
                        model=self.model.provider_model_id,
                        messages=messages,
                        system=SYSTEM_PROMPT,
                        tools=tools.specs,
                        max_tokens=budget,
                    )
                )
            )
            produced += usage.output_tokens or estimate_tokens(reply)
            messages.append(ChatMessage("assistant", reply, tool_calls=tuple(calls)))
            if not calls:
                return Outcome("completed")
            for call in calls:
                self._progress()
                self.emit(
                    "tool.started",
                    {"call_id": call.id, "name": call.name, "input": call.arguments},
                )
                result = await tools.call(call)
                self._results.append(result)
                self.emit(
                    "tool.completed",
                    {
                        "call_id": call.id,
                        "name": call.name,
                        "output": result.content,
                        "is_error": result.is_error,
                    },
                )
            results = await self._save_tool_results()
            messages.append(ChatMessage("tool", tool_results=tuple(results)))
        return Outcome(
            "failed", "step_limit", f"the run used all {settings.run_max_steps} of its steps"
        )

    def _progress(self) -> None:
        self._last_progress = self._loop.time()

    async def _call_model(self, stream: Any) -> tuple[str, list[ToolCall], UsageReport]:
        self._reply, self._reply_usage = [], UsageReport()
        calls: list[ToolCall] = []
        stop: str | None = None
        try:
            async for event in stream:
                self._progress()
                if not self._first_event_seen:
                    self._first_event_seen = True
                    self.manager.first_event(time.monotonic() - self.created)
                if isinstance(event, TextDelta):
                    self._reply.append(event.text)
                    if len(self._reply) >= 256:  # a long reply stays one string, not many
                        self._reply[:] = ["".join(self._reply)]
                    self.emit("message.delta", {"text": event.text})
                elif isinstance(event, ToolCall):
                    calls.append(event)
                elif isinstance(event, UsageReport):
                    self._reply_usage = event
                elif isinstance(event, Stop):
                    stop = event.reason
        finally:
            # Closes the provider's connection now, also when the run is stopped mid-stream.
            await stream.aclose()
        reply = "".join(self._reply)
        usage = self._reply_usage
        # A reply the output limit cut off is kept, and marked for what it is.
        await self._save_reply(
            reply, calls, usage, incomplete=stop == "max_tokens", stop_reason=stop
        )
        return reply, calls, usage

    # -- persistence (each step is one unit of work in the run's own session) ----------

    async def _save_reply(
        self,
        reply: str,
        calls: list[ToolCall],
        usage: UsageReport,
        *,
        incomplete: bool,
        stop_reason: str | None = None,
    ) -> None:
        async with self.resources.sessionmaker() as session:
            message = await service.add_message(
                session,
                self.conversation_id,
                self.run_id,
                "assistant",
                reply,
                parts=service.call_parts(calls) or None,
                incomplete=incomplete,
                stop_reason=stop_reason,
            )
            cost = await self._count(session, reply, usage)
            await session.commit()
        self._reply = None
        self._pending_calls = list(calls)
        self._results = []
        await self._emit_message(message)
        self.emit(
            "usage",
            {
                "input_tokens": usage.input_tokens,
                "output_tokens": usage.output_tokens,
                "cost": money_str(cost) if cost is not None else None,
            },
        )

    async def _count(self, session: AsyncSession, reply: str, usage: UsageReport) -> Decimal | None:
        record = await record_usage(
            session,
            tenant_id=self.tenant_id,
            user_id=self.user_id,
            model=self.model,
            usage=usage,
            conversation_id=self.conversation_id,
            run_id=self.run_id,
        )
        output = usage.output_tokens if usage.output_tokens is not None else estimate_tokens(reply)
        await service.add_usage(
            session,
            self.conversation_id,
            self.run_id,
            input_tokens=usage.input_tokens or 0,
            output_tokens=usage.output_tokens or 0,
            cost=record.cost or Decimal(0),
            # What the next call will carry: this call's prompt plus its answer.
            context_tokens=(usage.input_tokens or 0) + output,
        )
        return record.cost

    async def _save_tool_results(self) -> list[ToolResult]:
        done = {result.call_id for result in self._results}
        results = self._results + [
            ToolResult(call.id, "not run: the run ended first", is_error=True)
            for call in self._pending_calls
            if call.id not in done
        ]
        async with self.resources.sessionmaker() as session:
            message = await service.add_message(
                session,
                self.conversation_id,
                self.run_id,
                "tool",
                "",
                parts=service.result_parts(results),
            )
            await session.commit()
        self._pending_calls, self._results = [], []
        await self._emit_message(message)
        return results

    async def _emit_message(self, message: Message) -> None:
        self.emit(
            "message.completed",
            {
                "message_id": str(message.id),
                "seq": message.seq,
                "role": message.role,
                "content": message.content,
                "incomplete": message.incomplete,
                "stop_reason": message.stop_reason,
            },
        )

    async def _close(self, outcome: Outcome) -> Outcome:
        """Save what a stopped run left, upload the agent's files, and end the row."""
        changes: list[FileChange] = []
        try:
            if outcome.may_write and self._reply is not None:
                await self._save_reply("".join(self._reply), [], self._reply_usage, incomplete=True)
            if outcome.may_write and self._pending_calls:
                await self._save_tool_results()
        except service.Fenced:
            outcome = Outcome("failed", "fenced", "the run is no longer its conversation's run")
        # The files the agent changed and the run's end are one unit of work.
        async with self.resources.sessionmaker() as session:
            if self._directory is not None and outcome.may_upload:
                try:
                    changes = await WorkspaceSync(
                        self.resources.storage, self.settings
                    ).collect_and_upload(session, self.conversation, self._directory)
                except StorageError as exc:
                    # Files storage accepted are still recorded (they were flushed).
                    if outcome.status == "completed":
                        outcome = Outcome(
                            "failed", "storage_unavailable", f"workspace storage failed: {exc}"
                        )
            await service.end_run(
                session, self.run_id, outcome.status, outcome.error_code, outcome.error_message
            )
            await session.commit()
        for change in changes:
            self.emit(
                "file.changed", {"path": change.path, "size": change.size, "change": change.change}
            )
        return outcome

    async def _title(self) -> None:
        title = await self.manager.title(self.conversation_id, self.model, self.text)
        if title is not None:
            self.emit("title.updated", {"title": title})


async def _to_the_end(work: Coroutine[Any, Any, T] | Awaitable[T]) -> T:
    """Finish ``work`` even if the caller is cancelled meanwhile (it is short, and it is
    what leaves the run's row and conversation consistent)."""
    task = asyncio.ensure_future(work)
    while not task.done():
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait({task})
    return task.result()
