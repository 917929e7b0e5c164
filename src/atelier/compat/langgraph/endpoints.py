"""``/langgraph``: the LangGraph Agent Server API that ``langgraph-sdk`` calls, on the
same agents, conversations and runs as ``/v1`` (docs/compat.md)."""

from __future__ import annotations

import functools
import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Annotated, Any

from fastapi import APIRouter, BackgroundTasks, Header, Path, Query, Response
from sqlalchemy.ext.asyncio import AsyncSession

from atelier import __version__
from atelier.agents import service as agents
from atelier.compat.langgraph import present, service
from atelier.compat.langgraph.schemas import (
    RunCreate,
    Search,
    StateAt,
    Thread,
    ThreadCreate,
    ThreadPatch,
)
from atelier.compat.langgraph.translate import STREAM_MODES, LangGraphTranslator
from atelier.compat.stream import json_when_done
from atelier.conversations.models import Conversation, Message
from atelier.conversations.schemas import NO_NUL
from atelier.errors import DomainError
from atelier.http.deps import CallerDep, ResourcesDep, SessionDep, UserPrincipalDep
from atelier.http.errors import ProblemError
from atelier.http.translate import event_stream, last_event_id, run_through, translated
from atelier.resources import Resources
from atelier.runs import UNENDED_STATUSES, RunStatus

router = APIRouter(prefix="/langgraph", tags=["langgraph"])


@router.get("/info")
async def info() -> dict[str, Any]:
    return {"version": __version__, "flags": {"assistants": True, "crons": False}}


# -- assistants (agents) --------------------------------------------------------------------


@router.get("/assistants/{assistant_id}")
async def get_assistant(
    assistant_id: Annotated[str, Path(max_length=64, pattern=NO_NUL)],
    principal: CallerDep,
    session: SessionDep,
) -> dict[str, Any]:
    agent = await service.assistant(session, principal.tenant_id, assistant_id)
    if not principal.may_use_agent(agent.id):
        raise ProblemError(404, "not_found", "no such assistant")
    latest = await agents.latest(session, agent)
    return present.assistant(agent, latest.definition, latest.version)


ALL = 100_000  # every agent: a tenant has at most ATELIER_MAX_AGENTS


@router.post("/assistants/search")
async def search_assistants(
    principal: CallerDep, session: SessionDep, body: Search | None = None
) -> list[dict[str, Any]]:
    body = body or Search()
    found = [
        present.assistant(agent, version.definition, version.version)
        for agent, version in (
            await agents.list_live(
                session, principal.tenant_id, ALL, None, principal.agents_granted
            )
        )[0]
        if body.graph_id in (None, agent.name)
        and body.name in (None, agent.name)
        and service.matches(version.definition.get("metadata", {}), body.metadata)
    ]
    return found[body.offset : body.offset + body.limit]


@router.post("/assistants/count")
async def count_assistants(
    principal: CallerDep, session: SessionDep, body: Search | None = None
) -> int:
    return len(
        await search_assistants(
            principal,
            session,
            Search(**(body or Search()).model_dump() | {"limit": 1000, "offset": 0}),
        )
    )


# -- threads (conversations) ----------------------------------------------------------------


async def _present_thread(session: AsyncSession, conversation: Conversation) -> dict[str, Any]:
    active = await service.active(session, conversation)
    interrupts = [present.interrupt(a) for a in await service.pending(session, active)]
    state = present.values(await service.messages(session, conversation.id))
    return present.thread(conversation, present.thread_status(active), state, interrupts)


@router.post("/threads")
async def create_thread(
    principal: UserPrincipalDep,
    session: SessionDep,
    resources: ResourcesDep,
    body: ThreadCreate | None = None,
) -> dict[str, Any]:
    body = body or ThreadCreate()
    if body.thread_id is not None and body.if_exists == "do_nothing":
        existing = await service.find(session, principal, str(body.thread_id))
        if existing is not None:
            return await _present_thread(session, existing)
    limit = resources.settings.max_conversations_per_user
    conversation = await service.create(
        session, principal, body.thread_id, body.metadata, limit=limit
    )
    return present.thread(conversation, "idle", {"messages": []})


