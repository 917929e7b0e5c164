from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Header, Path, Query, Response

import atelier.runs.service as service
from atelier.conversations import messages
from atelier.conversations.service import get_owned
from atelier.http.deps import ResourcesDep, SessionDep, UserPrincipalDep
from atelier.http.errors import ProblemError
from atelier.http.translate import EVENT_STREAM, event_stream, last_event_id, native
from atelier.llm.base import ToolSpec
from atelier.resources import Resources
from atelier.runs.environment import RunRequest
from atelier.runs.events import UNENDED_STATUSES
from atelier.runs.models import Run
from atelier.runs.schemas import (
    DecisionIn,
    MessageList,
    MessageOut,
    RegenerateIn,
    RunIn,
    RunList,
    RunOut,
    Timeline,
    ToolResultsIn,
    client_tool_specs,
)
from atelier.runs.timeline import timeline

router = APIRouter(prefix="/v1/conversations", tags=["runs"])


@router.post(
    "/{conversation_id}/runs",
    status_code=202,
    responses={
        **EVENT_STREAM,
        402: {"description": "budget_exceeded: a budget that binds the run is spent"},
        409: {"description": "conversation_busy: a run is active (see Retry-After)"},
        413: {"description": "context_window_exceeded: the input does not fit the model"},
        503: {"description": "at_capacity, server_busy: this process has all it takes on"},
    },
)
async def start_run(
    conversation_id: uuid.UUID,
    body: RunIn,
    principal: UserPrincipalDep,
    resources: ResourcesDep,
    accept: Annotated[str, Header()] = "application/json",
) -> Response:
    request = RunRequest(
        principal,
        conversation_id,
        "agent",
        body.input,
        body.model_id,
        strategy=body.multitask_strategy,
        client_tools=client_tool_specs(body.client_tools),
    )
    return await started(resources, request, accept)


@router.post(
    "/{conversation_id}/runs/{run_id}/regenerate",
    status_code=202,
    responses={
        **EVENT_STREAM,
        409: {"description": "conversation_busy, or run_not_ended: that run is still going"},
    },
)
async def regenerate_run(
    conversation_id: uuid.UUID,
    run_id: uuid.UUID,
    principal: UserPrincipalDep,
    resources: ResourcesDep,
    body: RegenerateIn | None = None,
    accept: Annotated[str, Header()] = "application/json",
) -> Response:
    """A new run with the same input; the earlier run's messages stay, marked superseded
    (and out of the model's history), once the new run starts."""
    body = body or RegenerateIn()
    async with resources.sessionmaker() as session:
        earlier = await service.owned_run(session, principal, conversation_id, run_id)
    if earlier.status in UNENDED_STATUSES:
        raise ProblemError(409, "run_not_ended", "that run has not ended: cancel it first")
    request = RunRequest(
        principal,
        conversation_id,
        "agent",
        earlier.input,
        body.model_id,
        strategy=body.multitask_strategy,
        supersedes=earlier.id,
        client_tools=tuple(ToolSpec.of(tool) for tool in earlier.client_tools or []),
    )
    return await started(resources, request, accept)


async def started(resources: Resources, request: RunRequest, accept: str) -> Response:
    # Everything that can fail as plain HTTP happens before a stream starts (BUG-022).
    # No session is held by the response: the run opens its own (BUG-004).
    run_id = await resources.runs.start(request)
    if "text/event-stream" in accept:
        location = f"/v1/conversations/{request.conversation_id}/runs/{run_id}/events"
        return event_stream(native(resources.runs.events(run_id, 0)), location)
    async with resources.sessionmaker() as session:
        run = await session.get(Run, run_id)
        assert run is not None
        out = RunOut.of(run)
    return Response(out.model_dump_json(), status_code=202, media_type="application/json")


@router.get("/{conversation_id}/runs")
async def list_runs(
    conversation_id: uuid.UUID,
    principal: UserPrincipalDep,
    session: SessionDep,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    run_ids: Annotated[list[uuid.UUID] | None, Query(alias="id", max_length=200)] = None,
) -> RunList:
    """Newest first; ``id`` (repeated): those runs only (the runs of a page of messages)."""
    conversation = await get_owned(session, principal, conversation_id)
    runs = await service.list_runs(session, conversation.id, limit, run_ids)
    return RunList(data=[RunOut.of(run) for run in runs])


@router.get("/{conversation_id}/runs/{run_id}")
async def get_run(
    conversation_id: uuid.UUID, run_id: uuid.UUID, principal: UserPrincipalDep, session: SessionDep
) -> RunOut:
    return RunOut.of(await service.owned_run(session, principal, conversation_id, run_id))


