from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import JSON, BigInteger, CheckConstraint, ForeignKey, Index, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from atelier.db.base import Base, IdMixin, utcnow
from atelier.llm.models import Price
from atelier.runs.events import ErrorCode, RunError


class Run(IdMixin, Base):
    __tablename__ = "runs"
    __table_args__ = (
        CheckConstraint(
            "status IN ('queued', 'running', 'awaiting_approval', 'completed', 'failed',"
            " 'cancelled', 'timed_out', 'awaiting_tool_result')",
            name="status_known",
        ),
        Index("ix_runs_conversation_created", "conversation_id", "created_at"),
        # The reaper scans active runs by heartbeat.
        Index("ix_runs_status_heartbeat", "status", "heartbeat_at"),
    )

    conversation_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("conversations.id", ondelete="CASCADE")
    )
    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    user_id: Mapped[str] = mapped_column(String(128))
    # The key it was asked for with (budgets and reports per key; None: before budgets).
    # No foreign key: a key revoked while its run starts must not fail the run.
    api_key_id: Mapped[uuid.UUID | None]
    status: Mapped[str] = mapped_column(String(32), default="queued")
    # Queued runs start in order, those that interrupted the active run first.
    priority: Mapped[int] = mapped_column(default=0)
    model_id: Mapped[str] = mapped_column(String(128))
    # The agent version it ran (None: a chat turn, or a run from before agents existed).
    agent_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("agents.id", ondelete="SET NULL"))
    agent_version: Mapped[int | None]
    input: Mapped[str] = mapped_column(Text)
    # Its own instructions, in place of its agent's (a Responses API request's).
    instructions: Mapped[str | None] = mapped_column(Text)
    input_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    output_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    cost: Mapped[Decimal] = mapped_column(Price, default=Decimal(0))
    error_code: Mapped[str | None] = mapped_column(String(64))
    error_message: Mapped[str | None] = mapped_column(Text)
    # Which process executes the run, and when it last proved it is alive.
    owner_id: Mapped[str | None] = mapped_column(String(128))
    heartbeat_at: Mapped[datetime | None]
    # The id of the run's terminal event, once it is sent: a follower that falls back to
    # the database ends its stream with this id (never one the run gave another event).
    last_event_id: Mapped[int | None] = mapped_column(BigInteger)
    # Tools its caller runs ({"name", "description", "parameters"}): it waits for their results.
    client_tools: Mapped[list[dict[str, Any]] | None] = mapped_column(JSON)
    # While it waits for approvals: the id of its last event (it goes on from the next).
    paused_event_id: Mapped[int | None] = mapped_column(BigInteger)
    # Regenerated: the run whose messages this one's replace (marked superseded when it starts).
    supersedes: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("runs.id", ondelete="SET NULL"))
    # A queued run that rolls back the run it interrupted: undone before this one starts.
    rolls_back: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("runs.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    started_at: Mapped[datetime | None]
    ended_at: Mapped[datetime | None]

    @property
    def error(self) -> RunError | None:
        if self.error_code is None:
            return None
        return RunError(code=ErrorCode(self.error_code), message=self.error_message or "")


class Approval(IdMixin, Base):
    """A tool call waiting for (or given) a person's decision. The run waits in its row:
    no process holds it until every decision is in."""

    __tablename__ = "approvals"
    __table_args__ = (
        CheckConstraint("status IN ('pending', 'approved', 'denied')", name="status_known"),
        CheckConstraint("kind IN ('approval', 'client_tool')", name="kind_known"),
        Index("uq_approvals_run_call", "run_id", "call_id", unique=True),
        Index("ix_approvals_status_expires", "status", "expires_at"),
    )

    run_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"))
    call_id: Mapped[str] = mapped_column(String(128))
    name: Mapped[str] = mapped_column(String(128))
    input: Mapped[dict[str, Any]] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(String(16), default="pending")
    reason: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime]
    decided_at: Mapped[datetime | None]
    # The id of its approval.requested (tool.requested) event: sent again from here if the
    # log lost it.
    event_id: Mapped[int | None] = mapped_column(BigInteger)
    # A person's decision (approval), or a client's result (client_tool: ``output`` as the
    # tool's answer, "approved" once given).
    kind: Mapped[str] = mapped_column(String(16), default="approval")
    output: Mapped[str | None] = mapped_column(Text)
    is_error: Mapped[bool] = mapped_column(default=False)


class RunFileBackup(Base):
    """What a file was before a run first changed it, so that a rollback can restore it:
    a copy of its object made inside the storage (None: the run created the file)."""

    __tablename__ = "run_file_backups"

    run_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True
    )
    path: Mapped[str] = mapped_column(String(1024), primary_key=True)
    backup_key: Mapped[str | None] = mapped_column(String(2048))
    source: Mapped[str | None] = mapped_column(String(8))
    created_at: Mapped[datetime | None]
