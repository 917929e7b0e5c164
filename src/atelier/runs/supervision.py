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
import functools
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import TypeVar
from uuid import uuid4

import structlog

import atelier.runs.closing as closing
import atelier.runs.pausing as pausing
import atelier.runs.rollback as rollback
from atelier.conversations.messages import Fenced
from atelier.coordination.lease import Lease
from atelier.db.base import utcnow
from atelier.llm.base import ModelError, ToolCall
from atelier.runs.admission import admit
from atelier.runs.approvals import Decision
from atelier.runs.closing import Ending
from atelier.runs.environment import RunEnvironment, RunRequest, lock_key
from atelier.runs.events import ErrorCode, RunCancelled, RunStatus, ToolsUnavailable, ended
from atelier.runs.log import RunEventLog
from atelier.runs.loop import AgentLoop, Transcript
from atelier.runs.mcp import McpTools
from atelier.runs.outcome import FENCED, Outcome, StopReason, outcome_of
from atelier.runs.pausing import NotResumed, Waiting
from atelier.runs.recorder import Opened, Recorder
from atelier.runs.spec import AgentSpec, chat_agent, workspace_agent
from atelier.runs.title import ready_title, start_title
from atelier.runs.toolbox import Toolbox, enabled
from atelier.runs.tools import Tools
from atelier.runs.watchdogs import Watchdogs
from atelier.supervisor import absorbed, finish
from atelier.workspace.sync import WorkspaceSync

log = structlog.get_logger("atelier.runs")
T = TypeVar("T")


