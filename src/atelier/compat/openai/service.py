"""The Responses API's rules and queries, on the conversations and runs of ``/v1``: the
endpoints parse and present; what a response is, continues and may do is decided here."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from atelier.agents import service as agents
from atelier.compat.openai import present
from atelier.compat.openai.schemas import (
    FunctionCallItem,
    FunctionCallOutput,
    MessageItem,
    ResponseCreate,
)
from atelier.conversations import forking, messages
from atelier.conversations import service as conversations
from atelier.conversations.messages import Turn
from atelier.conversations.models import Conversation, Message, reachable_by
from atelier.conversations.schemas import AgentConversationWrite
from atelier.errors import Conflict, NotFound
from atelier.resources import Resources
from atelier.runs import APPROVED, RunStatus, decided_approvals, pending_approvals
from atelier.runs.models import Approval, Run
from atelier.tenants.principal import Principal


async def owned(session: AsyncSession, principal: Principal, response: str) -> Run:
    """The run a response id names, if it is the caller's."""
    run = await session.scalar(
        select(Run)
        .join(Conversation, Conversation.id == Run.conversation_id)
        .where(
            Run.id == present.run_id_of(response),
            *reachable_by(principal),
            Conversation.kind == "agent",
        )
    )
    if run is None:
        raise NotFound("not_found", "no such response")
    return run


async def shell(session: AsyncSession, run: Run, after: int = 0) -> dict[str, Any]:
    """The response as it is before any output (what its stream's first events carry)."""
    return await snapshot(session, run, after, status="in_progress", items=[], usage=None)


def waits(asked: list[Approval]) -> list[int]:
    """Where the run stopped for its caller's function calls: the id of the last event of
    each such wait (its calls are asked together, under consecutive ids)."""
    ids = sorted(a.event_id for a in asked if a.event_id is not None)
    client = {a.event_id for a in asked if a.kind == present.CLIENT_TOOL}
    ends = []
    for index, event_id in enumerate(ids):
        last_of_wait = index + 1 == len(ids) or ids[index + 1] != event_id + 1
        if last_of_wait and any(e in client for e in range(_first_of(ids, index), event_id + 1)):
            ends.append(event_id)
    return ends


def _first_of(ids: list[int], index: int) -> int:
    while index > 0 and ids[index - 1] == ids[index] - 1:
        index -= 1
    return ids[index]


async def snapshot(session: AsyncSession, run: Run, after: int = 0, **given: Any) -> dict[str, Any]:
    """The response from what the run stored: the part of the run after event ``after``,
    up to where it next stopped for its caller's function calls."""
    conversation = await session.get(Conversation, run.conversation_id)
    asked: list[Approval] = []
    if "items" not in given or after:  # (a response's shell needs none of it)
        asked = list(
            await session.scalars(
                select(Approval).where(Approval.run_id == run.id).order_by(Approval.created_at)
            )
        )
    ends = waits(asked)
    if after and after not in ends:  # no response of the run starts there
        raise NotFound("not_found", "no such response")
    until = next((end for end in ends if end > after), None)
    if after:
        starts = [0, *ends]
        previous: str | None = present.response_id(run.id, max(s for s in starts if s < after))
    else:
        before = await session.scalar(
            select(Run.id)
            .where(Run.conversation_id == run.conversation_id, Run.created_at < run.created_at)
            .order_by(Run.created_at.desc())
            .limit(1)
        )
        previous = present.response_id(before) if before else None
    status = RunStatus(run.status) if until is None else RunStatus.AWAITING_TOOL_RESULT
    if "items" not in given:
        rows = await session.scalars(
            select(Message)
            .where(
                Message.run_id == run.id,
                Message.role != "user",
                Message.event_id > after,
                Message.event_id <= (until if until is not None else 2**62),
            )
            .order_by(Message.seq)
        )
        given["items"] = present.output(run.id, rows, asked)
    ended = status not in (RunStatus.QUEUED, RunStatus.RUNNING)
    return present.response(
        run,
        after=after,
        status=given.get("status", present.STATUS[status]),
        items=given["items"],
        usage_=given.get("usage", present.usage(run.input_tokens, run.output_tokens))
        if ended or "usage" in given
        else None,
        error_=present.error(run, status) if "status" not in given else None,
        previous=previous,
        metadata=conversation.metadata_ if conversation is not None else {},
    )


async def current(
    sessions: async_sessionmaker[AsyncSession], run_id: uuid.UUID, after: int = 0
) -> dict[str, Any]:
    """The response as its run's rows say now."""
    async with sessions() as session:
        run = await session.get(Run, run_id)
        assert run is not None
        return await snapshot(session, run, after)


async def started(
    sessions: async_sessionmaker[AsyncSession], run_id: uuid.UUID, after: int = 0
) -> tuple[Run, dict[str, Any]]:
    """The run, and its response's shell."""
    async with sessions() as session:
        run = await session.get(Run, run_id)
        assert run is not None
        return run, await shell(session, run, after)


def turns_of(items: list[Any]) -> list[Turn]:
    """Earlier turns a client sent, as stored messages: its messages, its function calls
    as the tool calls of the assistant's turn, their outputs as tool results."""
    turns: list[Turn] = []
    for item in items:
        if isinstance(item, MessageItem):
            turns.append(Turn("assistant" if item.role == "assistant" else "user", item.text))
        elif isinstance(item, FunctionCallItem):
            call: dict[str, Any] = {"type": "tool_call", "id": item.call_id, "name": item.name}
            call["arguments"] = item.input
            if turns and turns[-1].role == "assistant":
                turns[-1] = Turn("assistant", turns[-1].content, [*(turns[-1].parts or []), call])
            else:
                turns.append(Turn("assistant", "", [call]))
        elif isinstance(item, FunctionCallOutput):
            result: dict[str, Any] = {"type": "tool_result", "call_id": item.call_id}
            result |= {"content": item.text, "is_error": False}
            if turns and turns[-1].role == "tool":
                turns[-1] = Turn("tool", "", [*(turns[-1].parts or []), result])
            else:
                turns.append(Turn("tool", "", [result]))
    return turns


