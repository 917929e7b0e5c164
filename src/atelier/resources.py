"""Everything an app holds open: created once in the lifespan, closed there."""

from __future__ import annotations

import asyncio
import os
import socket
import uuid
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from atelier.agents.secrets import Sealer
from atelier.coordination.base import Coordination
from atelier.coordination.memory import MemoryCoordination
from atelier.coordination.ratelimit import RateLimiter
from atelier.coordination.redis import RedisCoordination
from atelier.db.engine import create_engine, create_sessionmaker
from atelier.llm.catalog import ModelCatalog
from atelier.llm.registry import ModelRegistry
from atelier.llm.titles import TitleGenerator
from atelier.observability.metrics import Metrics
from atelier.runs.environment import RunEnvironment
from atelier.runs.loop import first_output_timer
from atelier.runs.manager import RunManager
from atelier.runs.tools import WorkspaceTools
from atelier.settings import Settings
from atelier.supervisor import Supervisor
from atelier.tenants.cache import KeyCache
from atelier.tenants.cors import OriginCache
from atelier.tenants.identity import IdentityVerifier
from atelier.tenants.tokens import TokenSigner
from atelier.webhooks.delivery import WebhookSender
from atelier.workspace.base import Storage
from atelier.workspace.cache import WorkspaceCache
from atelier.workspace.local import LocalStorage
from atelier.workspace.s3 import S3Storage


@dataclass
class Resources:
    settings: Settings
    metrics: Metrics
    engine: AsyncEngine
    sessionmaker: async_sessionmaker[AsyncSession]
    coordination: Coordination
    rate_limiter: RateLimiter
    storage: Storage
    workspaces: WorkspaceCache
    key_cache: KeyCache
    models: ModelRegistry
    catalog: ModelCatalog
    titles: TitleGenerator
    supervisor: Supervisor
    runs: RunManager
    sealer: Sealer
    webhooks: WebhookSender
    tokens: TokenSigner
    identity: IdentityVerifier
    origins: OriginCache


def create_coordination(settings: Settings) -> Coordination:
    if settings.redis_url:
        return RedisCoordination(settings.redis_url, key_prefix=settings.redis_key_prefix)
    return MemoryCoordination()


@asynccontextmanager
async def open_resources(settings: Settings, metrics: Metrics) -> AsyncIterator[Resources]:
    """The model catalog starts empty: the app fills it once the schema is checked."""
    async with AsyncExitStack() as stack:
        # Each of these may touch the disk (the SQLite directory, the workspace root, the
        # AWS config files): built on a worker thread, never on the event loop.
        engine = await asyncio.to_thread(create_engine, settings)
        stack.push_async_callback(engine.dispose)
        coordination = create_coordination(settings)
        stack.push_async_callback(coordination.aclose)
        storage: Storage
        if settings.s3_bucket:
            storage = await stack.enter_async_context(S3Storage.open(settings))
        else:
            storage = await asyncio.to_thread(LocalStorage, settings.workspace_dir)
        models = await ModelRegistry.open(settings, stack)
        sessionmaker = create_sessionmaker(engine)
        workspaces = await WorkspaceCache.open(settings.run_dir, settings.workspace_cache_bytes)
        stack.callback(workspaces.close)
        titles = TitleGenerator(models)
        catalog = ModelCatalog({})  # filled by the app once the schema is checked
        supervisor = Supervisor()
        sealer = await asyncio.to_thread(Sealer.for_settings, settings)  # may make a dev key
        webhooks = WebhookSender(sessionmaker, sealer, settings)
        stack.push_async_callback(webhooks.aclose)
        environment = RunEnvironment(
            settings=settings,
            sessions=sessionmaker,
            coordination=coordination,
            storage=storage,
            workspaces=workspaces,
            models=models,
            catalog=catalog,
            supervisor=supervisor,
            owner_id=f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}",
            tools_factory=WorkspaceTools,
            sealer=sealer,
            titles=titles,
            on_first_output=lambda: first_output_timer(metrics.run_time_to_first_event.observe),
        )
        yield Resources(
            settings=settings,
            metrics=metrics,
            engine=engine,
            sessionmaker=sessionmaker,
            coordination=coordination,
            rate_limiter=RateLimiter(coordination, metrics),
            storage=storage,
            workspaces=workspaces,
            key_cache=KeyCache(ttl_seconds=settings.api_key_cache_seconds),
            models=models,
            catalog=catalog,
            titles=titles,
            supervisor=supervisor,
            runs=RunManager(environment, metrics),
            sealer=sealer,
            webhooks=webhooks,
            tokens=TokenSigner(sealer),
            identity=IdentityVerifier(sessionmaker, sealer, settings),
            origins=OriginCache(sessionmaker, ttl_seconds=settings.api_key_cache_seconds),
        )