@router.get("/threads/{thread_id}")
async def get_thread(
    thread_id: str, principal: UserPrincipalDep, session: SessionDep
) -> dict[str, Any]:
    return await _present_thread(session, await service.get(session, principal, thread_id))


@router.patch("/threads/{thread_id}")
async def update_thread(
    thread_id: str, body: ThreadPatch, principal: UserPrincipalDep, session: SessionDep
) -> dict[str, Any]:
    """LangGraph merges the metadata sent into the thread's."""
    conversation = await service.get(session, principal, thread_id)
    if body.metadata:
        conversation.metadata_ = {**conversation.metadata_, **body.metadata}
    await session.flush()
    return await _present_thread(session, conversation)


@router.delete("/threads/{thread_id}", status_code=204)
async def delete_thread(
    thread_id: str,
    principal: UserPrincipalDep,
    resources: ResourcesDep,
    background: BackgroundTasks,
) -> Response:
    async with resources.sessionmaker() as session:
        conversation = await service.get(session, principal, thread_id)
    background.add_task(
        await resources.runs.remove_conversation(principal, conversation.id, "agent")
    )
    return Response(status_code=204)


@router.post("/threads/search")
async def search_threads(
    principal: UserPrincipalDep, session: SessionDep, body: Search | None = None
) -> list[dict[str, Any]]:
    """Newest first; ``metadata`` and ``status`` filter what the page holds (the thread's
    values are left out: read a thread for them)."""
    body = body or Search()
    found = await service.search(
        session, principal, body.offset, body.limit, body.metadata, body.status
    )
    return [present.thread(conversation, status) for conversation, status in found]


@router.get("/threads/{thread_id}/state")
async def get_state(
    thread_id: str, principal: UserPrincipalDep, session: SessionDep
) -> dict[str, Any]:
    conversation = await service.get(session, principal, thread_id)
    pending = await service.pending(session, await service.active(session, conversation))
    rows = await service.messages(session, conversation.id)
    return present.state(conversation, rows, [present.interrupt(a) for a in pending])


@router.get("/threads/{thread_id}/state/{checkpoint_id}")
async def get_state_at(
    thread_id: str, checkpoint_id: str, principal: UserPrincipalDep, session: SessionDep
) -> dict[str, Any]:
    """The state at a checkpoint: the present one's (Atelier keeps no older states)."""
    state = await get_state(thread_id, principal, session)
    if state["checkpoint"]["checkpoint_id"] != checkpoint_id:
        raise ProblemError(
            404,
            "checkpoint_not_kept",
            "only the thread's present checkpoint is kept; read GET /threads/{id}/state",
        )
    return state


@router.post("/threads/{thread_id}/state/checkpoint")
async def get_state_at_checkpoint(
    thread_id: str, principal: UserPrincipalDep, session: SessionDep, body: StateAt | None = None
) -> dict[str, Any]:
    """RemoteGraph's get_state: the state at ``checkpoint`` (the present one), or the
    present state when it names none."""
    wanted = ((body.checkpoint if body else None) or {}).get("checkpoint_id")
    if wanted is None:
        return await get_state(thread_id, principal, session)
    return await get_state_at(thread_id, str(wanted), principal, session)


@router.post("/threads/{thread_id}/state")
async def update_state(thread_id: str, principal: UserPrincipalDep) -> dict[str, Any]:
    """A thread's state is its messages, written by its runs only."""
    raise ProblemError(
        404, "state_updates_unsupported", "a thread's state changes only through its runs"
    )


@router.post("/threads/{thread_id}/history")
async def get_history(
    thread_id: str, principal: UserPrincipalDep, session: SessionDep
) -> list[dict[str, Any]]:
    """Atelier keeps the present state only: the history is that one checkpoint."""
    return [await get_state(thread_id, principal, session)]


# -- runs -----------------------------------------------------------------------------------


