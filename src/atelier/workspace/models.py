from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import BigInteger, CheckConstraint, ForeignKey, Index, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from atelier.db.base import Base, IdMixin, utcnow


class ConversationFile(IdMixin, Base):
    __tablename__ = "conversation_files"
    __table_args__ = (
        CheckConstraint("source IN ('user', 'agent')", name="source_known"),
        CheckConstraint("size >= 0", name="size_not_negative"),
        Index("uq_conversation_files_path", "conversation_id", "path", unique=True),
    )

    conversation_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("conversations.id", ondelete="CASCADE")
    )
    path: Mapped[str] = mapped_column(String(1024))
    size: Mapped[int] = mapped_column(BigInteger)
    content_type: Mapped[str] = mapped_column(String(255))
    etag: Mapped[str] = mapped_column(String(255))
    source: Mapped[str] = mapped_column(String(8))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class StorageCleanup(IdMixin, Base):
    """A storage prefix whose objects must still be deleted (retried until empty, BUG-011)."""

    __tablename__ = "storage_cleanups"

    prefix: Mapped[str] = mapped_column(String(1024), unique=True)
    attempts: Mapped[int] = mapped_column(default=0)
    last_error: Mapped[str | None] = mapped_column(Text)
    next_attempt_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
