"""``atelier``: serve, migrate, and manage tenants and API keys."""

from __future__ import annotations

import asyncio
import math
import os
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, TypeVar

import typer
import uvicorn
from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from atelier.bootstrap import ensure_dev_tenant
from atelier.db.engine import create_engine, create_sessionmaker
from atelier.db.migrate import migrate as run_migrations
from atelier.observability.logging import flush_logs_on_signals
from atelier.settings import Settings
from atelier.tenants import service as tenants

T = TypeVar("T")

app = typer.Typer(help="Atelier: a production backend for AI agents.", no_args_is_help=True)
tenants_app = typer.Typer(help="Manage tenants.", no_args_is_help=True)
keys_app = typer.Typer(help="Manage API keys.", no_args_is_help=True)
app.add_typer(tenants_app, name="tenants")
app.add_typer(keys_app, name="keys")


def load_settings() -> Settings:
    try:
        return Settings()
    except ValidationError as exc:
        messages = "\n".join(f"  - {error['msg']}" for error in exc.errors())
        typer.echo(f"atelier: invalid configuration:\n{messages}", err=True)
        raise typer.Exit(2) from None


def _with_engine(settings: Settings, work: Callable[[AsyncEngine], Awaitable[T]]) -> T:
    engine = create_engine(settings)  # before the loop starts: it may create the data dir

    async def main() -> T:
        try:
            return await work(engine)
        finally:
            await engine.dispose()

    return asyncio.run(main())


def _in_session(settings: Settings, work: Callable[[AsyncSession], Awaitable[T]]) -> T:
    async def with_session(engine: AsyncEngine) -> T:
        async with create_sessionmaker(engine)() as session:
            result = await work(session)
            await session.commit()
            return result

    return _with_engine(settings, with_session)


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Address to bind [ATELIER_HOST].")] = None,
    port: Annotated[int | None, typer.Option(help="Port to bind [ATELIER_PORT].")] = None,
    workers: Annotated[int | None, typer.Option(help="Worker processes [ATELIER_WORKERS].")] = None,
) -> None:
    """Run the HTTP service (migrating the embedded database first)."""
    settings = load_settings()
    private_files(settings.data_dir)
    workers = workers or settings.workers
    if workers > 1 and settings.redis_url is None:
        typer.echo(
            "atelier: --workers > 1 needs ATELIER_REDIS_URL: in-process coordination "
            "cannot be shared between processes",
            err=True,
        )
        raise typer.Exit(2)
    if settings.is_embedded_database:
        _with_engine(settings, run_migrations)
        if settings.is_fully_embedded:
            key_file = settings.dev_api_key_file
            key = _with_engine(settings, lambda engine: ensure_dev_tenant(engine, key_file))
            if key is not None:
                typer.echo(
                    "\nCreated tenant 'default' and an API key (shown once, also saved to "
                    f"{key_file}):\n\n    {key}\n\n"
                    f"    curl -H 'Authorization: Bearer {key}' -H 'X-User-ID: me' "
                    f"http://{host or settings.host}:{port or settings.port}/v1/models\n"
                )
    # uvicorn hands a signal back to this handler once it has shut down gracefully.
    flush_logs_on_signals()
    uvicorn.run(
        "atelier.cli:app_from_environment",
        factory=True,
        host=host or settings.host,
        port=port or settings.port,
        workers=workers,
        log_config=None,
        proxy_headers=bool(settings.trusted_proxies),
        forwarded_allow_ips=",".join(settings.trusted_proxies) or None,
        # Open streams get the grace period to end; then the lifespan gives runs theirs.
        timeout_graceful_shutdown=math.ceil(settings.shutdown_grace_seconds),
    )


def private_files(data_dir: Path) -> None:
    """What the server writes -- the embedded database and its WAL, workspace files, keys --
    is its own: files 0600, directories 0700, whoever else shares the machine."""
    os.umask(0o077)
    data_dir.mkdir(parents=True, exist_ok=True)
    data_dir.chmod(0o700)


def app_from_environment():  # type: ignore[no-untyped-def]  # uvicorn factory entry point
    from atelier.app import create_app

    return create_app(load_settings())


@app.command()
def migrate() -> None:
    """Upgrade the database schema to head (safe to run from many processes at once)."""
    settings = load_settings()
    _with_engine(settings, run_migrations)
    typer.echo("database schema is at head")


@tenants_app.command("create")
def tenants_create(name: str) -> None:
    """Create a tenant."""

    async def work(session: AsyncSession) -> uuid.UUID:
        return (await tenants.create_tenant(session, name)).id

    try:
        tenant_id = _in_session(load_settings(), work)
    except tenants.TenantError as exc:
        typer.echo(f"atelier: {exc}", err=True)
        raise typer.Exit(1) from None
    typer.echo(f"created tenant {name} ({tenant_id})")


@keys_app.command("create")
def keys_create(
    tenant: Annotated[str, typer.Option(help="Tenant name.")],
    name: Annotated[str, typer.Option(help="A label for the key.")] = "",
) -> None:
    """Create an API key for a tenant and print it (it is shown only once)."""

    async def work(session: AsyncSession) -> tenants.IssuedKey | None:
        owner = await tenants.tenant_by_name(session, tenant)
        return None if owner is None else await tenants.create_api_key(session, owner, name)

    issued = _in_session(load_settings(), work)
    if issued is None:
        typer.echo(f"atelier: no tenant named {tenant!r}", err=True)
        raise typer.Exit(1)
    typer.echo(f"key id: {issued.id}", err=True)
    typer.echo(issued.secret)


@keys_app.command("revoke")
def keys_revoke(key_id: uuid.UUID) -> None:
    """Revoke an API key (effective within the key cache TTL, a few seconds)."""

    async def work(session: AsyncSession) -> bool:
        return await tenants.revoke_api_key(session, key_id)

    if not _in_session(load_settings(), work):
        typer.echo(f"atelier: no active key {key_id}", err=True)
        raise typer.Exit(1)
    typer.echo(f"revoked key {key_id}")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
