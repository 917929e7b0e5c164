"""Keyset paging for the lists that grow with requests (agents, versions, webhooks,
deliveries, budgets): ``limit`` rows after an opaque cursor, ordered by columns that
together name one row. A cursor is the last row's key, so a page never repeats or skips
a row that was there when the first page was read."""

from __future__ import annotations

import base64
import binascii
import json
import uuid
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Select, bindparam, tuple_
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import InstrumentedAttribute

MAX_LIMIT = 100


class InvalidCursor(ValueError):
    """A cursor this API did not give."""


async def page(
    session: AsyncSession,
    query: Select[Any],
    keys: Sequence[InstrumentedAttribute[Any]],
    limit: int,
    cursor: str | None,
    *,
    newest_first: bool = False,
) -> tuple[list[Any], str | None]:
    """Up to ``limit`` rows of ``query`` after ``cursor``, and the cursor of the next page
    (None on the last). Raises ``InvalidCursor``."""
    if cursor is not None:
        after = tuple_(*keys)
        # Bound with each column's type: stored the way the column stores it.
        values = _decoded(cursor, keys)
        start = tuple_(
            *(bindparam(None, v, type_=k.type) for v, k in zip(values, keys, strict=True))
        )
        query = query.where(after < start if newest_first else after > start)
    order = [key.desc() if newest_first else key.asc() for key in keys]
    rows = list(await session.scalars(query.order_by(*order).limit(limit + 1)))
    if len(rows) <= limit:
        return rows, None
    last = rows[limit - 1]
    return rows[:limit], _encoded([getattr(last, key.key) for key in keys])


def _encoded(values: list[Any]) -> str:
    tagged = [_tagged(value) for value in values]
    return base64.urlsafe_b64encode(json.dumps(tagged).encode()).decode().rstrip("=")


def _tagged(value: Any) -> list[Any]:
    if isinstance(value, datetime):
        return ["d", value.isoformat()]
    if isinstance(value, uuid.UUID):  # asyncpg's own UUID type is one too
        return ["u", str(value)]
    return ["i" if isinstance(value, int) else "s", value]


_READ: dict[str, Callable[[Any], Any]] = {
    "d": datetime.fromisoformat,
    "u": uuid.UUID,
    "i": int,
    "s": str,
}


def _decoded(cursor: str, keys: Sequence[InstrumentedAttribute[Any]]) -> list[Any]:
    try:
        raw = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        if not isinstance(raw, list) or len(raw) != len(keys):
            raise InvalidCursor(cursor)
        values = [_READ[tag](value) for tag, value in raw]
    except (ValueError, TypeError, KeyError, binascii.Error, UnicodeDecodeError) as exc:
        raise InvalidCursor(cursor) from exc
    if any(isinstance(v, datetime) and v.tzinfo is None for v in values):
        raise InvalidCursor(cursor)
    return values