class RunTask:
    def __init__(
        self, env: RunEnvironment, request: RunRequest | None, waiting: Waiting | None = None
    ) -> None:
        """A new run for ``request``, or the run ``waiting`` for approvals, going on."""
        self.env = env
        self.request = request
        self.waiting = waiting
        if waiting is not None:
            self.run_id, self.conversation_id = waiting.run_id, waiting.conversation_id
        else:
            assert request is not None
            self.run_id = request.queued_run_id or uuid4()
            self.conversation_id = request.conversation_id
        after = waiting.paused_event_id if waiting is not None else 0
        self.events = RunEventLog(env.shipper, self.run_id, after)
        self._pending: list[ToolCall] = []  # the calls a resumed run waited with
        self._decisions: dict[str, Decision] = {}
        self.on_free: Callable[[], None] | None = None  # called once the run let go of its lock
        self.recorder = Recorder(env.sessions, self.events, self.run_id)
        self._loop = asyncio.get_running_loop()
        self.accepted: asyncio.Future[Opened] = self._loop.create_future()
        self._first_output = env.on_first_output()
        self._stop_reason: StopReason | None = None
        self._work: asyncio.Task[Outcome] | None = None
        self._agent: AgentLoop | None = None
        self._materialized = False
        self._title: asyncio.Task[str | None] | None = None
        self.watchdogs = Watchdogs(env, self.run_id, self.stop)

    def stop(self, reason: StopReason) -> None:
        """Stop the work for ``reason``; the first reason given is the one that counts."""
        if self._stop_reason is None:
            self._stop_reason = reason
        if self._work is not None:
            self._work.cancel()

    async def execute(self) -> Outcome | None:
        """The run, from its lock to its terminal event; None if it was never accepted
        (``accepted`` then carries why)."""
        settings = self.env.settings
        ending: Ending | None = None  # once set, the run's row is closed
        paused = False  # once set, the run waits in its row for approvals
        try:
            async with Lease(
                self.env.coordination,
                lock_key(self.conversation_id),
                ttl_seconds=settings.run_lease_seconds,
                on_lost=lambda: self.stop("lease_lost"),
            ):
                opened = await self._open()
                self.accepted.set_result(opened)
                spec = (
                    chat_agent(settings, opened.model)
                    if opened.agent is None
                    else workspace_agent(
                        settings,
                        opened.agent.definition,
                        opened.instructions,
                        opened.client_tools,
                    )
                )
                async with self._workdir(spec) as workdir:
                    outcome = await self._supervise(opened, spec, workdir)
                    # Finished even if shutdown cancels us meanwhile: it is short, and it is
                    # what leaves the run's row and conversation consistent.
                    if outcome.waiting is not None:
                        outcome, ending = await finish(self._wait(outcome, workdir))
                        paused = ending is None
                    else:
                        outcome, ending = await finish(self._close(outcome, workdir))
        except BaseException as exc:
            if not self.accepted.done():
                if isinstance(exc, asyncio.CancelledError):
                    self.accepted.cancel()
                    raise
                self.accepted.set_exception(exc)
                return None
            if isinstance(exc, asyncio.CancelledError):
                # Cancelled again while letting go of the lock: the stream still ends, and
                # says what the row says when the row was closed.
                if ending is not None:
                    closing.announce(self.recorder, ending)
                elif paused:
                    self.events.mark_paused()
                else:
                    self.events.emit(RunCancelled(run_id=str(self.run_id)))
                raise
            if ending is None and not paused:
                log.exception("run could not be closed", run_id=str(self.run_id))
                outcome = Outcome.failed(ErrorCode.INTERNAL_ERROR, "the run could not be saved")
                ending = Ending(final=ended(outcome.status, str(self.run_id), outcome.error))
            else:  # saved, then letting go of the lock failed: the lock runs out by itself
                log.warning("run lock not released", run_id=str(self.run_id), exc_info=True)
        if self.on_free is not None and not paused:
            self.on_free()  # the lock is released: the next queued run need not wait for more
        if paused:
            await self.events.pause()
            return outcome
        assert ending is not None  # every path above that did not raise has one
        closing.announce(self.recorder, ending)
        await self.events.close(settings.run_event_retention_seconds)
        return outcome

    async def _open(self) -> Opened:
        """A new run, stored; or a waiting run taken up, with the decisions it waited for."""
        settings = self.env.settings
        if self.waiting is not None:
            reopened = await pausing.reopen(self.recorder, self.env.owner_id, self.env.catalog)
            if reopened is None:
                raise NotResumed
            opened, self._pending, self._decisions = reopened
            return opened
        request = self.request
        assert request is not None
        opened = await self.recorder.open(
            request,
            owner_id=self.env.owner_id,
            # Under the lock, an active run this quiet has lost its lease: its process died.
            abandoned_after=settings.run_lease_seconds / 2,
            admit=functools.partial(admit, self.env, request),
            undo=None
            if request.rolls_back is None
            else functools.partial(
                rollback.undo, self.env.storage, self.env.settings, request.rolls_back
            ),
        )
        if opened.conversation.title is None and opened.conversation.user_seq == 1:
            self._title = start_title(self.env, opened, request.text)
        return opened

    def _workdir(self, spec: AgentSpec) -> contextlib.AbstractAsyncContextManager[Path | None]:
        if spec.workspace:
            return self.env.workspaces.use(self.conversation_id)
        return contextlib.nullcontext(None)

    async def _supervise(self, opened: Opened, spec: AgentSpec, workdir: Path | None) -> Outcome:
        self.env.heartbeats.watch(self.run_id, self.stop)
        watchers = [
            asyncio.create_task(self.watchdogs.watch_idle(), name=f"run-idle-{self.run_id}"),
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
                    absorbed()
                    self.stop("shutdown")
        finally:
            self.env.heartbeats.forget(self.run_id)
            for watcher in watchers:
                watcher.cancel()
            await asyncio.gather(*watchers, return_exceptions=True)
        return outcome_of(self._work, self._stop_reason, self.env.settings, self.run_id)

    async def _steps(self, opened: Opened, spec: AgentSpec, workdir: Path | None) -> Outcome:
        provider = self.env.models.get(opened.model.provider)
        if provider is None:
            raise ModelError(f"provider {opened.model.provider!r} is not configured")
        sources: list[Tools] = []
        if workdir is not None:
            sync = WorkspaceSync(self.env.storage, self.env.settings)
            await sync.materialize(opened.conversation, workdir, opened.files)
            self._materialized = True
            sources.append(enabled(self.env.tools_factory(workdir), spec.tools))
        if opened.agent is not None and opened.agent.definition.mcp_servers:
            mcp = await McpTools.of_agent(
                self.env.settings, self.env.sealer, opened.agent, self.env.mcp_tool_lists
            )
            for server, reason in mcp.unavailable.items():  # the client hears it too
                self.events.emit(ToolsUnavailable(server=server, reason=reason))
            sources.append(mcp)
        tools = Toolbox(sources) if sources else None
        self._agent = AgentLoop(
            spec,
            opened.model,
            provider,
            tools,
            self.recorder,
            Transcript(opened.history, calls=self._pending),
            on_progress=self.watchdogs.progress,
            on_first_output=self._first_output,
            decisions=self._decisions,
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

    async def _wait(self, outcome: Outcome, workdir: Path | None) -> tuple[Outcome, Ending | None]:
        """Leave the run waiting in its row for a person's decisions (no ending); if it
        cannot (storage refused its files, or it is no longer the conversation's run), it
        ends as any run does."""
        assert outcome.waiting is not None
        expires = utcnow() + timedelta(seconds=self.env.settings.approval_timeout_seconds)
        sync = WorkspaceSync(self.env.storage, self.env.settings) if self._materialized else None
        try:
            assert self.recorder.opened is not None
            client = frozenset(tool.name for tool in self.recorder.opened.client_tools)
            if await pausing.suspend(
                self.recorder,
                outcome.waiting,
                sync=sync,
                directory=workdir,
                expires_at=expires,
                client_tools=client,
            ):
                return outcome, None
            message = "workspace storage failed before the run could wait for approval"
            stopped = Outcome.failed(ErrorCode.STORAGE_UNAVAILABLE, message)
        except Fenced:
            stopped = Outcome.failed(
                ErrorCode.FENCED, "the run is no longer its conversation's run"
            )
        return await self._close(stopped, workdir)

    async def _close(self, outcome: Outcome, workdir: Path | None) -> tuple[Outcome, Ending]:
        """Save what a stopped run left, wait briefly for the title, upload the files and
        end the row."""
        if outcome.may_write and self._agent is not None:
            try:
                await self.recorder.persisting("run could not be saved", self._agent.save_unsaved)
            except Fenced:
                outcome = FENCED
        upload = outcome.may_upload and self._materialized
        status, error, ending = await closing.close(
            self.recorder,
            outcome.status,
            outcome.error,
            sync=WorkspaceSync(self.env.storage, self.env.settings) if upload else None,
            directory=workdir,
            title=await self._title_if_ready(outcome),
        )
        return Outcome(status, error), ending

    async def _title_if_ready(self, outcome: Outcome) -> str | None:
        if self._title is None or outcome.status != RunStatus.COMPLETED:
            return None
        return await ready_title(self._title, self.env.settings.title_wait_seconds)