def _modes(sent: list[str] | str | None, default: tuple[str, ...] = ("values",)) -> list[str]:
    # An empty value (the Python SDK's join_stream sends ``stream_mode=``) is the default.
    modes = [mode for mode in ([sent] if isinstance(sent, str) else sent or []) if mode]
    modes = modes or list(default)
    unknown = sorted(set(modes) - STREAM_MODES)
    if unknown:
        raise ProblemError(
            422,
            "unsupported_stream_mode",
            f"stream modes {', '.join(unknown)} are not supported here; "
            f"use {', '.join(sorted(STREAM_MODES))}",
        )
    return modes


def _location(thread: Thread, run_id: uuid.UUID, tail: str, modes: tuple[str, ...] = ()) -> str:
    # Relative to the API's root, as the LangGraph server sends it: the SDK joins it to its
    # base URL (which ends in /langgraph).
    query = "&".join(f"stream_mode={mode}" for mode in modes)
    return f"/threads/{thread.thread_id}/runs/{run_id}{tail}" + (f"?{query}" if query else "")


def _stream(
    resources: Resources,
    thread: Thread,
    run_id: uuid.UUID,
    modes: list[str],
    *,
    after_frame: int = 0,
    after_native: int = 0,
    cancel_on_disconnect: bool = False,
) -> Response:
    translator = LangGraphTranslator(thread, run_id, frozenset(modes))
    frames = translated(
        resources.runs.events(run_id, 0),
        translator,
        after_frame=after_frame,
        after_native=after_native,
        found=_found(resources, thread, run_id),
    )

    async def cancelled_when_left() -> AsyncIterator[Any]:
        try:
            async for batch in frames:
                yield batch
        finally:
            if cancel_on_disconnect and not translator.done:
                await resources.runs.cancel(run_id)

    location = _location(thread, run_id, "/stream", tuple(modes))
    response = event_stream(cancelled_when_left(), location)
    response.headers["content-location"] = _location(thread, run_id, "")
    return response


def _found(
    resources: Resources, thread: Thread, run_id: uuid.UUID
) -> Callable[[], Awaitable[list[Message]]]:
    return functools.partial(service.found, resources.sessionmaker, thread.conversation_id, run_id)


async def _ended(resources: Resources, thread: Thread, run_id: uuid.UUID) -> dict[str, Any]:
    """The thread's values once the run ended (or stopped for a person's decision);
    ``__error__`` says how it failed."""
    translator = LangGraphTranslator(thread, run_id, frozenset())
    await run_through(
        resources.runs.events(run_id, 0), translator, _found(resources, thread, run_id)
    )
    run, pending, messages = await service.ended_state(resources.sessionmaker, thread, run_id)
    state = present.values(messages)
    if pending:
        state["__interrupt__"] = [present.interrupt(a) for a in pending]
    if run is not None and run.error is not None and run.status != RunStatus.COMPLETED:
        state["__error__"] = {"error": run.error.code, "message": run.error.message}
    return state


def _failed(exc: Exception) -> dict[str, Any]:
    """LangGraph's way of saying a waited-for run could not be answered."""
    if isinstance(exc, ProblemError | DomainError):
        return {"__error__": {"error": exc.code, "message": exc.detail}}
    return {"__error__": {"error": "internal_error", "message": "the run's end is unknown"}}


@router.post("/threads/{thread_id}/runs")
async def create_run(
    thread_id: str, body: RunCreate, principal: UserPrincipalDep, resources: ResourcesDep
) -> Response:
    thread, run_id, _ = await service.begin(resources, principal, thread_id, body)
    run = await service.run(resources.sessionmaker, run_id)
    assert run is not None
    return Response(
        json.dumps(present.run(run, thread.thread_id)),
        media_type="application/json",
        headers={"content-location": _location(thread, run_id, "")},
    )


@router.post("/threads/{thread_id}/runs/stream")
async def stream_run(
    thread_id: str, body: RunCreate, principal: UserPrincipalDep, resources: ResourcesDep
) -> Response:
    modes = _modes(body.stream_mode)
    thread, run_id, after = await service.begin(resources, principal, thread_id, body)
    return _stream(
        resources,
        thread,
        run_id,
        modes,
        after_native=after,
        cancel_on_disconnect=body.on_disconnect == "cancel",
    )


