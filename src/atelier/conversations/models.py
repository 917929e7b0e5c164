from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal
from typing import Any, Literal

from sqlalchemy import (
    JSON,
    BigInteger,
    CheckConstraint,
    ColumnElement,
    ForeignKey,
    Index,
    String,
    Text,
    Uuid,
)
from sqlalchemy.orm import Mapped, mapped_column

from atelier.db.base import Base, IdMixin, utcnow
from atelier.llm.models import Price
from atelier.tenants.principal import Principal

Kind = Literal["agent", "chat"]


class Conversation(IdMixin, Base):
    """A conversation with an agent over a workspace (``agent``), or a plain chat (``chat``):
    one table of histories and one run engine for both."""

    __tablename__ = "conversations"
    __table_args__ = (
        CheckConstraint("kind IN ('agent', 'chat')", name="kind_known"),
        Index("ix_conversations_owner_created", "tenant_id", "user_id", "kind", "created_at", "id"),
        Index("ux_conversations_thread", "tenant_id", "user_id", "thread_id", unique=True),
    )

    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    user_id: Mapped[str] = mapped_column(String(128))
    kind: Mapped[str] = mapped_column(String(8), default="agent")
    title: Mapped[str | None] = mapped_column(String(500))
    model_id: Mapped[str | None] = mapped_column(String(128))
    # The agent its runs run (None: the tenant's default), pinned to a version or the latest.
    agent_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("agents.id", ondelete="SET NULL"))
    agent_version: Mapped[int | None]
    metadata_: Mapped[dict[str, Any]] = mapped_column("metadata", JSON, default=dict)
    # The id a LangGraph client chose for it, when it chose one (compat/langgraph/threads.py).
    thread_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    # Compare-and-set target: at most one active run per conversation, enforced in SQL.
    active_run_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    # Counter for gapless message seq: incremented in SQL only when a message is stored.
    last_message_seq: Mapped[int] = mapped_column(default=0)
    total_input_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    total_output_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    total_cost: Mapped[Decimal] = mapped_column(Price, default=Decimal(0))
    estimated_context_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


def reachable_by(principal: Principal) -> list[ColumnElement[bool]]:
    """The conversations ``principal`` may reach: its user's in its tenant -- and of those,
    when its token is limited to some, only them."""
    where = [
        Conversation.tenant_id == principal.tenant_id,
        Conversation.user_id == principal.user_id,
    ]
    ids = principal.grant.conversation_ids if principal.grant is not None else None
    if ids is not None:
        where.append(Conversation.id.in_(ids))
    return where


class Message(IdMixin, Base):
    __tablename__ = "messages"
    __table_args__ = (
        CheckConstraint("seq > 0", name="seq_positive"),
        CheckConstraint("role IN ('user', 'assistant', 'tool')", name="role_known"),
        Index("uq_messages_conversation_seq", "conversation_id", "seq", unique=True),
    )

    conversation_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("conversations.id", ondelete="CASCADE")
    )
    seq: Mapped[int]
    role: Mapped[str] = mapped_column(String(16))
    content: Mapped[str] = mapped_column(Text)
    # Tool calls/results and other structured parts of the message.
    parts: Mapped[list[Any] | None] = mapped_column(JSON)
    run_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("runs.id", ondelete="SET NULL"), index=True
    )
    incomplete: Mapped[bool] = mapped_column(default=False)
    # A later run answered the same input again (regenerate): kept, but not the answer.
    superseded: Mapped[bool] = mapped_column(default=False)
    # Why the model stopped (end_turn, tool_use, max_tokens, ...); None when it never said.
    stop_reason: Mapped[str | None] = mapped_column(String(32))
    # The id of the run event that announced it (message.completed): a stream that lost
    # the event log sends it again from here, under its own id.
    event_id: Mapped[int | None] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
