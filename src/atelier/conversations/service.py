"""Conversations and chats of one (tenant, user). Services flush; the caller commits.

A chat is a conversation of kind ``chat``: each API sees only its own kind. Another
user's or tenant's id is indistinguishable from an id that does not exist (404), and
listings are newest first with an opaque cursor.
"""

from __future__ import annotations

import base64
import binascii
import uuid
from datetime import datetime

from sqlalchemy import and_, or_, select
from sqlalchemy import delete as sql_delete
from sqlalchemy.ext.asyncio import AsyncSession

from atelier.agents.models import Agent
from atelier.agents.schemas import DEFAULT_AGENT
from atelier.conversations.models import Conversation, Kind, reachable_by
from atelier.conversations.schemas import ConversationOut, ConversationPage, ConversationWrite
from atelier.db import limits
from atelier.errors import Forbidden, NotFound, Refused
from atelier.idempotency.store import forget_about
from atelier.llm.catalog import ModelCatalog
from atelier.llm.context import context_usage
from atelier.runs.models import Run
from atelier.tenants.principal import Principal

AGENT: Kind = "agent"


def _what(kind: Kind) -> str:
    return "chat" if kind == "chat" else "conversation"


async def get_owned(
    session: AsyncSession, principal: Principal, conversation_id: uuid.UUID, kind: Kind = AGENT
) -> Conversation:
    row = await session.scalar(
        select(Conversation).where(
            Conversation.id == conversation_id,
            *reachable_by(principal),
            Conversation.kind == kind,
        )
    )
    if row is None:
        raise NotFound("not_found", f"no such {_what(kind)}")
    return row


def run_agent(conversation: Conversation, agent: Agent) -> bool:
    """The conversation runs ``agent`` (its latest version) from its next run on; whether
    that is a change. A conversation that names no agent runs the tenant's default."""
    current = conversation.agent_id or (agent.id if agent.name == DEFAULT_AGENT else None)
    if current == agent.id:
        return False
    conversation.agent_id, conversation.agent_version = agent.id, None
    return True


async def room_for_one(session: AsyncSession, principal: Principal, limit: int) -> None:
    """``limit_reached`` when the user keeps ``limit`` conversations and chats already;
    ``outside_token_scope`` for a token limited to some conversations: it starts none."""
    if principal.grant is not None and principal.grant.conversation_ids is not None:
        raise Forbidden(
            "outside_token_scope", "the token is limited to its conversations: it starts none"
        )
    mine = [
        Conversation.tenant_id == principal.tenant_id,
        Conversation.user_id == principal.user_id,
    ]
    setting = "ATELIER_MAX_CONVERSATIONS_PER_USER"
    await limits.room_for_one(session, Conversation, mine, limit, "conversations", setting)


async def create(
    session: AsyncSession,
    principal: Principal,
    data: ConversationWrite,
    kind: Kind = AGENT,
    *,
    limit: int,
) -> Conversation:
    assert principal.user_id is not None
    await room_for_one(session, principal, limit)
    conversation = Conversation(
        tenant_id=principal.tenant_id,
        user_id=principal.user_id,
        kind=kind,
        title=data.title,
        model_id=data.model_id,
        agent_id=getattr(data, "agent_id", None),
        agent_version=getattr(data, "agent_version", None),
        metadata_=data.metadata or {},
    )
    session.add(conversation)
    await session.flush()
    return conversation


async def update(
    session: AsyncSession,
    principal: Principal,
    conversation_id: uuid.UUID,
    data: ConversationWrite,
    kind: Kind = AGENT,
) -> Conversation:
    """PATCH semantics: only the fields the client sent change (an explicit null clears)."""
    conversation = await get_owned(session, principal, conversation_id, kind)
    fields = data.model_fields_set
    if "title" in fields:
        conversation.title = data.title
    if "model_id" in fields:
        conversation.model_id = data.model_id
    if "metadata" in fields:
        conversation.metadata_ = data.metadata or {}
    if "agent_id" in fields:  # another agent: its version is the one sent, or the latest
        conversation.agent_id = getattr(data, "agent_id", None)
        conversation.agent_version = getattr(data, "agent_version", None)
    elif "agent_version" in fields:
        conversation.agent_version = getattr(data, "agent_version", None)
    await session.flush()
    return conversation


