"""Usage records (one per model call) and the tenant's usage report."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any, Literal, cast

from sqlalchemy import Table, func, insert, select
from sqlalchemy.ext.asyncio import AsyncSession

from atelier.db.base import utcnow
from atelier.llm.base import UsageReport
from atelier.llm.models import CatalogModel
from atelier.usage.cost import Prices, cost
from atelier.usage.models import UsageRecord

GroupBy = Literal["day", "model", "user", "conversation", "api_key", "agent"]


async def record_usage(
    session: AsyncSession,
    *,
    tenant_id: uuid.UUID,
    user_id: str,
    model: CatalogModel,
    usage: UsageReport,
    conversation_id: uuid.UUID | None = None,
    run_id: uuid.UUID | None = None,
    event_id: int | None = None,
    api_key_id: uuid.UUID | None = None,
    agent_id: uuid.UUID | None = None,
    estimated: bool = False,
    started_at: datetime | None = None,
    first_token_at: datetime | None = None,
) -> Decimal | None:
    """Record one model call with the prices it was costed at; returns its cost (None when
    the provider reported no tokens: unknown, not zero)."""
    prices = Prices.of(model)
    charged = cost(usage, prices)
    await session.execute(
        _INSERT,  # Core, made once: the ORM's insert builds its statement on every call
        dict(
            id=uuid.uuid4(),
            tenant_id=tenant_id,
            user_id=user_id,
            conversation_id=conversation_id,
            run_id=run_id,
            api_key_id=api_key_id,
            agent_id=agent_id,
            model_id=model.id,
            provider=model.provider,
            input_tokens=usage.input_tokens,
            output_tokens=usage.output_tokens,
            cache_read_tokens=usage.cache_read_tokens,
            cache_write_tokens=usage.cache_write_tokens,
            cost=charged,
            estimated=estimated,
            currency=prices.currency,
            input_price_per_mtok=prices.input_per_mtok,
            output_price_per_mtok=prices.output_per_mtok,
            event_id=event_id,
            started_at=started_at,
            first_token_at=first_token_at,
            created_at=utcnow(),
        ),
    )
    return charged


_INSERT = insert(cast(Table, UsageRecord.__table__))


@dataclass(frozen=True)
class UsageSum:
    key: str
    input_tokens: int
    output_tokens: int
    cache_read_tokens: int
    cache_write_tokens: int
    cost: Decimal | None  # of the priced calls; None when no call in the group was
    requests: int
    unpriced_requests: int  # calls the provider reported no tokens for: cost unknown
    split: str | None = None  # the second dimension's value, when the report has one


async def report(
    session: AsyncSession,
    tenant_id: uuid.UUID,
    group_by: GroupBy,
    start: datetime | None,
    end: datetime | None,
    split_by: GroupBy | None = None,
) -> list[UsageSum]:
    """The tenant's usage per group (and, with ``split_by``, per value of a second
    dimension within each group: per day and model, say), summed in SQL. An unknown cost
    is never counted as zero: the calls without one are counted apart."""
    dialect = session.get_bind().dialect.name
    keys = [_dimension(group_by, dialect)]
    if split_by is not None:
        keys.append(_dimension(split_by, dialect))
    query = select(
        *(key.label(f"key{i}") for i, key in enumerate(keys)),
        func.coalesce(func.sum(UsageRecord.input_tokens), 0),
        func.coalesce(func.sum(UsageRecord.output_tokens), 0),
        func.coalesce(func.sum(UsageRecord.cache_read_tokens), 0),
        func.coalesce(func.sum(UsageRecord.cache_write_tokens), 0),
        func.sum(UsageRecord.cost),  # NULL when every call's cost is unknown
        func.count(),
        func.count() - func.count(UsageRecord.cost),
    ).where(UsageRecord.tenant_id == tenant_id)
    for dimension, key in zip((group_by, split_by), keys, strict=False):
        if dimension in ("conversation", "api_key", "agent"):
            query = query.where(key.is_not(None))  # calls of none (chat turns have no agent)
    if start is not None:
        query = query.where(UsageRecord.created_at >= start)
    if end is not None:
        query = query.where(UsageRecord.created_at < end)
    rows = await session.execute(query.group_by(*keys).order_by(*keys))
    width = len(keys)
    sums = []
    for row in rows:
        tokens_in, tokens_out, cache_read, cache_write, charged, calls, unpriced = row[width:]
        sums.append(
            UsageSum(
                str(row[0]),
                int(tokens_in),
                int(tokens_out),
                int(cache_read),
                int(cache_write),
                None if charged is None else Decimal(charged),
                int(calls),
                int(unpriced),
                str(row[1]) if split_by is not None else None,
            )
        )
    return sums


def _dimension(group_by: GroupBy, dialect: str) -> Any:
    if group_by == "day":
        # Both store UTC: SQLite as ISO text, PostgreSQL as timestamptz.
        return (
            func.to_char(func.timezone("UTC", UsageRecord.created_at), "YYYY-MM-DD")
            if dialect == "postgresql"
            else func.substr(UsageRecord.created_at, 1, 10)
        )
    columns = {
        "model": UsageRecord.model_id,
        "user": UsageRecord.user_id,
        "api_key": UsageRecord.api_key_id,
        "agent": UsageRecord.agent_id,
        "conversation": UsageRecord.conversation_id,
    }
    return columns[group_by]
