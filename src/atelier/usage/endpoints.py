from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Annotated

from fastapi import APIRouter, Query
from pydantic import BaseModel, field_serializer

from atelier.http.deps import PrincipalDep, ResourcesDep, SessionDep
from atelier.http.errors import ProblemError
from atelier.usage.money import money_str
from atelier.usage.service import GroupBy, report

router = APIRouter(prefix="/v1/usage", tags=["usage"])


class UsageRow(BaseModel):
    key: str
    input_tokens: int  # billed at the input price: cache reads and writes are apart
    output_tokens: int
    cache_read_tokens: int
    cache_write_tokens: int
    cost: Decimal | None  # of the priced calls; null when none of them was priced
    requests: int
    unpriced_requests: int  # calls whose provider reported no tokens: their cost is unknown
    split: str | None = None  # with split_by: the second dimension's value

    @field_serializer("cost")
    def _money(self, value: Decimal | None) -> str | None:
        return None if value is None else money_str(value)


class UsageReportOut(BaseModel):
    data: list[UsageRow]
    currency: str


def _utc(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    if value.tzinfo is None:
        raise ProblemError(
            400, "invalid_time", "times need a UTC offset, e.g. 2026-11-01T00:00:00Z"
        )
    try:
        return value.astimezone(UTC)
    except OverflowError:
        # 0001-01-01T00:00+20:00 is a valid string but no representable UTC instant.
        raise ProblemError(400, "invalid_time", "time is out of range") from None


@router.get("")
async def get_usage(
    principal: PrincipalDep,
    session: SessionDep,
    resources: ResourcesDep,
    group_by: GroupBy = "day",
    split_by: GroupBy | None = None,
    start: Annotated[datetime | None, Query(alias="from")] = None,
    end: Annotated[datetime | None, Query(alias="to")] = None,
) -> UsageReportOut:
    """Usage per ``group_by``; with ``split_by``, per value of that second dimension
    within each group too (``group_by=day&split_by=model``: a chart's stacked bars)."""
    if split_by == group_by:
        raise ProblemError(400, "invalid_split", "split_by must differ from group_by")
    rows = await report(session, principal.tenant_id, group_by, _utc(start), _utc(end), split_by)
    return UsageReportOut(
        data=[UsageRow.model_validate(row, from_attributes=True) for row in rows],
        currency=resources.settings.default_currency,
    )
