"""Budgets as clients write them and as they are shown (with the current period's spend)."""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_serializer, field_validator

from atelier.usage.money import money_str

Scope = Literal["tenant", "api_key", "user", "agent"]
Period = Literal["day", "month", "total"]
MAX_MONEY = Decimal("999999999999")


def _fractions(value: list[Decimal] | None) -> list[Decimal] | None:
    if value is None:
        return None
    if any(not Decimal(0) < t <= Decimal(1) for t in value):
        raise ValueError("thresholds are fractions of the limit, above 0 and at most 1")
    return sorted(set(value))


class BudgetIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    scope: Scope
    # The key's, user's or agent's id; none for the tenant.
    subject: str | None = Field(default=None, min_length=1, max_length=128, pattern=r"^[^\x00]*$")
    period: Period
    limit: Decimal = Field(ge=0, le=MAX_MONEY, decimal_places=6)
    currency: str | None = Field(default=None, pattern=r"^[A-Z]{3}$")
    # Fractions of the limit whose crossing is told (budget.threshold), once per period.
    thresholds: list[Decimal] = Field(default_factory=list, max_length=10)

    _fractions = field_validator("thresholds")(_fractions)


class BudgetPatch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    limit: Decimal | None = Field(default=None, ge=0, le=MAX_MONEY, decimal_places=6)
    thresholds: list[Decimal] | None = Field(default=None, max_length=10)

    _fractions = field_validator("thresholds")(_fractions)


class BudgetOut(BaseModel):
    id: uuid.UUID
    scope: Scope
    subject: str | None
    period: Period
    limit: Decimal
    currency: str
    thresholds: list[Decimal]
    period_start: datetime  # the current period (UTC)
    spent: Decimal  # in it, settled calls
    reserved: Decimal  # held by calls under way
    remaining: Decimal  # limit - spent, never below 0
    created_at: datetime
    updated_at: datetime

    @field_serializer("limit", "spent", "reserved", "remaining")
    def _money(self, value: Decimal) -> str:
        return money_str(value)

    @field_serializer("thresholds")
    def _fractions(self, value: list[Decimal]) -> list[str]:
        return [str(t) for t in value]


class BudgetList(BaseModel):
    data: list[BudgetOut]
    next_cursor: str | None = None
