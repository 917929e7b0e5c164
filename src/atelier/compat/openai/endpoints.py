"""``/openai/v1/responses``: the Responses API that the ``openai`` client calls, on the
same agents, conversations and runs as ``/v1`` (docs/compat.md)."""

from __future__ import annotations

import dataclasses
import functools
import uuid
from typing import Annotated, Any

from fastapi import APIRouter, BackgroundTasks, Query, Response
from fastapi.responses import JSONResponse

from atelier.compat.openai import present, service
from atelier.compat.openai.schemas import (
    ApprovalResponse,
    FunctionCallOutput,
    MessageItem,
    ResponseCreate,
    ServerItem,
)
from atelier.compat.openai.translate import ResponsesTranslator
from atelier.http.deps import CallerDep, ResourcesDep
from atelier.http.errors import ProblemError
from atelier.http.sse import EventStreamResponse
from atelier.http.translate import run_through, translated
from atelier.resources import Resources
from atelier.runs import UNENDED_STATUSES, WAITING_STATUSES, RunRequest, RunStatus
from atelier.runs.models import Run
from atelier.runs.schemas import client_tool_specs
from atelier.tenants.principal import Principal

router = APIRouter(prefix="/openai/v1", tags=["openai"])
MAX_INSTRUCTIONS = 100_000


def _caller(principal: Principal, user: str | None = None) -> Principal:
    """The end user: an end-user token's, else ``X-User-ID``, else the body's ``user``."""
    if principal.is_end_user and user is not None and user != principal.user_id:
        raise ProblemError(403, "user_mismatch", "the token is for another user than `user` names")
    if principal.user_id is None and user is not None:
        principal = dataclasses.replace(principal, user_id=user)
    if principal.user_id is None:
        raise ProblemError(
            400, "user_id_required", "send the end user's id in X-User-ID (or as user)"
        )
    return principal


async def _present(resources: Resources, run_id: uuid.UUID, after: int = 0) -> dict[str, Any]:
    return await service.current(resources.sessionmaker, run_id, after)


def _translator(run: Run, shell: dict[str, Any]) -> ResponsesTranslator:
    client = frozenset(tool["name"] for tool in run.client_tools or [])
    return ResponsesTranslator(run.id, shell, client)


def _stream(
    resources: Resources,
    run: Run,
    shell: dict[str, Any],
    *,
    after: int = 0,
    after_frame: int = 0,
    after_native: int = 0,
) -> Response:
    """The response's events: the run's from its start -- or, for a response that took
    function call results, from where the run waited for them (``after``)."""
    translator = _translator(run, shell)
    frames = translated(
        resources.runs.events(run.id, after),
        translator,
        after_frame=after_frame,
        after_native=after_native,
        ids="none",  # the Responses API numbers its events in their data
        found=functools.partial(service.question_seq, resources.sessionmaker, run.id),
    )
    # Where the same stream is read again from its start (an Idempotency-Key's replay).
    location = f"{router.prefix}/responses/{present.response_id(run.id, after)}?stream=true"
    return EventStreamResponse(
        frames, headers={"location": location}, on_failure=translator.stream_failed
    )


async def _finished(
    resources: Resources, run: Run, shell: dict[str, Any], after: int = 0
) -> dict[str, Any]:
    """The response once its run ended (or stopped to wait for a person or its caller)."""
    await run_through(resources.runs.events(run.id, after), _translator(run, shell))
    return await _present(resources, run.id, after)


@router.post("/responses")
async def create_response(
    body: ResponseCreate, principal: CallerDep, resources: ResourcesDep
) -> Response:
    principal = _caller(principal, body.user)
    items = (
        [MessageItem(role="user", content=body.input)]
        if isinstance(body.input, str)
        else body.input
    )
    decisions = [item for item in items if isinstance(item, ApprovalResponse)]
    if items and isinstance(items[-1], FunctionCallOutput):  # the caller answers its calls
        outputs = [item for item in items if isinstance(item, FunctionCallOutput)]
        if decisions:
            raise ProblemError(
                422, "invalid_input", "send function call outputs and approvals apart"
            )
        calls = [output.call_id for output in outputs]
        previous = body.previous_response_id or await service.waiting_on(
            resources.sessionmaker, principal, calls
        )
        if previous is None:
            raise ProblemError(
                409, "nothing_to_resume", "no response waits for these function call outputs"
            )
        return await _answered(resources, principal, body, previous, outputs)
    if decisions:
        if len(decisions) != len(items) or body.previous_response_id is None:
            raise ProblemError(
                422,
                "invalid_input",
                "approval responses go alone, with the previous_response_id that asked",
            )
        return await _decided(resources, principal, body, decisions)
    guidance = [body.instructions or ""] + [
        item.text
        for item in items
        if isinstance(item, MessageItem) and item.role in ("system", "developer")
    ]
    said = [
        item
        for item in items
        if not isinstance(item, ServerItem)
        and not (isinstance(item, MessageItem) and item.role in ("system", "developer"))
    ]
    last = said[-1] if said else None
    if not isinstance(last, MessageItem) or last.role != "user":
        raise ProblemError(422, "invalid_input", "the input ends with the user's message")
    if not last.text.strip():
        raise ProblemError(422, "invalid_input", "the user message is empty")
    instructions = "\n\n".join(part for part in guidance if part) or None
    if instructions is not None and len(instructions) > MAX_INSTRUCTIONS:
        raise ProblemError(422, "invalid_input", "the instructions are too long")
    earlier = service.turns_of(said[:-1])
    asked = [last.text]

    conversation_id, model_id, made = await service.conversation_for(
        resources, principal, body, earlier
    )
    request = RunRequest(
        principal,
        conversation_id,
        "agent",
        asked[0],
        model_id,
        instructions=instructions,
        client_tools=client_tool_specs([tool.client_tool() for tool in body.tools]),
    )
    try:
        run_id = await resources.runs.start(request)
    except Exception:
        if made:  # refused (a budget, a busy conversation...): nothing is left behind
            await (await resources.runs.remove_conversation(principal, conversation_id, "agent"))()
        raise
    run, shell = await service.started(resources.sessionmaker, run_id)
    shell["background"] = body.background
    if body.stream:
        return _stream(resources, run, shell)
    if body.background:
        return JSONResponse({**await _present(resources, run_id), "background": True})
    return JSONResponse(await _finished(resources, run, shell))


