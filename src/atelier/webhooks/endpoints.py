from __future__ import annotations

import uuid
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Response

from atelier.db.paging import MAX_LIMIT
from atelier.http.deps import Cursor, Limit, PrincipalDep, ResourcesDep, SessionDep
from atelier.webhooks import service
from atelier.webhooks.schemas import (
    DeliveryList,
    DeliveryOut,
    WebhookIn,
    WebhookList,
    WebhookOut,
    WebhookPatch,
    WebhookWithSecret,
)

router = APIRouter(prefix="/v1/webhooks", tags=["webhooks"])
# An answer with a secret in it: no cache keeps it (and an Idempotency-Key's is sealed).
NO_STORE = "no-store"
REFUSED: dict[int | str, dict[str, Any]] = {
    400: {"description": "webhook_url_not_allowed: a loopback or private address"}
}


@router.post("", status_code=201, responses=REFUSED)
async def create_webhook(
    body: WebhookIn,
    principal: PrincipalDep,
    session: SessionDep,
    resources: ResourcesDep,
    response: Response,
) -> WebhookWithSecret:
    """The answer holds the signing secret: it is never shown again (rotate it if lost)."""
    response.headers["cache-control"] = NO_STORE
    await service.check_url(body.url, allow_private=resources.settings.webhook_allow_private)
    return await service.create(
        session, principal.tenant_id, body, resources.sealer, resources.settings.max_webhooks
    )


@router.get("")
async def list_webhooks(
    principal: PrincipalDep, session: SessionDep, limit: Limit = MAX_LIMIT, cursor: Cursor = None
) -> WebhookList:
    rows, next_cursor = await service.list_all(session, principal.tenant_id, limit, cursor)
    return WebhookList(data=[service.present(hook) for hook in rows], next_cursor=next_cursor)


@router.get("/{webhook_id}")
async def get_webhook(
    webhook_id: uuid.UUID, principal: PrincipalDep, session: SessionDep
) -> WebhookOut:
    return service.present(await service.get(session, principal.tenant_id, webhook_id))


@router.patch("/{webhook_id}", responses=REFUSED)
async def update_webhook(
    webhook_id: uuid.UUID,
    body: WebhookPatch,
    principal: PrincipalDep,
    session: SessionDep,
    resources: ResourcesDep,
) -> WebhookOut:
    if body.url is not None:
        allow_private = resources.settings.webhook_allow_private
        await service.check_url(body.url, allow_private=allow_private)
    hook = await service.change(session, principal.tenant_id, webhook_id, body)
    return service.present(hook)


@router.delete("/{webhook_id}", status_code=204)
async def delete_webhook(
    webhook_id: uuid.UUID, principal: PrincipalDep, session: SessionDep
) -> Response:
    """Its pending deliveries are not sent."""
    await service.delete(session, principal.tenant_id, webhook_id)
    return Response(status_code=204)


@router.post("/{webhook_id}/rotate-secret")
async def rotate_secret(
    webhook_id: uuid.UUID,
    principal: PrincipalDep,
    session: SessionDep,
    resources: ResourcesDep,
    response: Response,
) -> WebhookWithSecret:
    """A new secret, shown once; for a day deliveries carry both signatures."""
    response.headers["cache-control"] = NO_STORE
    return await service.rotate(session, principal.tenant_id, webhook_id, resources.sealer)


@router.get("/{webhook_id}/deliveries")
async def list_deliveries(
    webhook_id: uuid.UUID,
    principal: PrincipalDep,
    session: SessionDep,
    status: Literal["pending", "delivered", "failed"] | None = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: Cursor = None,
) -> DeliveryList:
    found, next_cursor = await service.deliveries(
        session, principal.tenant_id, webhook_id, status, limit, cursor
    )
    return DeliveryList(data=found, next_cursor=next_cursor)


@router.post("/{webhook_id}/deliveries/{delivery_id}/redeliver", status_code=202)
async def redeliver(
    webhook_id: uuid.UUID, delivery_id: uuid.UUID, principal: PrincipalDep, session: SessionDep
) -> DeliveryOut:
    """Sends a delivery again (a failed one, once the receiver is fixed)."""
    return await service.redeliver(session, principal.tenant_id, webhook_id, delivery_id)
