"""Events for webhooks, written in the caller's transaction: the change and the news of it
commit together or not at all, so a crash after the commit loses no delivery."""

from __future__ import annotations

import uuid
from typing import Any, get_args

from sqlalchemy import JSON, Integer, String, Uuid, insert, literal, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from atelier.db.base import UTCDateTime, utcnow
from atelier.webhooks.models import Webhook, WebhookDelivery
from atelier.webhooks.schemas import EventType

EVENT_TYPES: tuple[str, ...] = get_args(EventType)


async def record(
    session: AsyncSession,
    tenant_id: uuid.UUID,
    event_type: str,
    data: dict[str, Any],
    *,
    run_id: uuid.UUID | None = None,
) -> None:
    """One delivery per enabled endpoint of the tenant that wants ``event_type`` (and,
    for news of a run, that run's own endpoint): one statement, which writes nothing when
    none does."""
    assert event_type in EVENT_TYPES
    now = utcnow()
    wanted = select(
        literal(uuid.uuid4(), Uuid()),
        Webhook.id,
        literal(event_type, String()),
        literal(data, JSON()),
        literal("pending", String()),
        literal(0, Integer()),
        literal(now, UTCDateTime()),
        literal(now, UTCDateTime()),
    ).where(
        Webhook.tenant_id == tenant_id,
        Webhook.enabled.is_(True),
        Webhook.events.contains(f",{event_type},", autoescape=True),
        Webhook.run_id.is_(None)
        if run_id is None
        else or_(Webhook.run_id.is_(None), Webhook.run_id == run_id),
    )
    columns = [
        "event_id",
        "webhook_id",
        "event_type",
        "data",
        "status",
        "attempts",
        "next_attempt_at",
        "created_at",
    ]
    await session.execute(insert(WebhookDelivery).from_select(columns, wanted))
