"""One run, executed by a supervised task that owns its lock, its sessions and its deadline.

The task holds the conversation lock (a renewed lease) for the run's whole life. It
opens the run (the user's message and the run row, committed), tells the request it was
accepted, and then works in a child task that can be stopped for a reason -- a cancel
request, a lost lock, a reaped row, shutdown -- or that times out by itself (deadline,
idle). Whatever ends the work, the run saves what there is, gives the row its final
status, frees the conversation, and then announces exactly one terminal event.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar

import structlog
from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from atelier.conversations.messages import Fenced
from atelier.conversations.models import Conversation, Kind
from atelier.coordination.base import Coordination
from atelier.coordination.lease import Lease
from atelier.http.errors import ProblemError
from atelier.http.scope import Principal
from atelier.llm.base import ModelError
from atelier.llm.catalog import ModelCatalog
from atelier.llm.context import context_usage
from atelier.llm.models import CatalogModel
from atelier.llm.offline import estimate_tokens
from atelier.llm.registry import ModelRegistry
from atelier.llm.titles import TitleGenerator
from atelier.runs import service
from atelier.runs.events import ErrorCode, RunCancelled, RunStatus, ended
from atelier.runs.log import RunEventLog
from atelier.runs.loop import AgentLoop, Outcome, Transcript
from atelier.runs.recorder import Ending, Opened, Recorder
from atelier.runs.spec import AgentSpec, chat_agent, workspace_agent
from atelier.runs.tools import ToolsFactory
from atelier.settings import Settings
from atelier.supervisor import Supervisor
from atelier.workspace.base import Storage, StorageError
from atelier.workspace.cache import WorkspaceCache
from atelier.workspace.sync import WorkspaceSync

log = structlog.get_logger("atelier.runs")
T = TypeVar("T")
StopReason = Literal["cancelled", "shutdown", "lease_lost", "reaped", "idle"]
STOPPED: dict[str, Outcome] = {
    "cancelled": Outcome(RunStatus.CANCELLED),
    "shutdown": Outcome.failed(
        ErrorCode.SHUTDOWN, "the server shut down before the run finished", RunStatus.CANCELLED
    ),
    "lease_lost": Outcome.failed(ErrorCode.LEASE_LOST, "the run lost its conversation lock"),
    "reaped": Outcome.failed(ErrorCode.WORKER_LOST, "the run was taken for dead"),
}


def lock_key(conversation_id: uuid.UUID) -> str:
    return f"conversation:{conversation_id}"


@dataclass(frozen=True)
class RunRequest:
    principal: Principal
    conversation_id: uuid.UUID
    kind: Kind  # a conversation with a workspace, or a chat
    text: str
    model_id: str | None  # the caller's choice; else the conversation's, else the default


@dataclass
class RunEnvironment:
    """What every run of a process works with (built once, in the lifespan)."""

    settings: Settings
    sessions: async_sessionmaker[AsyncSession]
    coordination: Coordination
    storage: Storage
    workspaces: WorkspaceCache
    models: ModelRegistry
    catalog: ModelCatalog
    supervisor: Supervisor
    owner_id: str
    tools_factory: ToolsFactory
    titles: TitleGenerator
    on_first_output: Callable[[], Callable[[], None]]


class RunTask:
    def __init__(self, env: RunEnvironment, request: RunRequest) -> None:
        self.env = env
        self.request = request
        self.run_id = uuid.uuid4()
        self.events = RunEventLog(env.coordination, self.run_id)
        self.recorder = Recorder(env.sessions, self.events, self.run_id)
        self._loop = asyncio.get_running_loop()
        self.accepted: asyncio.Future[Opened] = self._loop.create_future()
        self._first_output = env.on_first_output()
        self._stop_reason: StopReason | None = None
        self._work: asyncio.Task[Outcome] | None = None
        self._agent: AgentLoop | None = None
        self._materialized = False
        self._title: asyncio.Task[str | None] | None = None
        self._last_progress: float | None = None  # loop time; None until the agent starts

    def stop(self, reason: StopReason) -> None:
        """Stop the work for ``reason``; the first reason given is the one that counts."""
        if self._stop_reason is None:
            self._stop_reason = reason
        if self._work is not None:
            self._work.cancel()

    async def execute(self) -> Outcome | None:
        """The run, from its lock to its terminal event; None if it was never accepted
        (``accepted`` then carries why)."""
        settings, request = self.env.settings, self.request
        try:
            async with Lease(
                self.env.coordination,
                lock_key(request.conversation_id),
                ttl_seconds=settings.run_lease_seconds,
                on_lost=lambda: self.stop("lease_lost"),
            ):
                opened = await self.recorder.open(
                    request.principal,
                    request.conversation_id,
                    kind=request.kind,
                    text=request.text,
                    owner_id=self.env.owner_id,
                    # Under the lock, an active run this quiet has lost its lease: its process died.
                    abandoned_after=settings.run_lease_seconds / 2,
                    choose_model=self._choose_model,
                    workspace=request.kind == "agent",
                )
                self.accepted.set_result(opened)
                spec = (
                    workspace_agent(settings)
                    if request.kind == "agent"
                    else chat_agent(settings, opened.model)
                )
                if opened.conversation.title is None and opened.conversation.user_seq == 1:
                    self._title = self.env.supervisor.spawn(
                        self._make_title(opened), name=f"title-{opened.conversation.id}"
                    )
                async with self._workdir(spec) as workdir:
                    outcome = await self._supervise(opened, spec, workdir)
                    outcome, ending = await _to_the_end(self._close(outcome, workdir))
        except BaseException as exc:
            if not self.accepted.done():
                if isinstance(exc, asyncio.CancelledError):
                    self.accepted.cancel()
                    raise
                self.accepted.set_exception(exc)
                return None
            if isinstance(exc, asyncio.CancelledError):
                # Cancelled again while letting go of the lock: still end the stream.
                self.events.emit(RunCancelled(run_id=str(self.run_id)))
                raise
            log.exception("run could not be closed", run_id=str(self.run_id))
            outcome = Outcome.failed(ErrorCode.INTERNAL_ERROR, "the run could not be saved")
            ending = Ending(final=ended(outcome.status, str(self.run_id), outcome.error))
        self.recorder.announce(ending)
        await self.events.close(settings.run_event_retention_seconds)
        return outcome

    def _choose_model(self, conversation: service.Claimed, text: str) -> CatalogModel:
        """The run's model; refused as plain HTTP if it cannot run (nothing is kept)."""
        env = self.env
        model = env.catalog.resolve(
            self.request.model_id or conversation.model_id or env.settings.default_model
        )
        if env.models.get(model.provider) is None:
            raise ProblemError(
                503, "model_unavailable", f"provider {model.provider!r} is not configured"
            )
        estimate = conversation.estimated_context_tokens + estimate_tokens(text)
        if context_usage(estimate, model.context_window).status == "exceeded":  # BUG-008
            raise ProblemError(
                413,
                "context_window_exceeded",
                f"about {estimate} tokens do not fit {model.id}'s window of "
                f"{model.context_window}; start a new conversation",
            )
        return model

    def _workdir(self, spec: AgentSpec) -> contextlib.AbstractAsyncContextManager[Path | None]:
        if spec.workspace:
            return self.env.workspaces.use(self.request.conversation_id)
        return contextlib.nullcontext(None)

    async def _supervise(self, opened: Opened, spec: AgentSpec, workdir: Path | None) -> Outcome:
        watchers = [
            asyncio.create_task(self._heartbeat(), name=f"run-heartbeat-{self.run_id}"),
            asyncio.create_task(self._watch_idle(), name=f"run-idle-{self.run_id}"),
        ]
        self._work = asyncio.create_task(
            self._steps(opened, spec, workdir), name=f"run-work-{self.run_id}"
        )
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

    async def _steps(self, opened: Opened, spec: AgentSpec, workdir: Path | None) -> Outcome:
        provider = self.env.models.get(opened.model.provider)
        if provider is None:
            raise ModelError(f"provider {opened.model.provider!r} is not configured")
        tools = None
        if workdir is not None:
            sync = WorkspaceSync(self.env.storage, self.env.settings)
            await sync.materialize(opened.conversation, workdir, opened.files)
            self._materialized = True
            tools = self.env.tools_factory(workdir)
        self._agent = AgentLoop(
            spec,
            opened.model,
            provider,
            tools,
            self.recorder,
            Transcript(opened.history),
            on_progress=self._progress,
            on_first_output=self._first_output,
        )
        deadline = asyncio.timeout(spec.deadline_seconds)
        try:
            async with deadline:
                return await self._agent.run()
        except TimeoutError as exc:
            if deadline.expired():
                message = f"the run exceeded its deadline of {spec.deadline_seconds:g} s"
                raise TimeoutError(message) from exc
            raise

    def _outcome_of(self, work: asyncio.Task[Outcome]) -> Outcome:
        if work.cancelled() and self._stop_reason == "idle":
            idle = self.env.settings.run_idle_timeout_seconds
            message = f"no model or tool progress for {idle:g} s"
            return Outcome.failed(ErrorCode.TIMED_OUT, message, RunStatus.TIMED_OUT)
        if work.cancelled():
            return STOPPED[self._stop_reason or "shutdown"]
        exc = work.exception()
        if exc is None:
            return work.result()
        if isinstance(exc, TimeoutError):
            message = str(exc) or "the run took too long"
            return Outcome.failed(ErrorCode.TIMED_OUT, message, RunStatus.TIMED_OUT)
        if isinstance(exc, Fenced):
            return Outcome.failed(ErrorCode.FENCED, "the run is no longer its conversation's run")
        if isinstance(exc, ModelError):
            return Outcome.failed(ErrorCode.MODEL_ERROR, str(exc))
        if isinstance(exc, StorageError):
            message = f"workspace storage failed: {exc}"
            return Outcome.failed(ErrorCode.STORAGE_UNAVAILABLE, message)
        log.error("run failed", run_id=str(self.run_id), exc_info=exc)
        return Outcome.failed(ErrorCode.INTERNAL_ERROR, type(exc).__name__)

    async def _close(self, outcome: Outcome, workdir: Path | None) -> tuple[Outcome, Ending]:
        """Save what a stopped run left, wait briefly for the title, upload the files and
        end the row."""
        if outcome.may_write and self._agent is not None:
            try:
                await self._agent.save_unsaved()
            except Fenced:
                outcome = Outcome.failed(
                    ErrorCode.FENCED, "the run is no longer its conversation's run"
                )
        upload = outcome.may_upload and self._materialized
        status, error, ending = await self.recorder.close(
            outcome.status,
            outcome.error,
            sync=WorkspaceSync(self.env.storage, self.env.settings) if upload else None,
            directory=workdir,
            title=await self._title_if_ready(outcome),
        )
        return Outcome(status, error), ending

    async def _title_if_ready(self, outcome: Outcome) -> str | None:
        """The title, if the run completed and it is ready within the title wait; it is
        saved later in any case (BUG-005: a slow title never holds a run up for long)."""
        if self._title is None or outcome.status != RunStatus.COMPLETED:
            return None
        done, _ = await asyncio.wait({self._title}, timeout=self.env.settings.title_wait_seconds)
        if self._title in done and not self._title.cancelled() and self._title.exception() is None:
            return self._title.result()
        return None

    async def _make_title(self, opened: Opened) -> str | None:
        """Title an untitled conversation from its first message; saved whenever it is ready."""
        try:
            title = await self.env.titles.generate(opened.model, self.request.text, "")
        except Exception:
            log.warning("title generation failed", conversation_id=str(opened.conversation.id))
            return None
        async with self.env.sessions() as session:
            named = await session.execute(
                update(Conversation)
                .where(Conversation.id == opened.conversation.id, Conversation.title.is_(None))
                .values(title=title)
            )
            await session.commit()
        return title if named.rowcount else None  # type: ignore[attr-defined]

    async def _heartbeat(self) -> None:
        while True:
            await asyncio.sleep(self.env.settings.run_lease_seconds / 3)
            try:
                async with self.env.sessions() as session:
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
        idle = self.env.settings.run_idle_timeout_seconds
        while True:
            if self._last_progress is None:
                await asyncio.sleep(idle / 4)
                continue
            quiet = self._loop.time() - self._last_progress
            if quiet >= idle:
                self.stop("idle")
                return
            await asyncio.sleep(idle - quiet)

    def _progress(self) -> None:
        self._last_progress = self._loop.time()


async def _to_the_end(work: Coroutine[Any, Any, T] | Awaitable[T]) -> T:
    """Finish ``work`` even if the caller is cancelled meanwhile (it is short, and it is
    what leaves the run's row and conversation consistent)."""
    task = asyncio.ensure_future(work)
    while not task.done():
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait({task})
    return task.result()