def _said(turns: list[tuple[str, str]]) -> list[tuple[str, str]]:
    return [(role, text) for role, text in turns if role in ("user", "assistant") and text]


async def _check_history(session: AsyncSession, previous: Run, earlier: list[Turn]) -> None:
    """A client that sends the history along with ``previous_response_id`` must send the
    one stored: what the user and the assistant said, in order."""
    up_to = await session.scalar(select(func.max(Message.seq)).where(Message.run_id == previous.id))
    stored = await messages.visible(session, previous.conversation_id, up_to or 0)
    if _said([(t.role, t.content) for t in earlier]) != _said(
        [(m.role, m.content) for m in stored]
    ):
        raise Conflict(
            "history_mismatch",
            "the input's earlier turns are not the conversation of previous_response_id; "
            "send only the new message with previous_response_id, or the whole history alone",
        )


async def waiting_on(
    sessions: async_sessionmaker[AsyncSession], principal: Principal, calls: list[str]
) -> str | None:
    """The response of the caller's that waits for these function calls' outputs (a client
    that resends the history names no previous response)."""
    async with sessions() as session:
        run = await session.scalar(
            select(Run)
            .join(Approval, Approval.run_id == Run.id)
            .join(Conversation, Conversation.id == Run.conversation_id)
            .where(
                *reachable_by(principal),
                Run.status == RunStatus.AWAITING_TOOL_RESULT,
                Approval.call_id.in_(calls),
                Approval.kind == present.CLIENT_TOOL,
                Approval.status == "pending",
            )
            .limit(1)
        )
    return present.response_id(run.id) if run is not None else None


async def conversation_for(
    resources: Resources, principal: Principal, body: ResponseCreate, earlier: list[Turn]
) -> tuple[uuid.UUID, str | None, bool]:
    """The conversation the response continues (a fork, if the previous response is not
    the conversation's last), or a new one -- starting from the ``earlier`` turns the
    client sent, if any; the catalog model, if ``model`` names one rather than an agent;
    and whether the conversation was made now."""
    async with resources.sessionmaker() as session:
        agent = await agents.find(session, principal.tenant_id, body.model)
        model_id = None
        if agent is None:
            resources.catalog.resolve(body.model)  # refused when it names neither
            model_id = body.model
        if body.previous_response_id is None:
            write = AgentConversationWrite(
                metadata=body.metadata, agent_id=agent.id if agent else None
            )
            limit = resources.settings.max_conversations_per_user
            conversation = await conversations.create(session, principal, write, limit=limit)
            if earlier:
                await messages.seed(session, conversation, earlier)
            await session.commit()
            return conversation.id, model_id, True
        previous = await owned(session, principal, body.previous_response_id)
        if earlier:
            await _check_history(session, previous, earlier)
        conversation = await conversations.get_owned(session, principal, previous.conversation_id)
        latest = await session.scalar(
            select(Run.id)
            .where(Run.conversation_id == conversation.id)
            .order_by(Run.created_at.desc())
            .limit(1)
        )
        branched = latest != previous.id  # a branch from an earlier response
        if branched:
            at_seq = await session.scalar(
                select(func.max(Message.seq)).where(Message.run_id == previous.id)
            )
            conversation = await forking.fork(
                session,
                resources.storage,
                resources.settings,
                principal,
                conversation.id,
                at_seq or 0,
            )
        # The conversation runs the agent asked for from now on -- unless it is busy, and
        # this response is refused anyway.
        if agent is not None and conversation.active_run_id is None:
            conversations.run_agent(conversation, agent)
        try:
            await session.commit()
        except BaseException:
            if branched:
                await forking.forget(resources.storage, resources.settings, conversation)
            raise
        return conversation.id, model_id, branched


async def still_waiting(sessions: async_sessionmaker[AsyncSession], run_id: uuid.UUID) -> bool:
    async with sessions() as session:
        return bool(await pending_approvals(session, run_id))


async def input_items(session: AsyncSession, run: Run) -> list[dict[str, Any]]:
    """What the response was given: the user's message, and the decisions it was sent."""
    asked = await session.scalar(
        select(Message).where(Message.run_id == run.id, Message.role == "user").limit(1)
    )
    decided = await decided_approvals(session, run.id)
    items: list[dict[str, Any]] = []
    if asked is not None:
        items.append(
            {
                "type": "message",
                "id": f"msg_{run.id.hex}_{asked.seq}",
                "role": "user",
                "status": "completed",
                "content": [{"type": "input_text", "text": asked.content}],
            }
        )
    items += [
        {
            "type": "mcp_approval_response",
            "id": f"mcpa_{a.call_id}",
            "approval_request_id": f"mcpr_{a.call_id}",
            "approve": a.status == APPROVED,
            "reason": a.reason,
        }
        for a in decided
    ]
    return items


async def question_seq(sessions: async_sessionmaker[AsyncSession], run_id: uuid.UUID) -> int:
    """The seq of the run's question: its reply's comes next."""
    async with sessions() as session:
        seq = await session.scalar(
            select(func.min(Message.seq)).where(Message.run_id == run_id, Message.role == "user")
        )
    return seq or 0