@router.get("/{conversation_id}/runs/{run_id}/timeline")
async def run_timeline(
    conversation_id: uuid.UUID, run_id: uuid.UUID, principal: UserPrincipalDep, session: SessionDep
) -> Timeline:
    """What the run did, step by step, from what is stored: each model call (tokens, cost,
    time to first token, duration), tool call (arguments, result, duration), approval (the
    decision, when, by whom), the files it changed and how it ended; so far, while it runs."""
    return await timeline(
        session, await service.owned_run(session, principal, conversation_id, run_id)
    )


@router.get("/{conversation_id}/runs/{run_id}/events", responses=EVENT_STREAM)
async def run_events(
    conversation_id: uuid.UUID,
    run_id: uuid.UUID,
    principal: UserPrincipalDep,
    resources: ResourcesDep,
    after: Annotated[int | None, Query(ge=0, le=2**53)] = None,
    last_event_id_header: Annotated[
        str | None, Header(alias="last-event-id", max_length=32)
    ] = None,
) -> Response:
    """Replays the events after the client's last id, then follows until the terminal one."""
    resume = last_event_id(last_event_id_header, after)
    async with resources.sessionmaker() as session:
        await service.owned_run(session, principal, conversation_id, run_id)
    location = f"/v1/conversations/{conversation_id}/runs/{run_id}/events"
    return event_stream(native(resources.runs.events(run_id, resume)), location)


@router.post("/{conversation_id}/runs/{run_id}/cancel", status_code=202)
async def cancel_run(
    conversation_id: uuid.UUID,
    run_id: uuid.UUID,
    principal: UserPrincipalDep,
    resources: ResourcesDep,
) -> RunOut:
    """Idempotent: a run that already ended is returned unchanged."""
    return RunOut.of(await resources.runs.cancel_owned(principal, conversation_id, run_id, "agent"))


@router.post(
    "/{conversation_id}/runs/{run_id}/approvals/{call_id}",
    responses={409: {"description": "already_decided: the call has its decision"}},
)
async def decide(
    conversation_id: uuid.UUID,
    run_id: uuid.UUID,
    call_id: Annotated[str, Path(min_length=1, max_length=128)],
    body: DecisionIn,
    principal: UserPrincipalDep,
    resources: ResourcesDep,
) -> RunOut:
    """A person approves or denies a call the run waits with; from any process. Once every
    call is decided the run goes on (``approval.resolved``, then the tool or the denial)."""
    async with resources.sessionmaker() as session:
        run = await service.owned_run(session, principal, conversation_id, run_id)
    await resources.runs.decide(run, call_id, body.decision == "approve", body.reason)
    async with resources.sessionmaker() as session:
        return RunOut.of(await service.owned_run(session, principal, conversation_id, run_id))


@router.post(
    "/{conversation_id}/runs/{run_id}/tool-results",
    responses={
        404: {"description": "not_found: the run waits for no result of such a call"},
        409: {"description": "already_decided: the call has its result"},
    },
)
async def tool_results(
    conversation_id: uuid.UUID,
    run_id: uuid.UUID,
    body: ToolResultsIn,
    principal: UserPrincipalDep,
    resources: ResourcesDep,
) -> RunOut:
    """Results of the client tools the run waits on (``tool.requested``), from any
    process; all are recorded or none. Once every call it waits on has its result (and
    every approval its decision) the run goes on: ``tool.completed`` for each, then the
    model is called with them."""
    async with resources.sessionmaker() as session:
        run = await service.owned_run(session, principal, conversation_id, run_id)
    answers = [(r.call_id, r.text(), r.is_error) for r in body.results]
    await resources.runs.answer(run, answers)
    async with resources.sessionmaker() as session:
        return RunOut.of(await service.owned_run(session, principal, conversation_id, run_id))


@router.get("/{conversation_id}/messages")
async def list_messages(
    conversation_id: uuid.UUID,
    principal: UserPrincipalDep,
    session: SessionDep,
    after_seq: Annotated[int, Query(ge=0, le=2**53)] = 0,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    before_seq: Annotated[int | None, Query(ge=1, le=2**53)] = None,
) -> MessageList:
    """In order; ``before_seq``: the last ``limit`` before that number (the newest page:
    ``before_seq=9007199254740992``), to page back from."""
    conversation = await get_owned(session, principal, conversation_id)
    rows = await messages.page(session, conversation.id, after_seq, limit, before_seq)
    return MessageList(data=[MessageOut.model_validate(row, from_attributes=True) for row in rows])
