"""Resources owned by one (tenant, user): conversations and chats share these rules.

Another user's or tenant's id is indistinguishable from an id that does not exist (404),
and listings are newest first with an opaque cursor.
"""

from __future__ import annotations

import base64
import binascii
import uuid
from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy import and_, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from atelier.chats.models import Chat
from atelier.conversations.models import Conversation
from atelier.http.errors import ProblemError
from atelier.http.scope import Principal

T = TypeVar("T", Conversation, Chat)


async def get_owned(
    session: AsyncSession, principal: Principal, model: type[T], row_id: uuid.UUID, what: str
) -> T:
    row = await session.scalar(
        select(model).where(
            model.id == row_id,
            model.tenant_id == principal.tenant_id,
            model.user_id == principal.user_id,
        )
    )
    if row is None:
        raise ProblemError(404, "not_found", f"no such {what}")
    return row


def new_owned(model: type[T], principal: Principal, data: Any) -> T:
    assert principal.user_id is not None
    return model(
        tenant_id=principal.tenant_id,
        user_id=principal.user_id,
        title=data.title,
        model_id=data.model_id,
        metadata_=data.metadata or {},
    )


def apply_write(row: Conversation | Chat, data: Any) -> None:
    """PATCH semantics: only the fields the client sent change (an explicit null clears)."""
    fields = data.model_fields_set
    if "title" in fields:
        row.title = data.title
    if "model_id" in fields:
        row.model_id = data.model_id
    if "metadata" in fields:
        row.metadata_ = data.metadata or {}


async def list_owned(
    session: AsyncSession, principal: Principal, model: type[T], limit: int, cursor: str | None
) -> tuple[list[T], str | None]:
    query = select(model).where(
        model.tenant_id == principal.tenant_id, model.user_id == principal.user_id
    )
    if cursor is not None:
        created_at, last_id = decode_cursor(cursor)
        query = query.where(
            or_(
                model.created_at < created_at,
                and_(model.created_at == created_at, model.id < last_id),
            )
        )
    query = query.order_by(model.created_at.desc(), model.id.desc()).limit(limit + 1)
    rows = list(await session.scalars(query))
    last = rows[limit - 1] if len(rows) > limit else None
    return rows[:limit], encode_cursor(last.created_at, last.id) if last is not None else None


def encode_cursor(created_at: datetime, row_id: uuid.UUID) -> str:
    raw = f"{created_at.isoformat()}|{row_id}"
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, uuid.UUID]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        created_at, last_id = raw.split("|")
        parsed = datetime.fromisoformat(created_at)
        if parsed.tzinfo is None:
            raise ValueError("naive")
        return parsed, uuid.UUID(last_id)
    except (ValueError, binascii.Error, UnicodeDecodeError) as exc:
        raise ProblemError(
            400, "invalid_cursor", "the cursor is not one this API returned"
        ) from exc
