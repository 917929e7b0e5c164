"""Idempotency keys in SQL: claimed by one request at a time, answered once, kept 24 h.

The row is the lock: a request inserts it (or takes over one whose holder's lock ran
out, or that expired); a second request with the key finds it and waits for its answer.
Each step commits on its own: the row must be seen by other processes at once.

An answer that carries a secret (``Cache-Control: no-store``) is kept sealed, as the
secret itself is; an answer is deleted with what it is about (``forget_about``); a
tenant keeps at most ``limit`` of them.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import delete, func, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from atelier.agents.secrets import Sealer
from atelier.db.base import utcnow
from atelier.idempotency.models import IdempotentRequest

KEEP = timedelta(hours=24)
LOCK = timedelta(minutes=5)  # a first request not answered by then (its process died) is retried


@dataclass(frozen=True)
class Answer:
    status: int
    headers: list[tuple[str, str]]
    body: bytes
    streamed: bool
    subject: uuid.UUID | None = None  # what it is about: deleted with it

    @property
    def secret(self) -> bool:
        """It carries a secret: it says so to every cache, and is kept sealed."""
        return any(
            k.lower() == "cache-control" and "no-store" in v.lower() for k, v in self.headers
        )


class TooManyKept(Exception):
    """The tenant keeps as many answers as it may (``limit``)."""


@dataclass(frozen=True)
class Seen:
    """The key's request as first made, and its answer if it has one yet."""

    fingerprint: str
    body_hash: str | None
    answer: Answer | None


class IdempotencyStore:
    def __init__(
        self, sessions: async_sessionmaker[AsyncSession], sealer: Sealer, limit: int
    ) -> None:
        self.sessions = sessions
        self.sealer = sealer
        self.limit = limit

    async def claim(self, tenant_id: uuid.UUID, key: str, fingerprint: str) -> Seen | None:
        """None: this request is the key's to answer. Else what the key already names.
        Raises ``TooManyKept`` for a new key of a tenant that keeps ``limit`` answers."""
        now = utcnow()
        async with self.sessions() as session:
            kept = await session.scalar(
                select(func.count())
                .select_from(IdempotentRequest)
                .where(
                    IdempotentRequest.tenant_id == tenant_id, IdempotentRequest.expires_at >= now
                )
            )
            if (kept or 0) >= self.limit:
                seen = await self._seen(session, tenant_id, key)
                if seen is None:
                    raise TooManyKept
                return seen
            session.add(
                IdempotentRequest(
                    tenant_id=tenant_id,
                    key=key,
                    fingerprint=fingerprint,
                    locked_until=now + LOCK,
                    expires_at=now + KEEP,
                    created_at=now,
                )
            )
            try:
                await session.commit()
                return None
            except IntegrityError:
                await session.rollback()
            # Taken over if it expired, or its first request's process died unanswered.
            stale = or_(
                IdempotentRequest.expires_at < now,
                (IdempotentRequest.status.is_(None)) & (IdempotentRequest.locked_until < now),
            )
            taken = await session.scalar(
                update(IdempotentRequest)
                .where(_the(tenant_id, key), stale)
                .values(
                    fingerprint=fingerprint,
                    body_hash=None,
                    locked_until=now + LOCK,
                    status=None,
                    headers=None,
                    body=None,
                    streamed=False,
                    subject=None,
                    sealed=False,
                    created_at=now,
                    expires_at=now + KEEP,
                )
                .returning(IdempotentRequest.key)
            )
            await session.commit()
            if taken is not None:
                return None
            return await self._seen(session, tenant_id, key)

    async def seen(self, tenant_id: uuid.UUID, key: str) -> Seen | None:
        async with self.sessions() as session:
            return await self._seen(session, tenant_id, key)

    async def body_received(self, tenant_id: uuid.UUID, key: str, body_hash: str) -> None:
        async with self.sessions() as session:
            await session.execute(
                update(IdempotentRequest).where(_the(tenant_id, key)).values(body_hash=body_hash)
            )
            await session.commit()

    async def answered(self, tenant_id: uuid.UUID, key: str, answer: Answer) -> None:
        """Keep ``answer`` (sealed if it carries a secret; not at all if it carries one and
        there is no key to seal it with)."""
        body, sealed = answer.body, False
        if answer.secret and body:
            body, sealed = self.sealer.seal_text(body.decode("latin-1")).encode(), True
        async with self.sessions() as session:
            await session.execute(
                update(IdempotentRequest)
                .where(_the(tenant_id, key))
                .values(
                    status=answer.status,
                    headers=[list(pair) for pair in answer.headers],
                    body=body,
                    sealed=sealed,
                    streamed=answer.streamed,
                    subject=answer.subject,
                    locked_until=None,
                )
            )
            await session.commit()

    async def release(self, tenant_id: uuid.UUID, key: str) -> None:
        """The request was not answered in a way worth giving again: the key is free."""
        async with self.sessions() as session:
            await session.execute(delete(IdempotentRequest).where(_the(tenant_id, key)))
            await session.commit()

    async def forget_expired(self) -> int:
        async with self.sessions() as session:
            gone = await session.execute(
                delete(IdempotentRequest).where(IdempotentRequest.expires_at < utcnow())
            )
            await session.commit()
        return int(getattr(gone, "rowcount", 0) or 0)

    async def _seen(self, session: AsyncSession, tenant_id: uuid.UUID, key: str) -> Seen | None:
        row = await session.scalar(
            select(IdempotentRequest)
            .where(_the(tenant_id, key))
            .execution_options(populate_existing=True)
        )
        if row is None:
            return None
        answer = None
        if row.status is not None:
            headers: list[Any] = row.headers or []
            body = row.body or b""
            if row.sealed:
                body = self.sealer.open_text(body.decode()).encode("latin-1")
            answer = Answer(row.status, [(k, v) for k, v in headers], body, row.streamed)
        return Seen(row.fingerprint, row.body_hash, answer)


async def forget_about(
    session: AsyncSession, tenant_id: uuid.UUID, subjects: list[uuid.UUID]
) -> None:
    """Stored answers about what is being deleted go with it (in the caller's unit of
    work): a replay must not give back what was deleted."""
    if subjects:
        await session.execute(
            delete(IdempotentRequest).where(
                IdempotentRequest.tenant_id == tenant_id, IdempotentRequest.subject.in_(subjects)
            )
        )


def _the(tenant_id: uuid.UUID, key: str) -> Any:
    return (IdempotentRequest.tenant_id == tenant_id) & (IdempotentRequest.key == key)
