"""``/ai-sdk``: the endpoints ``useChat``'s default transport calls (point its ``api`` at
``/ai-sdk/chat``). Thin: the rules are the services', the wire the translator's."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Path, Response

from atelier.compat.ai_sdk import service
from atelier.compat.ai_sdk.schemas import CHAT_ID, ChatRequest
from atelier.compat.ai_sdk.translate import STREAM_HEADERS, UIMessageTranslator
from atelier.http.deps import ResourcesDep, UserPrincipalDep
from atelier.http.errors import ProblemError
from atelier.http.sse import EventStreamResponse
from atelier.http.translate import translated
from atelier.llm.base import ToolSpec
from atelier.resources import Resources
from atelier.runs import UNENDED_STATUSES, RunRequest
from atelier.runs.schemas import client_tool_specs
from atelier.tenants.principal import Principal

router = APIRouter(prefix="/ai-sdk", tags=["ai-sdk"])
ChatId = Annotated[str, Path(pattern=CHAT_ID)]


def _stream(
    resources: Resources,
    run_id: uuid.UUID,
    conversation_id: uuid.UUID,
    after: int = 0,
    answered: frozenset[str] = frozenset(),
    by_page: frozenset[str] = frozenset(),
) -> Response:
    """The run's assistant message from its start -- or, after a pause the page answered,
    from there on (the same message goes on)."""
    translator = UIMessageTranslator(
        str(run_id), str(conversation_id), answered=answered, by_page=by_page
    )
    frames = translated(resources.runs.events(run_id, after), translator, ids="none")
    return EventStreamResponse(frames, headers=STREAM_HEADERS, on_failure=translator.stream_failed)


@router.post("/chat")
async def chat(body: ChatRequest, principal: UserPrincipalDep, resources: ResourcesDep) -> Response:
    """``submit-message``: a run with the last user message (a new id starts a chat from
    the history sent; a known one must send the stored history). A last assistant message
    carries the page's answers to the run that waits (approvals, client tool outputs).
    ``regenerate-message``: the last answer again."""
    last = body.messages[-1]
    if last.role == "assistant":
        return await _answered(resources, principal, body)
    if body.trigger == "regenerate-message":
        return await _regenerated(resources, principal, body)
    if last.role != "user" or not last.text().strip():
        raise ProblemError(422, "invalid_input", "the messages end with the user's message")
    conversation_id, model_id, made = await service.open_chat(
        resources,
        principal,
        body.id,
        service.said_by(body.messages[:-1]),
        agent_ref=body.agent,
        model=body.model,
    )
    instructions = "\n\n".join(m.text() for m in body.messages if m.role == "system") or None
    try:
        tools = client_tool_specs(body.client_tools)
    except ValueError as exc:
        raise ProblemError(422, "invalid_input", str(exc)) from exc
    request = RunRequest(
        principal,
        conversation_id,
        "agent",
        last.text(),
        model_id,
        instructions=instructions,
        client_tools=tools,
    )
    try:
        run_id = await resources.runs.start(request)
    except Exception:
        if made:  # refused (a budget, a busy conversation...): nothing is left behind
            await (await resources.runs.remove_conversation(principal, conversation_id, "agent"))()
        raise
    return _stream(resources, run_id, conversation_id)


async def _answered(resources: Resources, principal: Principal, body: ChatRequest) -> Response:
    run, waited = await service.waiting(resources, principal, body.id)
    decisions, outputs = service.answers(body.messages[-1], waited)
    if not decisions and not outputs:
        raise ProblemError(
            409, "nothing_to_resume", "the last message answers none of the calls the run waits on"
        )
    paused = run.paused_event_id or 0
    for call_id, approved, reason in decisions:
        await resources.runs.decide(run, call_id, approved, reason)
    if outputs:
        await resources.runs.answer(run, outputs)
    by_page = frozenset(call for call, _, _ in outputs)
    answered = by_page | {call for call, _, _ in decisions}
    return _stream(
        resources, run.id, run.conversation_id, paused, answered=answered, by_page=by_page
    )


async def _regenerated(resources: Resources, principal: Principal, body: ChatRequest) -> Response:
    earlier = await service.last_run(resources, principal, body.id)
    if body.messageId is not None and body.messageId != str(earlier.id):
        raise ProblemError(
            409, "not_the_last_answer", "only the chat's last answer can be regenerated"
        )
    if earlier.status in UNENDED_STATUSES:
        raise ProblemError(409, "run_not_ended", "the last answer has not ended: stop it first")
    request = RunRequest(
        principal,
        earlier.conversation_id,
        "agent",
        earlier.input,
        None,
        supersedes=earlier.id,
        client_tools=tuple(ToolSpec.of(tool) for tool in earlier.client_tools or []),
    )
    run_id = await resources.runs.start(request)
    return _stream(resources, run_id, earlier.conversation_id)


@router.get("/chat/{chat_id}/stream", responses={204: {"description": "no stream is open"}})
async def resume_stream(
    chat_id: ChatId, principal: UserPrincipalDep, resources: ResourcesDep
) -> Response:
    """``useChat({resume: true})``: the chat's open stream again, from its start; ``204``
    when none is open."""
    run = await service.streaming(resources, principal, chat_id)
    if run is None:
        return Response(status_code=204)
    return _stream(resources, run.id, run.conversation_id)


@router.get("/chat/{chat_id}/messages")
async def chat_messages(
    chat_id: ChatId, principal: UserPrincipalDep, resources: ResourcesDep
) -> list[dict[str, Any]]:
    """The chat's messages as UIMessages (``useChat``'s ``messages`` to start from), with
    the ids the streams gave."""
    return await service.ui_messages(resources, principal, chat_id)
