from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Response
from sqlalchemy.ext.asyncio import AsyncSession

from atelier.chats.service import resolve_model
from atelier.conversations.service import get_owned
from atelier.http.deps import ResourcesDep, SessionDep, UserPrincipalDep
from atelier.http.errors import ProblemError
from atelier.http.scope import Principal
from atelier.http.sse import EventStreamResponse
from atelier.llm.context import context_usage
from atelier.llm.offline import estimate_tokens
from atelier.resources import Resources
from atelier.runs import events, service
from atelier.runs.models import Run
from atelier.runs.schemas import MessageList, RunIn, RunList, RunOut

router = APIRouter(prefix="/v1/conversations", tags=["runs"])

EVENT_STREAM: dict[int | str, dict[str, Any]] = {
    200: {"content": {"text/event-stream": {}}, "description": "the run's events (SSE)"}
}


def _stream(resources: Resources, run_id: uuid.UUID, after: int) -> EventStreamResponse:
    """From memory if the run executes in this process, else from the shared log."""
    run = resources.runs.local.get(run_id)
    if run is not None:
        return EventStreamResponse(events.follow_local(run.events, resources.coordination, after))
    return EventStreamResponse(
        events.follow(
            resources.coordination,
            resources.sessionmaker,
            run_id,
            after,
            settle_seconds=resources.settings.title_wait_seconds + 5,
        )
    )


@router.post(
    "/{conversation_id}/runs",
    status_code=202,
    responses={
        **EVENT_STREAM,
        409: {"description": "conversation_busy: a run is active (see Retry-After)"},
        413: {"description": "context_window_exceeded: the input does not fit the model"},
    },
)
async def start_run(
    conversation_id: uuid.UUID,
    body: RunIn,
    principal: UserPrincipalDep,
    resources: ResourcesDep,
    accept: Annotated[str, Header()] = "application/json",
) -> Response:
    # Everything that can fail as plain HTTP happens before a stream starts (BUG-022).
    # No session is held by the response: the run opens its own (BUG-004).
    async with resources.sessionmaker() as session:
        conversation = await get_owned(session, principal, conversation_id)
        model = await resolve_model(
            session, body.model_id or conversation.model_id or resources.settings.default_model
        )
        if resources.models.get(model.provider) is None:
            raise ProblemError(
                503, "model_unavailable", f"provider {model.provider!r} is not configured"
            )
        estimate = conversation.estimated_context_tokens + estimate_tokens(body.input)
        usage = context_usage(estimate, model.context_window)  # the one guarded place (BUG-008)
        if usage.status == "exceeded":
            raise ProblemError(
                413,
                "context_window_exceeded",
                f"about {estimate} tokens do not fit {model.id}'s window of "
                f"{model.context_window}; start a new conversation",
            )
        wants_title = conversation.title is None and conversation.last_message_seq == 0
    run_id = await resources.runs.start(conversation, model, body.input, wants_title=wants_title)
    if "text/event-stream" in accept:
        return _stream(resources, run_id, after=0)
    async with resources.sessionmaker() as session:
        run = await session.get(Run, run_id)
        assert run is not None
        out = service.present_run(run)
    return Response(out.model_dump_json(), status_code=202, media_type="application/json")


@router.get("/{conversation_id}/runs")
async def list_runs(
    conversation_id: uuid.UUID,
    principal: UserPrincipalDep,
    session: SessionDep,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> RunList:
    conversation = await get_owned(session, principal, conversation_id)
    runs = await service.list_runs(session, conversation, limit)
    return RunList(data=[service.present_run(run) for run in runs])


async def _owned_run(
    session: AsyncSession, principal: Principal, conversation_id: uuid.UUID, run_id: uuid.UUID
) -> Run:
    conversation = await get_owned(session, principal, conversation_id)
    run = await service.get_run(session, conversation, run_id)
    if run is None:
        raise ProblemError(404, "not_found", "no such run")
    return run


@router.get("/{conversation_id}/runs/{run_id}")
async def get_run(
    conversation_id: uuid.UUID, run_id: uuid.UUID, principal: UserPrincipalDep, session: SessionDep
) -> RunOut:
    return service.present_run(await _owned_run(session, principal, conversation_id, run_id))


@router.get("/{conversation_id}/runs/{run_id}/events", responses=EVENT_STREAM)
async def run_events(
    conversation_id: uuid.UUID,
    run_id: uuid.UUID,
    principal: UserPrincipalDep,
    resources: ResourcesDep,
    after: Annotated[int | None, Query(ge=0, le=2**53)] = None,
    last_event_id: Annotated[str | None, Header(max_length=32)] = None,
) -> Response:
    """Replays the events after the client's last id, then follows until the terminal one."""
    resume = after
    if last_event_id is not None:
        if not last_event_id.isdigit() or int(last_event_id) > 2**53:
            raise ProblemError(
                400, "invalid_last_event_id", "Last-Event-ID must be an event number"
            )
        resume = max(int(last_event_id), after or 0)
    async with resources.sessionmaker() as session:
        await _owned_run(session, principal, conversation_id, run_id)
    return _stream(resources, run_id, resume or 0)


@router.post("/{conversation_id}/runs/{run_id}/cancel", status_code=202)
async def cancel_run(
    conversation_id: uuid.UUID,
    run_id: uuid.UUID,
    principal: UserPrincipalDep,
    resources: ResourcesDep,
) -> RunOut:
    """Idempotent: a run that already ended is returned unchanged."""
    async with resources.sessionmaker() as session:
        run = await _owned_run(session, principal, conversation_id, run_id)
        out = service.present_run(run)
    if out.status in ("queued", "running"):
        await resources.runs.cancel(run_id)
    return out


@router.get("/{conversation_id}/messages")
async def list_messages(
    conversation_id: uuid.UUID,
    principal: UserPrincipalDep,
    session: SessionDep,
    after_seq: Annotated[int, Query(ge=0, le=2**53)] = 0,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> MessageList:
    conversation = await get_owned(session, principal, conversation_id)
    rows = await service.list_messages(session, conversation, after_seq, limit)
    return MessageList(data=[service.present_message(row) for row in rows])
