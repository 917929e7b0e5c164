"""A tenant's budgets: checked subjects, the current period's counters, and a first
period that starts with what was already spent in it. Functions flush; the request's unit
of work commits."""

from __future__ import annotations

import uuid
from decimal import Decimal
from typing import Any

from sqlalchemy import func, select, true
from sqlalchemy.ext.asyncio import AsyncSession

from atelier.agents.models import Agent
from atelier.budgets.enforcement import period_start
from atelier.budgets.models import Budget, BudgetPeriod
from atelier.budgets.schemas import BudgetIn, BudgetOut, BudgetPatch
from atelier.db import limits, paging
from atelier.db.base import utcnow
from atelier.errors import DomainError, Invalid, NotFound
from atelier.tenants.models import ApiKey
from atelier.usage.models import UsageRecord


async def create(
    session: AsyncSession,
    tenant_id: uuid.UUID,
    body: BudgetIn,
    default_currency: str,
    limit: int,
) -> BudgetOut:
    mine = [Budget.tenant_id == tenant_id]
    await limits.room_for_one(session, Budget, mine, limit, "budgets", "ATELIER_MAX_BUDGETS")
    subject = await _checked_subject(session, tenant_id, body)
    now = utcnow()
    budget = Budget(
        tenant_id=tenant_id,
        scope=body.scope,
        subject=subject,
        period=body.period,
        limit=body.limit,
        currency=body.currency or default_currency,
        thresholds=[str(t) for t in body.thresholds],
        created_at=now,
        updated_at=now,
    )
    session.add(budget)
    await session.flush()
    # The current period starts with what was spent in it before the budget existed.
    start = period_start(budget.period, now)
    spent = await session.scalar(
        select(func.coalesce(func.sum(UsageRecord.cost), 0)).where(
            UsageRecord.tenant_id == tenant_id,
            UsageRecord.currency == budget.currency,
            UsageRecord.created_at >= start,
            _usage_of(budget),
        )
    )
    session.add(BudgetPeriod(budget_id=budget.id, period_start=start, spent=spent, reserved=0))
    await session.flush()
    return await present(session, budget)


def _usage_of(budget: Budget) -> Any:
    if budget.scope == "api_key":
        return UsageRecord.api_key_id == uuid.UUID(str(budget.subject))
    if budget.scope == "agent":
        return UsageRecord.agent_id == uuid.UUID(str(budget.subject))
    if budget.scope == "user":
        return UsageRecord.user_id == budget.subject
    return true()  # the whole tenant


async def _checked_subject(
    session: AsyncSession, tenant_id: uuid.UUID, body: BudgetIn
) -> str | None:
    if body.scope == "tenant":
        if body.subject is not None:
            raise _invalid("a tenant budget has no subject")
        return None
    if body.subject is None:
        raise _invalid(
            f"an {body.scope} budget names its subject"
            if body.scope != "user"
            else "a user budget names its user id"
        )
    if body.scope == "user":
        return body.subject
    try:
        subject = uuid.UUID(body.subject)
    except ValueError:
        raise _invalid(f"no such {body.scope.replace('_', ' ')}") from None
    model: Any = ApiKey if body.scope == "api_key" else Agent
    conditions = [model.id == subject, model.tenant_id == tenant_id]
    if model is Agent:
        conditions.append(Agent.deleted_at.is_(None))
    if await session.scalar(select(model.id).where(*conditions)) is None:
        raise _invalid(f"no such {body.scope.replace('_', ' ')}")
    return str(subject)


def _invalid(detail: str) -> DomainError:
    return Invalid("invalid_budget", detail)


async def get(session: AsyncSession, tenant_id: uuid.UUID, budget_id: uuid.UUID) -> Budget:
    budget = await session.scalar(
        select(Budget).where(Budget.id == budget_id, Budget.tenant_id == tenant_id)
    )
    if budget is None:
        raise NotFound("not_found", "no such budget")
    return budget


async def list_all(
    session: AsyncSession, tenant_id: uuid.UUID, limit: int, cursor: str | None
) -> tuple[list[BudgetOut], str | None]:
    """A page of the tenant's budgets, oldest first."""
    query = select(Budget).where(Budget.tenant_id == tenant_id)
    budgets, next_cursor = await paging.page(
        session, query, [Budget.created_at, Budget.id], limit, cursor
    )
    return [await present(session, budget) for budget in budgets], next_cursor


async def change(
    session: AsyncSession, tenant_id: uuid.UUID, budget_id: uuid.UUID, body: BudgetPatch
) -> BudgetOut:
    budget = await get(session, tenant_id, budget_id)
    if body.limit is not None:
        budget.limit = body.limit
    if body.thresholds is not None:
        budget.thresholds = [str(t) for t in body.thresholds]
    budget.updated_at = utcnow()
    await session.flush()
    return await present(session, budget)


async def delete(session: AsyncSession, tenant_id: uuid.UUID, budget_id: uuid.UUID) -> None:
    await session.delete(await get(session, tenant_id, budget_id))
    await session.flush()


async def present(session: AsyncSession, budget: Budget) -> BudgetOut:
    start = period_start(budget.period, utcnow())
    counters = await session.get(BudgetPeriod, (budget.id, start))
    spent = counters.spent if counters is not None else Decimal(0)
    reserved = counters.reserved if counters is not None else Decimal(0)
    return BudgetOut(
        id=budget.id,
        scope=budget.scope,
        subject=budget.subject,
        period=budget.period,
        limit=budget.limit,
        currency=budget.currency,
        thresholds=[Decimal(t) for t in budget.thresholds],
        period_start=start,
        spent=spent,
        reserved=reserved,
        remaining=max(Decimal(0), budget.limit - spent),
        created_at=budget.created_at,
        updated_at=budget.updated_at,
    )
