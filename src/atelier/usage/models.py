from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal

from sqlalchemy import BigInteger, ForeignKey, Index, String
from sqlalchemy.orm import Mapped, mapped_column

from atelier.db.base import Base, IdMixin, utcnow
from atelier.llm.models import Price


class UsageRecord(IdMixin, Base):
    """One model call. Token counts are NULL when the provider reported none (unknown, not 0).

    Links to conversations and runs are cleared when those are deleted; the record
    itself stays, because it is what the tenant was billed for.
    """

    __tablename__ = "usage_records"
    __table_args__ = (Index("ix_usage_records_tenant_created", "tenant_id", "created_at"),)

    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    user_id: Mapped[str] = mapped_column(String(128))
    conversation_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("conversations.id", ondelete="SET NULL"), index=True
    )
    run_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("runs.id", ondelete="SET NULL"), index=True
    )
    # The key the run was started with, and the agent it ran (reports group by them). No
    # foreign keys: a record outlives them, and still says whose it was.
    api_key_id: Mapped[uuid.UUID | None]
    agent_id: Mapped[uuid.UUID | None]
    model_id: Mapped[str] = mapped_column(String(128))
    provider: Mapped[str] = mapped_column(String(32))
    input_tokens: Mapped[int | None] = mapped_column(BigInteger)
    output_tokens: Mapped[int | None] = mapped_column(BigInteger)
    cache_read_tokens: Mapped[int | None] = mapped_column(BigInteger)
    cache_write_tokens: Mapped[int | None] = mapped_column(BigInteger)
    cost: Mapped[Decimal | None] = mapped_column(Price)
    # The call was cut short before the provider said what it used: the tokens are ours.
    estimated: Mapped[bool] = mapped_column(default=False)
    currency: Mapped[str] = mapped_column(String(3))
    # The prices this record was costed with (a snapshot: catalog prices may change later).
    input_price_per_mtok: Mapped[Decimal] = mapped_column(Price)
    output_price_per_mtok: Mapped[Decimal] = mapped_column(Price)
    # The id of the run's usage event that reported it.
    event_id: Mapped[int | None] = mapped_column(BigInteger)
    # When the call was sent and its first output came (None: before they were kept);
    # created_at is when it ended.
    started_at: Mapped[datetime | None]
    first_token_at: Mapped[datetime | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
