"""First-run conveniences for the embedded mode: a tenant and a key a newcomer can use at once."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from sqlalchemy.ext.asyncio import AsyncEngine

from atelier.db.engine import create_sessionmaker
from atelier.tenants.service import any_tenant_exists, create_api_key, create_tenant

DEFAULT_TENANT = "default"


async def ensure_dev_tenant(engine: AsyncEngine, key_file: Path) -> str | None:
    """Create the ``default`` tenant and a key when the database has no tenant at all.

    Returns the new key (to print once), or None when a tenant already existed.
    """
    async with create_sessionmaker(engine)() as session:
        if await any_tenant_exists(session):
            return None
        tenant = await create_tenant(session, DEFAULT_TENANT)
        issued = await create_api_key(session, tenant, name="dev")
        await asyncio.to_thread(write_secret_file, key_file, issued.secret)
        await session.commit()
    return issued.secret


def write_secret_file(path: Path, secret: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        handle.write(secret + "\n")
    os.chmod(path, 0o600)  # in case the file already existed with looser bits