async def list_page(
    session: AsyncSession,
    principal: Principal,
    limit: int,
    cursor: str | None,
    kind: Kind = AGENT,
    search: str | None = None,
) -> tuple[list[Conversation], str | None]:
    """Newest first; ``search``: those whose title holds it, whatever the case."""
    query = select(Conversation).where(
        *reachable_by(principal),
        Conversation.kind == kind,
    )
    if search:
        # The user's words are matched as they are: their % and _ are not wildcards.
        escaped = search.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        query = query.where(Conversation.title.ilike(f"%{escaped}%", escape="\\"))
    if cursor is not None:
        created_at, last_id = decode_cursor(cursor)
        query = query.where(
            or_(
                Conversation.created_at < created_at,
                and_(Conversation.created_at == created_at, Conversation.id < last_id),
            )
        )
    query = query.order_by(Conversation.created_at.desc(), Conversation.id.desc()).limit(limit + 1)
    rows = list(await session.scalars(query))
    last = rows[limit - 1] if len(rows) > limit else None
    return rows[:limit], encode_cursor(last.created_at, last.id) if last is not None else None


def encode_cursor(created_at: datetime, row_id: uuid.UUID) -> str:
    raw = f"{created_at.isoformat()}|{row_id}"
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, uuid.UUID]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        created_at, last_id = raw.split("|")
        parsed = datetime.fromisoformat(created_at)
        if parsed.tzinfo is None:
            raise ValueError("naive")
        return parsed, uuid.UUID(last_id)
    except (ValueError, binascii.Error, UnicodeDecodeError) as exc:
        raise Refused("invalid_cursor", "the cursor is not one this API returned") from exc


def present(
    conversations: list[Conversation], catalog: ModelCatalog, default_model: str
) -> list[ConversationOut]:
    """Context usage is against the model runs will use: the conversation's, or the default."""
    out = []
    for conversation in conversations:
        model = catalog.get(conversation.model_id or default_model)
        window = model.context_window if model is not None else None
        usage = context_usage(conversation.estimated_context_tokens, window)
        out.append(
            ConversationOut(
                id=conversation.id,
                title=conversation.title,
                model_id=conversation.model_id,
                agent_id=conversation.agent_id,
                agent_version=conversation.agent_version,
                metadata=conversation.metadata_,
                created_at=conversation.created_at,
                updated_at=conversation.updated_at,
                active_run_id=conversation.active_run_id,
                total_input_tokens=conversation.total_input_tokens,
                total_output_tokens=conversation.total_output_tokens,
                total_cost=conversation.total_cost,
                estimated_context_tokens=conversation.estimated_context_tokens,
                context_window=window,
                context_usage_percent=usage.percent,
                context_status=usage.status,
            )
        )
    return out


def present_page(
    conversations: list[Conversation],
    next_cursor: str | None,
    catalog: ModelCatalog,
    default_model: str,
) -> ConversationPage:
    return ConversationPage(
        data=present(conversations, catalog, default_model), next_cursor=next_cursor
    )


async def delete(session: AsyncSession, conversation: Conversation) -> None:
    """The conversation's rows (messages, runs and files cascade), and the answers kept
    for Idempotency-Keys about it or its runs: a replay gives back nothing deleted."""
    runs = await session.scalars(select(Run.id).where(Run.conversation_id == conversation.id))
    # (A LangGraph client names the thread by the id it chose.)
    named = {conversation.id, conversation.thread_id or conversation.id}
    await forget_about(session, conversation.tenant_id, [*named, *runs])
    await session.execute(sql_delete(Conversation).where(Conversation.id == conversation.id))
