"""The LangGraph API's rules, on the conversations, agents and runs of ``/v1``; the endpoints
parse and present.

Threads are a user's agent conversations, known by ids the client may choose.

A chosen id is the conversation's own id when no conversation has it yet; when another
tenant's (or user's) conversation has it, the thread gets a conversation of its own and keeps
the chosen id beside it. Either way each user has their own space of thread ids, and an id
someone else holds answers exactly as a free one does."""

from __future__ import annotations

import json
import uuid
from typing import Any

from sqlalchemy import and_, func, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from atelier.agents import service as agents
from atelier.agents.models import Agent
from atelier.compat.langgraph.present import CLIENT_TOOL
from atelier.compat.langgraph.schemas import RunCreate, Thread
from atelier.conversations import service as conversations
from atelier.conversations.models import Conversation, Message, reachable_by
from atelier.errors import Conflict, DomainError, Invalid, NotFound
from atelier.resources import Resources
from atelier.runs import WAITING_STATUSES, RunRequest, RunStatus, pending_approvals
from atelier.runs.models import Approval, Run
from atelier.runs.schemas import MAX_INPUT_CHARS
from atelier.tenants.principal import Principal
from atelier.webhooks import service as webhooks


def not_found() -> DomainError:
    return NotFound("not_found", "no such thread")


def exists() -> DomainError:
    return Conflict("thread_exists", "a thread with this id exists")


async def find(session: AsyncSession, principal: Principal, thread_id: str) -> Conversation | None:
    try:
        wanted = uuid.UUID(thread_id)
    except ValueError:
        return None
    return await session.scalar(
        select(Conversation).where(
            *reachable_by(principal),
            Conversation.kind == "agent",
            or_(
                Conversation.thread_id == wanted,
                and_(Conversation.thread_id.is_(None), Conversation.id == wanted),
            ),
        )
    )


async def get(session: AsyncSession, principal: Principal, thread_id: str) -> Conversation:
    conversation = await find(session, principal, thread_id)
    if conversation is None:
        raise not_found()
    return conversation


async def create(
    session: AsyncSession,
    principal: Principal,
    wanted: uuid.UUID | None,
    metadata: dict[str, Any] | None = None,
    *,
    limit: int,
    looked: bool = False,
) -> Conversation:
    """A new thread, under ``wanted`` if the client chose its id (``thread_exists`` if this
    user has a thread by that id, found now or made by a request racing this one).
    ``looked``: the caller found none by that id a moment ago (one query fewer)."""
    if not looked and wanted is not None and await find(session, principal, str(wanted)):
        raise exists()
    await conversations.room_for_one(session, principal, limit)
    own_id = wanted is not None and await session.get(Conversation, wanted) is None
    while True:
        conversation = Conversation(
            id=wanted if own_id else uuid.uuid4(),
            thread_id=wanted,
            tenant_id=principal.tenant_id,
            user_id=principal.user_id,
            kind="agent",
            metadata_=metadata or {},
        )
        try:
            async with session.begin_nested():
                session.add(conversation)
        except IntegrityError:
            if not own_id or await find(session, principal, str(wanted)) is not None:
                raise exists() from None
            own_id = False  # someone else made a conversation of that id a moment ago
            continue
        return conversation


async def active(session: AsyncSession, conversation: Conversation) -> Run | None:
    if conversation.active_run_id is None:
        return None
    return await session.get(Run, conversation.active_run_id)


async def pending(session: AsyncSession, run: Run | None) -> list[Approval]:
    """The calls the thread's run waits on (none unless it waits)."""
    if run is None or run.status not in WAITING_STATUSES:
        return []
    return await pending_approvals(session, run.id)


async def messages(session: AsyncSession, conversation_id: uuid.UUID) -> list[Message]:
    rows = await session.scalars(
        select(Message)
        .where(Message.conversation_id == conversation_id, Message.superseded.is_(False))
        .order_by(Message.seq)
    )
    return list(rows)


async def found(
    sessions: async_sessionmaker[AsyncSession], conversation_id: uuid.UUID, run_id: uuid.UUID
) -> list[Message]:
    """The thread as the run found it: its messages up to the run's question."""
    asked = (
        select(func.min(Message.seq))
        .where(Message.run_id == run_id, Message.role == "user")
        .scalar_subquery()
    )
    async with sessions() as session:
        rows = await session.scalars(
            select(Message)
            .where(
                Message.conversation_id == conversation_id,
                Message.seq <= asked,
                Message.superseded.is_(False),
            )
            .order_by(Message.seq)
        )
        return list(rows)


