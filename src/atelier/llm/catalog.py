"""The model catalog: defaults shipped in ``catalog.json``, overridable by the operator
(``ATELIER_MODEL_CATALOG_FILE``), upserted into the ``models`` table at start-up."""

from __future__ import annotations

import json
from decimal import Decimal
from importlib import resources
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, TypeAdapter
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from atelier.errors import Refused
from atelier.llm.models import CatalogModel

Provider = Literal["offline", "anthropic", "openai", "bedrock"]


class CatalogEntry(BaseModel):
    id: str = Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9._:/-]*$")
    provider: Provider
    provider_model_id: str = Field(min_length=1, max_length=256)
    display_name: str = Field(min_length=1, max_length=256)
    # Positive when given (BUG-008): a zero window cannot be configured.
    context_window: int | None = Field(default=None, gt=0)
    max_output_tokens: int | None = Field(default=None, gt=0)
    input_price_per_mtok: Decimal = Field(default=Decimal(0), ge=0)
    output_price_per_mtok: Decimal = Field(default=Decimal(0), ge=0)
    cache_read_price_per_mtok: Decimal | None = Field(default=None, ge=0)
    cache_write_price_per_mtok: Decimal | None = Field(default=None, ge=0)
    currency: str = Field(default="USD", pattern=r"^[A-Z]{3}$")
    enabled: bool = True


_ENTRIES = TypeAdapter(list[CatalogEntry])


def load_catalog(override: Path | None) -> list[CatalogEntry]:
    """The shipped defaults, with the operator's file layered on top (same id replaces)."""
    shipped = resources.files("atelier.llm").joinpath("catalog.json").read_text()
    entries = {entry.id: entry for entry in _ENTRIES.validate_python(json.loads(shipped))}
    if override is not None:
        entries |= {entry.id: entry for entry in _ENTRIES.validate_json(override.read_text())}
    return list(entries.values())


async def seed_catalog(session: AsyncSession, entries: list[CatalogEntry]) -> None:
    existing = {row.id: row for row in await session.scalars(select(CatalogModel))}
    for entry in entries:
        row = existing.get(entry.id) or CatalogModel(id=entry.id)
        for name, value in entry.model_dump().items():
            setattr(row, name, value)
        session.add(row)
    await session.flush()


class ModelCatalog:
    """The enabled models, read once from the database after it is seeded (it changes
    only when a process starts): choosing a model never costs a query."""

    def __init__(self, models: dict[str, CatalogModel]) -> None:
        self._models = models

    @classmethod
    async def load(cls, session: AsyncSession) -> ModelCatalog:
        rows = await session.scalars(select(CatalogModel).where(CatalogModel.enabled))
        return cls({row.id: row for row in rows})

    async def reload(self, session: AsyncSession) -> None:
        self._models = (await self.load(session))._models

    def get(self, model_id: str) -> CatalogModel | None:
        return self._models.get(model_id)

    def resolve(self, model_id: str) -> CatalogModel:
        """The enabled model ``model_id``, or a 400 the caller can act on."""
        model = self._models.get(model_id)
        if model is None:
            raise Refused("unknown_model", f"no enabled model {model_id!r}; see GET /v1/models")
        return model
