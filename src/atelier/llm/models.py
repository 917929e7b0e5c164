from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from sqlalchemy import CheckConstraint, Numeric, String
from sqlalchemy.orm import Mapped, mapped_column

from atelier.db.base import Base, utcnow

# Prices are per one million tokens; six decimal places keeps sub-cent precision.
Price = Numeric(18, 6)


class CatalogModel(Base):
    """A model users may choose; prices are per 1M tokens (BUG-016)."""

    __tablename__ = "models"
    __table_args__ = (
        CheckConstraint(
            "context_window IS NULL OR context_window > 0", name="context_window_positive"
        ),
        CheckConstraint(
            "max_output_tokens IS NULL OR max_output_tokens > 0", name="max_output_tokens_positive"
        ),
    )

    id: Mapped[str] = mapped_column(String(128), primary_key=True)
    provider: Mapped[str] = mapped_column(String(32))
    provider_model_id: Mapped[str] = mapped_column(String(256))
    display_name: Mapped[str] = mapped_column(String(256))
    context_window: Mapped[int | None]
    max_output_tokens: Mapped[int | None]
    input_price_per_mtok: Mapped[Decimal] = mapped_column(Price, default=Decimal(0))
    output_price_per_mtok: Mapped[Decimal] = mapped_column(Price, default=Decimal(0))
    cache_read_price_per_mtok: Mapped[Decimal | None] = mapped_column(Price)
    cache_write_price_per_mtok: Mapped[Decimal | None] = mapped_column(Price)
    currency: Mapped[str] = mapped_column(String(3), default="USD")
    enabled: Mapped[bool] = mapped_column(default=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
