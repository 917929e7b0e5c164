"""``/ag-ui/agents/{agent}``: AG-UI's HTTP binding (what ``HttpAgent`` posts). Thin: the
conversation rules are shared with the AI SDK's, the wire is the translator's."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Annotated, Any

from fastapi import APIRouter, Path, Response

from atelier.compat.ag_ui.schemas import RunAgentInput
from atelier.compat.ag_ui.translate import AGUITranslator
from atelier.compat.ai_sdk import service
from atelier.compat.ai_sdk.schemas import output_text
from atelier.http.deps import ResourcesDep, UserPrincipalDep
from atelier.http.errors import ProblemError
from atelier.http.sse import EventBatch, EventStreamResponse
from atelier.http.translate import translated
from atelier.resources import Resources
from atelier.runs import RunRequest
from atelier.runs.schemas import ClientTool, client_tool_specs
from atelier.tenants.principal import Principal

router = APIRouter(prefix="/ag-ui", tags=["ag-ui"])
AgentRef = Annotated[str, Path(min_length=1, max_length=100)]
HEADERS = {"x-accel-buffering": "no"}


async def _cancelled_when_left(
    frames: AsyncIterator[EventBatch], cancel: Callable[[], Coroutine[Any, Any, None]], spawn: Any
) -> AsyncIterator[EventBatch]:
    """AG-UI stops a run by aborting its request (``HttpAgent.abortRun``): a client that
    leaves before the run's end cancels it."""
    finished = False
    try:
        async for batch in frames:
            yield batch
        finished = True
    finally:
        if not finished:
            spawn(cancel(), name="ag-ui-abort")  # on its own: this task is being torn down


def _stream(
    resources: Resources,
    body: RunAgentInput,
    run_id: uuid.UUID,
    conversation_id: uuid.UUID,
    after: int = 0,
) -> Response:
    history = [message.model_dump(exclude_none=True) for message in body.messages]
    translator = AGUITranslator(
        body.threadId, body.runId, str(run_id), str(conversation_id), history
    )
    frames = translated(resources.runs.events(run_id, after), translator, ids="none")

    async def cancel() -> None:
        await resources.runs.cancel(run_id)

    guarded = _cancelled_when_left(frames, cancel, resources.supervisor.spawn)
    return EventStreamResponse(guarded, headers=HEADERS, on_failure=translator.stream_failed)


@router.post("/agents/{agent}")
async def run_agent(
    agent: AgentRef, body: RunAgentInput, principal: UserPrincipalDep, resources: ResourcesDep
) -> Response:
    """A run of ``agent`` (its id or name) on the thread ``threadId`` (a conversation's
    id, or an id the client made). The input's last message is the user's; or a tool
    message answering the frontend tool calls the thread's run waits on; or ``resume``
    answers its interrupts (approvals: ``payload: {"approved": bool, "reason"?}``)."""
    if body.resume:
        return await _resumed(resources, principal, body)
    last = body.messages[-1] if body.messages else None
    if last is not None and last.role == "tool":
        return await _tool_results(resources, principal, body)
    if last is None or last.role != "user" or not last.text().strip():
        raise ProblemError(422, "invalid_input", "the messages end with the user's message")
    earlier = [
        (m.role, m.text())
        for m in body.messages[:-1]
        if m.role in ("user", "assistant") and m.text()
    ]
    try:
        tools = client_tool_specs(
            [
                ClientTool(name=t.name, description=t.description or None, parameters=t.parameters)
                for t in body.tools
            ]
        )
    except ValueError as exc:
        raise ProblemError(422, "invalid_input", f"tools: {exc}") from exc
    conversation_id, _, made = await service.open_chat(
        resources, principal, body.threadId, earlier, agent_ref=agent
    )
    guidance = [m.text() for m in body.messages if m.role in ("system", "developer")]
    guidance += [f"{c.description}: {c.value}" if c.description else c.value for c in body.context]
    request = RunRequest(
        principal,
        conversation_id,
        "agent",
        last.text(),
        None,
        instructions="\n\n".join(part for part in guidance if part) or None,
        client_tools=tools,
    )
    try:
        run_id = await resources.runs.start(request)
    except Exception:
        if made:
            await (await resources.runs.remove_conversation(principal, conversation_id, "agent"))()
        raise
    return _stream(resources, body, run_id, conversation_id)


async def _tool_results(
    resources: Resources, principal: Principal, body: RunAgentInput
) -> Response:
    run, waited = await service.waiting(resources, principal, body.threadId)
    open_calls = {a.call_id for a in waited if a.kind != "approval"}
    outputs = [
        (m.toolCallId, output_text(m.content), m.error is not None)
        for m in body.messages
        if m.role == "tool" and m.toolCallId in open_calls
    ]
    if not outputs:
        raise ProblemError(
            409, "nothing_to_resume", "no tool message answers a call the run waits on"
        )
    paused = run.paused_event_id or 0
    await resources.runs.answer(run, [(c, o, e) for c, o, e in outputs if c is not None])
    return _stream(resources, body, run.id, run.conversation_id, paused)


async def _resumed(resources: Resources, principal: Principal, body: RunAgentInput) -> Response:
    run, waited = await service.waiting(resources, principal, body.threadId)
    approvals = {a.call_id for a in waited if a.kind == "approval"}
    assert body.resume is not None
    answered = [entry for entry in body.resume if entry.interruptId in approvals]
    if not answered:
        raise ProblemError(409, "nothing_to_resume", "no resume entry answers an open interrupt")
    paused = run.paused_event_id or 0
    for entry in answered:
        payload = entry.payload if isinstance(entry.payload, dict) else {}
        approved = entry.status == "resolved" and payload.get("approved") is True
        reason = payload.get("reason")
        await resources.runs.decide(
            run, entry.interruptId, approved, reason if isinstance(reason, str) else None
        )
    return _stream(resources, body, run.id, run.conversation_id, paused)