# -- assistants -----------------------------------------------------------------------------


async def assistant(session: AsyncSession, tenant_id: uuid.UUID, key: str) -> Agent:
    """An agent by id, or by name (LangGraph's graph id)."""
    agent = await agents.find(session, tenant_id, key)
    if agent is None:
        raise NotFound("not_found", "no such assistant")
    return agent


def matches(metadata: dict[str, Any], wanted: dict[str, Any] | None) -> bool:
    return all(metadata.get(key) == value for key, value in (wanted or {}).items())


# -- threads --------------------------------------------------------------------------------


async def search(
    session: AsyncSession,
    principal: Principal,
    offset: int,
    limit: int,
    metadata: dict[str, Any] | None,
    status: str | None,
) -> list[tuple[Conversation, str]]:
    """Newest first; ``metadata`` and ``status`` filter what the page holds."""
    rows = await session.scalars(
        select(Conversation)
        .where(
            *reachable_by(principal),
            Conversation.kind == "agent",
        )
        .order_by(Conversation.updated_at.desc(), Conversation.id.desc())
        .offset(offset)
        .limit(limit)
    )
    found = []
    for conversation in rows:
        now = "busy" if conversation.active_run_id else "idle"
        if matches(conversation.metadata_, metadata) and status in (None, now):
            found.append((conversation, now))
    return found


# -- runs -----------------------------------------------------------------------------------


async def begin(
    resources: Resources, principal: Principal, thread_id: str, body: RunCreate
) -> tuple[Thread, uuid.UUID, int]:
    """Start the run the body asks for -- or, for a resume, decide the calls the thread's
    waiting run waits on -- and say which run, and after which of its events it is new."""
    hook = None
    if body.webhook is not None:  # checked before anything is written
        settings = resources.settings
        await webhooks.check_url(body.webhook, allow_private=settings.webhook_allow_private)
        hook = webhooks.for_run(resources.sealer, body.webhook)
    async with resources.sessionmaker() as session:
        agent = await assistant(session, principal.tenant_id, body.assistant_id)
        conversation = await find(session, principal, thread_id)
        if conversation is None:
            if body.if_not_exists != "create" or body.command is not None:
                raise not_found()
            limit = resources.settings.max_conversations_per_user
            conversation = await create(session, principal, _thread_id(thread_id), limit=limit)
            await session.commit()
        thread = Thread.of(conversation)
        if body.command is not None:
            return thread, *await _resume(resources, session, conversation, body)
        try:
            text = body.text()
        except ValueError as exc:
            raise Invalid("invalid_input", str(exc)) from exc
        # The thread runs the assistant asked for -- unless this run is refused as busy.
        # As the LangGraph server does, it is tagged with what runs on it: Agent Chat UI
        # lists threads by these (threads.search({metadata: {graph_id}})).
        if conversation.active_run_id is None or body.multitask_strategy != "reject":
            tags = {"graph_id": agent.name, "assistant_id": str(agent.id)}
            switched = conversations.run_agent(conversation, agent)
            if switched or any(conversation.metadata_.get(k) != v for k, v in tags.items()):
                conversation.metadata_ = {**conversation.metadata_, **tags}
                await session.commit()
    request = RunRequest(
        principal,
        conversation.id,
        "agent",
        text,
        None,
        strategy=body.multitask_strategy,
        webhook=hook,
        client_tools=body.client_tools(),
    )
    return thread, await resources.runs.start(request), 0


def _thread_id(thread_id: str) -> uuid.UUID:
    try:
        return uuid.UUID(thread_id)
    except ValueError as exc:
        raise Invalid("invalid_thread_id", "a thread id is a UUID") from exc


async def _resume(
    resources: Resources, session: AsyncSession, conversation: Conversation, body: RunCreate
) -> tuple[uuid.UUID, int]:
    run = await active(session, conversation)
    waiting = await pending(session, run)
    if run is None or not waiting:
        raise Conflict("nothing_to_resume", "the thread waits for no decision")
    resume = body.command.resume if body.command else None
    paused = run.paused_event_id or 0
    client = [a for a in waiting if a.kind == CLIENT_TOOL]
    if client:  # the caller's tools: the resume is their outputs, by call id
        await resources.runs.answer(run, outputs(resume, client))
        return run.id, paused
    for call_id, approved, reason in decisions(resume, waiting):
        await resources.runs.decide(run, call_id, approved, reason)
    return run.id, paused


