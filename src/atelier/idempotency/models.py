from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, ForeignKey, Index, LargeBinary, String, false
from sqlalchemy.orm import Mapped, mapped_column

from atelier.db.base import Base, utcnow


class IdempotentRequest(Base):
    """A request sent with an ``Idempotency-Key``: what it was (to refuse the key for
    another request) and, once answered, its answer (to give it again)."""

    __tablename__ = "idempotent_requests"
    __table_args__ = (
        Index("ix_idempotent_requests_expires", "expires_at"),
        Index("ix_idempotent_requests_subject", "tenant_id", "subject"),
    )

    tenant_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("tenants.id", ondelete="CASCADE"), primary_key=True
    )
    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    # sha256 of method, path, query and user; of the body once it has all arrived.
    fingerprint: Mapped[str] = mapped_column(String(64))
    body_hash: Mapped[str | None] = mapped_column(String(64))
    # Until then the first request is being answered; a process that died frees it then.
    locked_until: Mapped[datetime | None]
    status: Mapped[int | None]
    headers: Mapped[list[Any] | None] = mapped_column(JSON)
    body: Mapped[bytes | None] = mapped_column(LargeBinary)
    # The answer was an event stream: it is given again from the place its Location names.
    streamed: Mapped[bool] = mapped_column(default=False)
    # What the answer is about (a conversation, chat or run): deleting it deletes this.
    subject: Mapped[uuid.UUID | None]
    # The body is sealed (agents/secrets.py): the answer carried a secret (no-store).
    sealed: Mapped[bool] = mapped_column(default=False, server_default=false())
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime]
