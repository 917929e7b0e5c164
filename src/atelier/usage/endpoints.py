from __future__ import annotations

from datetime import datetime
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
    input_tokens: int
    output_tokens: int
    cost: Decimal
    requests: int

    @field_serializer("cost")
    def _money(self, value: Decimal) -> str:
        return money_str(value)


class UsageReportOut(BaseModel):
    data: list[UsageRow]
    currency: str


@router.get("")
async def get_usage(
    principal: PrincipalDep,
    session: SessionDep,
    resources: ResourcesDep,
    group_by: GroupBy = "day",
    start: Annotated[datetime | None, Query(alias="from")] = None,
    end: Annotated[datetime | None, Query(alias="to")] = None,
) -> UsageReportOut:
    for value in (start, end):
        if value is not None and value.tzinfo is None:
            raise ProblemError(
                400, "invalid_time", "times need a UTC offset, e.g. 2026-11-01T00:00:00Z"
            )
    rows = await report(session, principal.tenant_id, group_by, start, end)
    return UsageReportOut(
        data=[
            UsageRow(key=k, input_tokens=i, output_tokens=o, cost=c, requests=n)
            for k, i, o, c, n in rows
        ],
        currency=resources.settings.default_currency,
    )