def outputs(resume: Any, waiting: list[Approval]) -> list[tuple[str, str, bool]]:
    """A resume value as the outputs of the caller's tool calls: ``{call_id: output}``
    (a string, or anything else as JSON), one for each call it waits on."""
    ids = [approval.call_id for approval in waiting]
    if not isinstance(resume, dict) or set(resume) != set(ids):
        raise Invalid(
            "invalid_resume", f"resume with the output of each call: {{call_id: output}} for {ids}"
        )
    answers = []
    for call_id in ids:
        value = resume[call_id]
        text = value if isinstance(value, str) else json.dumps(value)
        if len(text) > MAX_INPUT_CHARS or "\x00" in text:
            raise Invalid(
                "invalid_resume", f"an output is text of at most {MAX_INPUT_CHARS} characters"
            )
        answers.append((call_id, text, False))
    return answers


def decisions(resume: Any, waiting: list[Approval]) -> list[tuple[str, bool, str | None]]:
    """A resume value as decisions on the calls waiting: ``{call_id: decision}``, or
    LangChain's ``{"decisions": [...]}`` (in the calls' order), or one decision for all.
    A decision is ``"approve"``/``"reject"``/``"deny"``, ``{"type": ...,
    "message": ...}``, ``{"decision": ..., "reason": ...}`` or a boolean."""
    ids = [approval.call_id for approval in waiting]
    if isinstance(resume, dict) and resume and set(resume) <= set(ids):
        chosen = [(call_id, resume[call_id]) for call_id in ids if call_id in resume]
    elif isinstance(resume, dict) and isinstance(resume.get("decisions"), list):
        if len(resume["decisions"]) != len(ids):
            raise _bad_resume(f"send {len(ids)} decisions, one per waiting call")
        chosen = list(zip(ids, resume["decisions"], strict=True))
    else:
        chosen = [(call_id, resume) for call_id in ids]
    return [(call_id, *_decision(value)) for call_id, value in chosen]


def _decision(value: Any) -> tuple[bool, str | None]:
    reason = None
    if isinstance(value, dict):
        reason = value.get("message") or value.get("reason")
        value = value.get("type", value.get("decision"))
    if isinstance(value, bool):
        return value, None
    if value in ("approve", "accept"):
        return True, None
    if value in ("reject", "deny"):
        if reason is not None and (
            not isinstance(reason, str) or len(reason) > 2000 or "\x00" in reason
        ):
            raise _bad_resume("a reason is text of at most 2000 characters (no NUL)")
        return False, reason
    raise _bad_resume("a decision is approve or reject")


def _bad_resume(detail: str) -> DomainError:
    return Invalid("invalid_resume", detail)


async def owned_run(
    session: AsyncSession, principal: Principal, thread_id: str, run_id: str
) -> tuple[Thread, Run]:
    conversation = await get(session, principal, thread_id)
    try:
        wanted = uuid.UUID(run_id)
    except ValueError as exc:
        raise NotFound("not_found", "no such run") from exc
    run = await session.scalar(
        select(Run).where(Run.id == wanted, Run.conversation_id == conversation.id)
    )
    if run is None:
        raise NotFound("not_found", "no such run")
    return Thread.of(conversation), run


async def runs(
    session: AsyncSession,
    conversation: Conversation,
    statuses: list[RunStatus] | None,
    offset: int,
    limit: int,
) -> list[Run]:
    query = select(Run).where(Run.conversation_id == conversation.id)
    if statuses is not None:
        query = query.where(Run.status.in_(statuses))
    rows = await session.scalars(
        query.order_by(Run.created_at.desc(), Run.id.desc()).offset(offset).limit(limit)
    )
    return list(rows)


async def run(sessions: async_sessionmaker[AsyncSession], run_id: uuid.UUID) -> Run | None:
    async with sessions() as session:
        return await session.get(Run, run_id)


async def ended_state(
    sessions: async_sessionmaker[AsyncSession], thread: Thread, run_id: uuid.UUID
) -> tuple[Run | None, list[Approval], list[Message]]:
    """The run, the calls it waits on, and the thread's messages, as they are now."""
    async with sessions() as session:
        row = await session.get(Run, run_id)
        return row, await pending(session, row), await messages(session, thread.conversation_id)
