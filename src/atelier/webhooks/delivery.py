"""Sends the outbox: any process takes the deliveries that are due, signs each as
Standard Webhooks, posts it, and records what the endpoint answered.

A delivery is taken by moving its ``next_attempt_at`` past the attempt's timeout, in the
statement that finds it: two processes never send it at once, and one that dies while
sending leaves it to be sent again once that time has passed (at least once).
"""

from __future__ import annotations

import asyncio
import json
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import httpx
import structlog
from sqlalchemy import and_, delete, select, tuple_, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from standardwebhooks.webhooks import Webhook as Signer

from atelier.agents.secrets import Sealer, SecretsUnavailable
from atelier.db.base import utcnow
from atelier.http.outbound import scrubbed, tenant_client
from atelier.settings import Settings
from atelier.webhooks.models import Webhook, WebhookDelivery

log = structlog.get_logger("atelier.webhooks")
BACKOFF = (1, 60, 360, 1440, 3600, 7200)  # x the base: after the 1st, 2nd, ... attempt
PREVIOUS_SECRET_SIGNS = timedelta(days=1)  # after a rotation, both secrets sign
BATCH = 20
LEASE_MARGIN_SECONDS = 5
KEPT_FOR = timedelta(days=30)  # delivered and failed deliveries are listed this long
FORGET_EVERY_POLLS = 600
USER_AGENT = "Atelier-Webhooks/1"
UNSIGNED_RETRY = timedelta(seconds=30)  # a delivery this process could not sign waits this


