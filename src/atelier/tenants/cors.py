"""The origins a tenant's frontends run on: browsers there may call Atelier (CORS).

A preflight carries no key, so it is answered for an origin any tenant lists; the request
that follows is answered with CORS headers only when its own tenant lists the origin.
"""

from __future__ import annotations

import time
import uuid
from collections import OrderedDict

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from atelier.db.limits import reached
from atelier.tenants.models import CorsOrigin


async def origins(session: AsyncSession, tenant_id: uuid.UUID) -> list[str]:
    return list(
        await session.scalars(
            select(CorsOrigin.origin)
            .where(CorsOrigin.tenant_id == tenant_id)
            .order_by(CorsOrigin.origin)
        )
    )


async def replace(
    session: AsyncSession, tenant_id: uuid.UUID, wanted: list[str], *, limit: int
) -> list[str]:
    if len(wanted) > limit:
        raise reached("CORS origins", limit, "ATELIER_MAX_CORS_ORIGINS")
    await session.execute(delete(CorsOrigin).where(CorsOrigin.tenant_id == tenant_id))
    session.add_all(CorsOrigin(tenant_id=tenant_id, origin=origin) for origin in wanted)
    await session.flush()
    return sorted(wanted)


class OriginCache:
    """Which tenants list an origin, trusted for ``ttl_seconds``: a preflight costs no
    query most of the time, and a tenant's change reaches every process that soon."""

    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        ttl_seconds: float,
        max_entries: int = 10_000,
    ) -> None:
        self.sessionmaker = sessionmaker
        self.ttl = ttl_seconds
        self.max_entries = max_entries
        self._entries: OrderedDict[str, tuple[float, frozenset[uuid.UUID]]] = OrderedDict()

    async def tenants_listing(self, origin: str) -> frozenset[uuid.UUID]:
        kept = self._entries.get(origin)
        if kept is not None and time.monotonic() < kept[0]:
            return kept[1]
        async with self.sessionmaker() as session:
            found = frozenset(
                await session.scalars(
                    select(CorsOrigin.tenant_id).where(CorsOrigin.origin == origin)
                )
            )
        self._entries[origin] = (time.monotonic() + self.ttl, found)
        self._entries.move_to_end(origin)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)
        return found

    def forget(self) -> None:
        self._entries.clear()
