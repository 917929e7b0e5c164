from __future__ import annotations

from decimal import Decimal

from fastapi import APIRouter
from pydantic import BaseModel, field_serializer
from sqlalchemy import select

from atelier.http.deps import CallerDep, ResourcesDep, SessionDep
from atelier.llm.models import CatalogModel
from atelier.usage.money import money_str

router = APIRouter(prefix="/v1/models", tags=["models"])


class ModelOut(BaseModel):
    id: str
    provider: str
    display_name: str
    context_window: int | None
    max_output_tokens: int | None
    input_price_per_mtok: Decimal
    output_price_per_mtok: Decimal
    currency: str

    @field_serializer("input_price_per_mtok", "output_price_per_mtok")
    def _price(self, value: Decimal) -> str:
        return money_str(value)


class ModelList(BaseModel):
    data: list[ModelOut]


@router.get("")
async def list_models(_: CallerDep, session: SessionDep, resources: ResourcesDep) -> ModelList:
    rows = await session.scalars(
        select(CatalogModel).where(CatalogModel.enabled).order_by(CatalogModel.id)
    )
    return ModelList(
        data=[
            ModelOut.model_validate(row, from_attributes=True)
            for row in rows
            if resources.models.get(row.provider) is not None
        ]
    )