@dataclass(frozen=True)
class Attempt:
    status_code: int | None
    error: str | None
    # Not sent at all: this process's keys cannot open the hook's secret. Not the
    # receiver's failure, so no attempt is counted; a process that can open it sends it.
    unsigned: bool = False

    @property
    def delivered(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


def body_of(delivery: WebhookDelivery) -> str:
    """What is posted (and signed): the same bytes on every attempt."""
    envelope = {
        "type": delivery.event_type,
        "timestamp": delivery.created_at.isoformat(),
        "data": delivery.data,
    }
    return json.dumps(envelope, separators=(",", ":"))


def message_id(event_id: uuid.UUID) -> str:
    return f"msg_{event_id.hex}"


class WebhookSender:
    def __init__(
        self, sessions: async_sessionmaker[AsyncSession], sealer: Sealer, settings: Settings
    ) -> None:
        self.sessions = sessions
        self.sealer = sealer
        self.settings = settings
        self._client: httpx.AsyncClient | None = None

    async def client(self) -> httpx.AsyncClient:
        """Made at the first delivery, on a worker thread: its TLS context (the CA bundle,
        read and parsed) costs tens of milliseconds, which the event loop does not wait
        for, and a process that never sends one does not pay at start."""
        if self._client is None:
            self._client = await asyncio.to_thread(
                tenant_client,
                allow_private=self.settings.webhook_allow_private,
                timeout=self.settings.webhook_timeout_seconds,
                headers={"user-agent": USER_AGENT},
            )
        return self._client

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()

    async def run_forever(self) -> None:
        """Every process sends what is due, and forgets month-old deliveries now and then."""
        polls = 0
        while True:
            await asyncio.sleep(self.settings.webhook_poll_seconds)
            try:
                while await self.send_due() == BATCH:
                    pass
                polls += 1
                if polls % FORGET_EVERY_POLLS == 0:
                    await self.forget_old()
            except Exception:
                log.warning("webhook delivery failed; retrying", exc_info=True)

    async def forget_old(self) -> int:
        before = utcnow() - KEPT_FOR
        async with self.sessions() as session:
            gone = await session.execute(
                delete(WebhookDelivery).where(
                    WebhookDelivery.status != "pending", WebhookDelivery.created_at < before
                )
            )
            await session.commit()
        return int(gone.rowcount or 0)  # type: ignore[attr-defined]

    async def send_due(self) -> int:
        """Send the deliveries that are due (a batch); returns how many were attempted."""
        async with self.sessions() as session:
            taken = await self._take(session)
            await session.commit()
        if not taken:
            return 0
        client = await self.client()
        attempts = await asyncio.gather(*(self._send(client, d, w) for d, w in taken))
        async with self.sessions() as session:
            for (delivery, _), attempt in zip(taken, attempts, strict=True):
                await self._record(session, delivery, attempt)
            await session.commit()
        return len(taken)

    async def _take(self, session: AsyncSession) -> list[tuple[WebhookDelivery, Webhook]]:
        now = utcnow()
        is_due = and_(WebhookDelivery.status == "pending", WebhookDelivery.next_attempt_at <= now)
        # A look first, which writes nothing: most polls find nothing to send.
        if await session.scalar(select(WebhookDelivery.event_id).where(is_due).limit(1)) is None:
            return []
        due = (
            select(WebhookDelivery.event_id, WebhookDelivery.webhook_id)
            .where(is_due)
            .order_by(WebhookDelivery.next_attempt_at)
            .limit(BATCH)
            .with_for_update(skip_locked=True)
        )
        key = tuple_(WebhookDelivery.event_id, WebhookDelivery.webhook_id)
        # Past this attempt's timeout (and a margin): if this process dies, another sends it.
        lease = timedelta(seconds=self.settings.webhook_timeout_seconds + LEASE_MARGIN_SECONDS)
        taken = await session.execute(
            update(WebhookDelivery)
            .where(
                key.in_(due),
                WebhookDelivery.status == "pending",
                WebhookDelivery.next_attempt_at <= now,
            )
            .values(next_attempt_at=now + lease)
            .returning(WebhookDelivery)
            .execution_options(synchronize_session=False)
        )
        deliveries = list(taken.scalars())
        if not deliveries:
            return []
        hooks = await session.scalars(
            select(Webhook).where(Webhook.id.in_({d.webhook_id for d in deliveries}))
        )
        by_id = {hook.id: hook for hook in hooks}
        return [(d, by_id[d.webhook_id]) for d in deliveries if d.webhook_id in by_id]

    async def _send(
        self, client: httpx.AsyncClient, delivery: WebhookDelivery, hook: Webhook
    ) -> Attempt:
        body = body_of(delivery)
        msg_id = message_id(delivery.event_id)
        now = utcnow()
        try:
            signature = " ".join(
                Signer(secret).sign(msg_id, now, body) for secret in self._secrets(hook, now)
            )
        except SecretsUnavailable as exc:
            log.warning("webhook not sent: this process cannot open its secret", error=str(exc))
            return Attempt(None, str(exc), unsigned=True)
        headers = {
            "content-type": "application/json",
            "webhook-id": msg_id,
            "webhook-timestamp": str(int(now.timestamp())),
            "webhook-signature": signature,
        }
        try:
            # The answer's body is never read: only its status counts. The timeout bounds
            # the whole attempt (httpx's bounds each read: a trickle could go on for ever).
            async with (
                asyncio.timeout(self.settings.webhook_timeout_seconds),
                client.stream("POST", hook.url, content=body, headers=headers) as got,
            ):
                return Attempt(got.status_code, None)
        except (httpx.TimeoutException, TimeoutError):
            return Attempt(None, "timed out")
        except httpx.HTTPError as exc:
            return Attempt(None, scrubbed(str(exc) or type(exc).__name__, hook.url))

    def _secrets(self, hook: Webhook, now: datetime) -> list[str]:
        secrets = [self.sealer.open_text(hook.secret)]
        rotated = hook.rotated_at
        if hook.previous_secret and rotated and now - rotated < PREVIOUS_SECRET_SIGNS:
            secrets.append(self.sealer.open_text(hook.previous_secret))
        return secrets

    async def _record(
        self, session: AsyncSession, delivery: WebhookDelivery, attempt: Attempt
    ) -> None:
        now = utcnow()
        values: dict[str, Any]
        window = timedelta(seconds=self.settings.webhook_retry_window_seconds)
        if attempt.unsigned and now + UNSIGNED_RETRY <= delivery.created_at + window:
            # Left for a process that can open its secret (the ready check fails here).
            values = {"last_error": attempt.error, "next_attempt_at": now + UNSIGNED_RETRY}
        elif attempt.unsigned:
            values = {"last_error": attempt.error, "status": "failed"}
        else:
            values = self._attempted(delivery, attempt, now)
        await session.execute(
            update(WebhookDelivery)
            .where(
                WebhookDelivery.event_id == delivery.event_id,
                WebhookDelivery.webhook_id == delivery.webhook_id,
            )
            .values(**values)
        )

    def _attempted(
        self, delivery: WebhookDelivery, attempt: Attempt, now: datetime
    ) -> dict[str, Any]:
        attempts = delivery.attempts + 1
        values: dict[str, Any] = {
            "attempts": attempts,
            "last_status_code": attempt.status_code,
            "last_error": attempt.error,
            "last_attempt_at": now,
        }
        if attempt.delivered:
            values |= {"status": "delivered", "delivered_at": now}
        else:
            step = BACKOFF[min(attempts, len(BACKOFF)) - 1]
            later = now + timedelta(seconds=step * self.settings.webhook_retry_base_seconds)
            window = timedelta(seconds=self.settings.webhook_retry_window_seconds)
            if later > delivery.created_at + window:
                values["status"] = "failed"
                log.warning("webhook delivery failed for good", event_type=delivery.event_type)
            else:
                values["next_attempt_at"] = later
        return values
