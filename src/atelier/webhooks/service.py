"""A tenant's webhooks: their endpoints (checked to be public), secrets (sealed, shown
once) and deliveries. Functions flush; the request's unit of work commits."""

from __future__ import annotations

import base64
import secrets
import uuid
from collections.abc import Sequence
from typing import Literal

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from atelier.agents.secrets import Sealer, SecretsUnavailable
from atelier.db import limits, paging
from atelier.db.base import utcnow
from atelier.errors import NotFound, Refused, Unavailable
from atelier.http.outbound import UrlNotAllowed, check_public, redacted, unredacted
from atelier.idempotency.store import forget_about
from atelier.webhooks.models import Webhook, WebhookDelivery
from atelier.webhooks.schemas import (
    DeliveryOut,
    WebhookIn,
    WebhookOut,
    WebhookPatch,
    WebhookWithSecret,
)


async def check_url(url: str, *, allow_private: bool) -> None:
    """Refuse a URL whose host is (or resolves to) a loopback, private or link-local
    address. Sending checks again, on the address it connects to (DNS may change)."""
    try:
        await check_public(url, allow_private=allow_private)
    except UrlNotAllowed as exc:
        raise Refused("webhook_url_not_allowed", str(exc)) from exc


def new_secret() -> str:
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


def _seal(sealer: Sealer, secret: str) -> str:
    try:
        return sealer.seal_text(secret)
    except SecretsUnavailable as exc:
        raise Unavailable("secrets_unavailable", str(exc)) from exc


async def create(
    session: AsyncSession, tenant_id: uuid.UUID, body: WebhookIn, sealer: Sealer, limit: int
) -> WebhookWithSecret:
    """Each endpoint gets every event it chose: a tenant keeps at most ``limit``."""
    mine = [Webhook.tenant_id == tenant_id, Webhook.run_id.is_(None)]
    await limits.room_for_one(session, Webhook, mine, limit, "webhooks", "ATELIER_MAX_WEBHOOKS")
    secret = new_secret()
    now = utcnow()
    hook = Webhook(
        tenant_id=tenant_id,
        url=body.url,
        events=_stored(body.events),
        enabled=body.enabled,
        secret=_seal(sealer, secret),
        created_at=now,
        updated_at=now,
    )
    session.add(hook)
    await session.flush()
    return WebhookWithSecret(**present(hook).model_dump(), secret=secret)


async def get(session: AsyncSession, tenant_id: uuid.UUID, webhook_id: uuid.UUID) -> Webhook:
    hook = await session.scalar(
        select(Webhook).where(
            Webhook.id == webhook_id, Webhook.tenant_id == tenant_id, Webhook.run_id.is_(None)
        )
    )
    if hook is None:
        raise NotFound("not_found", "no such webhook")
    return hook


async def list_all(
    session: AsyncSession, tenant_id: uuid.UUID, limit: int, cursor: str | None
) -> tuple[list[Webhook], str | None]:
    """A page of the tenant's webhooks, oldest first."""
    query = select(Webhook).where(Webhook.tenant_id == tenant_id, Webhook.run_id.is_(None))
    return await paging.page(session, query, [Webhook.created_at, Webhook.id], limit, cursor)


async def change(
    session: AsyncSession, tenant_id: uuid.UUID, webhook_id: uuid.UUID, body: WebhookPatch
) -> Webhook:
    hook = await get(session, tenant_id, webhook_id)
    if body.url is not None:
        hook.url = unredacted(body.url, hook.url)
    if body.events is not None:
        hook.events = _stored(body.events)
    if body.enabled is not None:
        hook.enabled = body.enabled
    hook.updated_at = utcnow()
    await session.flush()
    return hook


async def rotate(
    session: AsyncSession, tenant_id: uuid.UUID, webhook_id: uuid.UUID, sealer: Sealer
) -> WebhookWithSecret:
    """A new secret signs from now on; the one before still signs for a day beside it."""
    hook = await get(session, tenant_id, webhook_id)
    secret = new_secret()
    hook.previous_secret, hook.secret = hook.secret, _seal(sealer, secret)
    hook.rotated_at = hook.updated_at = utcnow()
    await session.flush()
    return WebhookWithSecret(**present(hook).model_dump(), secret=secret)


async def delete(session: AsyncSession, tenant_id: uuid.UUID, webhook_id: uuid.UUID) -> None:
    """The webhook, and the answers kept for Idempotency-Keys about it (its secret)."""
    await session.delete(await get(session, tenant_id, webhook_id))
    await forget_about(session, tenant_id, [webhook_id])
    await session.flush()


async def deliveries(
    session: AsyncSession,
    tenant_id: uuid.UUID,
    webhook_id: uuid.UUID,
    status: Literal["pending", "delivered", "failed"] | None,
    limit: int,
    cursor: str | None = None,
) -> tuple[list[DeliveryOut], str | None]:
    """A page of its deliveries, the newest first."""
    hook = await get(session, tenant_id, webhook_id)
    query = select(WebhookDelivery).where(WebhookDelivery.webhook_id == hook.id)
    if status is not None:
        query = query.where(WebhookDelivery.status == status)
    rows, next_cursor = await paging.page(
        session,
        query,
        [WebhookDelivery.created_at, WebhookDelivery.event_id],
        limit,
        cursor,
        newest_first=True,
    )
    return [_delivery(row) for row in rows], next_cursor


async def redeliver(
    session: AsyncSession, tenant_id: uuid.UUID, webhook_id: uuid.UUID, event_id: uuid.UUID
) -> DeliveryOut:
    """Send one of its deliveries again (failed, or delivered and wanted once more): it is
    pending from now, sent at the next sweep, and retried while its event's day of retries
    lasts; the same event (``webhook-id``, timestamp), so that a receiver can tell."""
    hook = await get(session, tenant_id, webhook_id)
    row = await session.get(WebhookDelivery, (event_id, hook.id))
    if row is None:
        raise NotFound("not_found", "no such delivery")
    row.status, row.attempts, row.next_attempt_at = "pending", 0, utcnow()
    await session.flush()
    return _delivery(row)


def _delivery(row: WebhookDelivery) -> DeliveryOut:
    return DeliveryOut(
        id=row.event_id,
        event_type=row.event_type,
        status=row.status,
        attempts=row.attempts,
        last_status_code=row.last_status_code,
        last_error=row.last_error,
        last_attempt_at=row.last_attempt_at,
        next_attempt_at=row.next_attempt_at if row.status == "pending" else None,
        delivered_at=row.delivered_at,
        created_at=row.created_at,
        data=row.data,
    )


def present(hook: Webhook) -> WebhookOut:
    return WebhookOut(
        id=hook.id,
        url=redacted(hook.url),
        events=[e for e in hook.events.split(",") if e],
        enabled=hook.enabled,
        secret_rotated_at=hook.rotated_at,
        created_at=hook.created_at,
        updated_at=hook.updated_at,
    )


def for_run(sealer: Sealer, url: str) -> dict[str, str]:
    """A run's own endpoint (its URL checked already), as ``RunRequest.webhook``: told of
    the run's end only, signed with a secret of its own."""
    ends = ("run.completed", "run.failed", "run.cancelled", "run.timed_out")
    return {"url": url, "events": _stored(ends), "secret": _seal(sealer, new_secret())}


def _stored(events: Sequence[str]) -> str:
    return "," + ",".join(sorted(set(events))) + ","
