from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal

from sqlalchemy import JSON, CheckConstraint, ForeignKey, Index, String
from sqlalchemy.orm import Mapped, mapped_column

from atelier.db.base import Base, IdMixin, utcnow
from atelier.llm.models import Price


class Budget(IdMixin, Base):
    """A cap on what a tenant, one of its API keys, one of its end users or one of its
    agents may spend per day, per month (UTC calendar) or in total."""

    __tablename__ = "budgets"
    __table_args__ = (
        CheckConstraint("scope IN ('tenant', 'api_key', 'user', 'agent')", name="scope_known"),
        CheckConstraint("period IN ('day', 'month', 'total')", name="period_known"),
        CheckConstraint("limit_amount >= 0", name="limit_not_negative"),
        Index("ix_budgets_tenant_scope_subject", "tenant_id", "scope", "subject"),
    )

    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    scope: Mapped[str] = mapped_column(String(16))
    subject: Mapped[str | None] = mapped_column(String(128))  # key, user or agent id
    period: Mapped[str] = mapped_column(String(8))
    limit: Mapped[Decimal] = mapped_column("limit_amount", Price)
    currency: Mapped[str] = mapped_column(String(3))
    thresholds: Mapped[list[str]] = mapped_column(JSON)  # fractions of the limit, as text
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class BudgetPeriod(Base):
    """A budget's counters for one period: what was spent, and what model calls under way
    hold (their worst case), both changed only in SQL, under the row's lock."""

    __tablename__ = "budget_periods"

    budget_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("budgets.id", ondelete="CASCADE"), primary_key=True
    )
    period_start: Mapped[datetime] = mapped_column(primary_key=True)
    spent: Mapped[Decimal] = mapped_column(Price, default=Decimal(0))
    reserved: Mapped[Decimal] = mapped_column(Price, default=Decimal(0))


class BudgetReservation(Base):
    """What a run's model call under way holds of a budget, until the call is settled.
    No foreign key to the run: a run deleted or dead is found and its hold released."""

    __tablename__ = "budget_reservations"

    run_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    budget_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("budgets.id", ondelete="CASCADE"), primary_key=True
    )
    period_start: Mapped[datetime]
    amount: Mapped[Decimal] = mapped_column(Price)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
