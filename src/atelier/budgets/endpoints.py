from __future__ import annotations

import uuid

from fastapi import APIRouter, Response

from atelier.budgets import service
from atelier.budgets.schemas import BudgetIn, BudgetList, BudgetOut, BudgetPatch
from atelier.db.paging import MAX_LIMIT
from atelier.http.deps import Cursor, Limit, PrincipalDep, ResourcesDep, SessionDep

router = APIRouter(prefix="/v1/budgets", tags=["budgets"])


@router.post("", status_code=201)
async def create_budget(
    body: BudgetIn, principal: PrincipalDep, session: SessionDep, resources: ResourcesDep
) -> BudgetOut:
    """Binds from now on; its current period starts with what was spent in it already."""
    currency = resources.settings.default_currency
    return await service.create(
        session, principal.tenant_id, body, currency, resources.settings.max_budgets
    )


@router.get("")
async def list_budgets(
    principal: PrincipalDep, session: SessionDep, limit: Limit = MAX_LIMIT, cursor: Cursor = None
) -> BudgetList:
    found, next_cursor = await service.list_all(session, principal.tenant_id, limit, cursor)
    return BudgetList(data=found, next_cursor=next_cursor)


@router.get("/{budget_id}")
async def get_budget(
    budget_id: uuid.UUID, principal: PrincipalDep, session: SessionDep
) -> BudgetOut:
    """With what is spent, held and left in the current period (UTC)."""
    return await service.present(
        session, await service.get(session, principal.tenant_id, budget_id)
    )


@router.patch("/{budget_id}")
async def update_budget(
    budget_id: uuid.UUID, body: BudgetPatch, principal: PrincipalDep, session: SessionDep
) -> BudgetOut:
    return await service.change(session, principal.tenant_id, budget_id, body)


@router.delete("/{budget_id}", status_code=204)
async def delete_budget(
    budget_id: uuid.UUID, principal: PrincipalDep, session: SessionDep
) -> Response:
    await service.delete(session, principal.tenant_id, budget_id)
    return Response(status_code=204)