@router.post("/threads/{thread_id}/runs/wait")
async def wait_run(
    thread_id: str, body: RunCreate, principal: UserPrincipalDep, resources: ResourcesDep
) -> Response:
    thread, run_id, _ = await service.begin(resources, principal, thread_id, body)
    headers = {
        "location": _location(thread, run_id, "/join"),
        "content-location": _location(thread, run_id, ""),
    }
    return json_when_done(_ended(resources, thread, run_id), headers, _failed)


@router.get("/threads/{thread_id}/runs")
async def list_runs(
    thread_id: str,
    principal: UserPrincipalDep,
    session: SessionDep,
    limit: Annotated[int, Query(ge=1, le=1000)] = 10,
    offset: Annotated[int, Query(ge=0, le=100_000)] = 0,
    status: Annotated[str | None, Query(max_length=16)] = None,
) -> list[dict[str, Any]]:
    conversation = await service.get(session, principal, thread_id)
    wanted = None
    if status is not None:
        wanted = [native for native, theirs in present.RUN_STATUS.items() if theirs == status]
    rows = await service.runs(session, conversation, wanted, offset, limit)
    return [present.run(run, Thread.of(conversation).thread_id) for run in rows]


@router.get("/threads/{thread_id}/runs/{run_id}")
async def get_run(
    thread_id: str, run_id: str, principal: UserPrincipalDep, session: SessionDep
) -> dict[str, Any]:
    thread, run = await service.owned_run(session, principal, thread_id, run_id)
    return present.run(run, thread.thread_id)


@router.post("/threads/{thread_id}/runs/{run_id}/cancel")
async def cancel_run(
    thread_id: str,
    run_id: str,
    principal: UserPrincipalDep,
    resources: ResourcesDep,
    wait: Annotated[bool, Query()] = False,
    action: Annotated[str, Query(max_length=16)] = "interrupt",
) -> Response:
    """Interrupt: the run stops and keeps what it did. Rollback is not supported here (422):
    start the next run with ``multitask_strategy="rollback"`` to undo the active one."""
    if action != "interrupt":
        raise ProblemError(422, "unsupported_action", "only action=interrupt is supported")
    async with resources.sessionmaker() as session:
        thread, run = await service.owned_run(session, principal, thread_id, run_id)
    if run.status in UNENDED_STATUSES:
        await resources.runs.cancel(run.id)
    if not wait:
        return Response(status_code=202)
    await _ended(resources, thread, run.id)
    return Response(status_code=204)


@router.get("/threads/{thread_id}/runs/{run_id}/join")
async def join_run(
    thread_id: str, run_id: str, principal: UserPrincipalDep, resources: ResourcesDep
) -> Response:
    async with resources.sessionmaker() as session:
        thread, run = await service.owned_run(session, principal, thread_id, run_id)
    return json_when_done(_ended(resources, thread, run.id), {}, _failed)


@router.get("/threads/{thread_id}/runs/{run_id}/stream")
async def join_stream(
    thread_id: str,
    run_id: str,
    principal: UserPrincipalDep,
    resources: ResourcesDep,
    stream_mode: Annotated[list[str] | None, Query(max_length=8)] = None,
    cancel_on_disconnect: Annotated[bool, Query()] = False,
    last_event_id_header: Annotated[
        str | None, Header(alias="last-event-id", max_length=32)
    ] = None,
) -> Response:
    """The run's stream from its start, or after the frame of ``Last-Event-ID``."""
    after = last_event_id(last_event_id_header, None)
    async with resources.sessionmaker() as session:
        thread, run = await service.owned_run(session, principal, thread_id, run_id)
    return _stream(
        resources,
        thread,
        run.id,
        _modes(stream_mode),
        after_frame=after,
        cancel_on_disconnect=cancel_on_disconnect,
    )
