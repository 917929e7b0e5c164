"""Caps on what a tenant's requests make us keep: past one, ``409 limit_reached``
naming the collection and the setting that raises it."""

from __future__ import annotations

from typing import Any

from sqlalchemy import ColumnElement, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from atelier.errors import DomainError, LimitReached


def reached(what: str, limit: int, setting: str) -> DomainError:
    return LimitReached(what, limit, setting)


async def room_for_one(
    session: AsyncSession,
    model: type[Any],
    where: list[ColumnElement[bool]],
    limit: int,
    what: str,
    setting: str,
) -> None:
    """Raise ``limit_reached`` if ``limit`` rows of ``model`` match ``where`` already."""
    kept = await session.scalar(select(func.count()).select_from(model).where(*where))
    if (kept or 0) >= limit:
        raise reached(what, limit, setting)