async def _decided(
    resources: Resources,
    principal: Principal,
    body: ResponseCreate,
    decisions: list[ApprovalResponse],
) -> Response:
    """Decisions on the calls a response asked about: the same response goes on."""
    assert body.previous_response_id is not None
    _, after = present.segment_of(body.previous_response_id)
    async with resources.sessionmaker() as session:
        run = await service.owned(session, principal, body.previous_response_id)
        shell = await service.shell(session, run, after)
    if run.status not in WAITING_STATUSES:
        raise ProblemError(409, "nothing_to_resume", "that response waits for no decision")
    paused = run.paused_event_id or 0
    for decision in decisions:
        call_id = decision.approval_request_id.removeprefix("mcpr_")
        await resources.runs.decide(run, call_id, decision.approve, decision.reason)
    if await service.still_waiting(resources.sessionmaker, run.id):  # more to decide
        return JSONResponse(await _present(resources, run.id, after))
    if body.stream:
        return _stream(resources, run, shell, after=after, after_native=paused)
    if body.background:
        return JSONResponse(await _present(resources, run.id, after))
    return JSONResponse(await _finished(resources, run, shell, after))


async def _answered(
    resources: Resources,
    principal: Principal,
    body: ResponseCreate,
    previous: str,
    outputs: list[FunctionCallOutput],
) -> Response:
    """The outputs of the function calls a response made: a new response of the same run,
    from where it waited for them."""
    async with resources.sessionmaker() as session:
        run = await service.owned(session, principal, previous)
    if run.status != RunStatus.AWAITING_TOOL_RESULT or run.paused_event_id is None:
        raise ProblemError(409, "nothing_to_resume", "that response waits for no function output")
    after = run.paused_event_id
    await resources.runs.answer(run, [(o.call_id, o.text, False) for o in outputs])
    run, shell = await service.started(resources.sessionmaker, run.id, after)
    shell["background"] = body.background
    if await service.still_waiting(resources.sessionmaker, run.id):  # more to answer
        return JSONResponse(await _present(resources, run.id, after))
    if body.stream:
        return _stream(resources, run, shell, after=after)
    if body.background:
        return JSONResponse(await _present(resources, run.id, after))
    return JSONResponse(await _finished(resources, run, shell, after))


@router.get("/responses/{response_id}")
async def retrieve_response(
    response_id: str,
    principal: CallerDep,
    resources: ResourcesDep,
    stream: Annotated[bool, Query()] = False,
    starting_after: Annotated[int | None, Query(ge=0, le=2**53)] = None,
) -> Response:
    """The response; with ``stream``, its events from the start (or after
    ``starting_after``), live until it ends."""
    principal = _caller(principal)
    _, segment = present.segment_of(response_id[:64])
    async with resources.sessionmaker() as session:
        run = await service.owned(session, principal, response_id[:64])
        if not stream:
            return JSONResponse(await service.snapshot(session, run, segment))
        shell = await service.shell(session, run, segment)
    after = starting_after + 1 if starting_after is not None else 0
    return _stream(resources, run, shell, after=segment, after_frame=after)


@router.post("/responses/{response_id}/cancel")
async def cancel_response(
    response_id: str, principal: CallerDep, resources: ResourcesDep
) -> Response:
    """Stops the run (it keeps what it did) and answers once it has ended."""
    principal = _caller(principal)
    async with resources.sessionmaker() as session:
        run = await service.owned(session, principal, response_id[:64])
        shell = await service.shell(session, run)
    if run.status in UNENDED_STATUSES:
        await resources.runs.cancel(run.id)
        await run_through(resources.runs.events(run.id, 0), _translator(run, shell))
    return JSONResponse(await _present(resources, run.id))


@router.delete("/responses/{response_id}")
async def delete_response(
    response_id: str,
    principal: CallerDep,
    resources: ResourcesDep,
    background: BackgroundTasks,
) -> dict[str, Any]:
    """A response is a run of a conversation, and runs are not deleted one by one: this
    deletes the conversation (the whole chain of responses, and its files)."""
    principal = _caller(principal)
    async with resources.sessionmaker() as session:
        run = await service.owned(session, principal, response_id[:64])
    background.add_task(
        await resources.runs.remove_conversation(principal, run.conversation_id, "agent")
    )
    return {"id": response_id, "object": "response.deleted", "deleted": True}


@router.get("/responses/{response_id}/input_items")
async def list_input_items(
    response_id: str,
    principal: CallerDep,
    resources: ResourcesDep,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    order: Annotated[str, Query(pattern="^(asc|desc)$")] = "desc",
) -> dict[str, Any]:
    """What the response was given: the user's message, and the decisions it was sent."""
    principal = _caller(principal)
    async with resources.sessionmaker() as session:
        run = await service.owned(session, principal, response_id[:64])
        items = await service.input_items(session, run)
    if order == "desc":
        items.reverse()
    page = items[:limit]
    return {
        "object": "list",
        "data": page,
        "first_id": page[0]["id"] if page else None,
        "last_id": page[-1]["id"] if page else None,
        "has_more": len(items) > limit,
    }
