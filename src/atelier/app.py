"""The application factory: ``create_app(settings)`` builds one independent app."""

from __future__ import annotations

import asyncio
import gc
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from sqlalchemy.exc import IntegrityError
from starlette.middleware import Middleware

from atelier import __version__
from atelier.agents.endpoints import router as agents_router
from atelier.budgets.endpoints import router as budgets_router
from atelier.chats.endpoints import router as chats_router
from atelier.compat.ag_ui.endpoints import router as ag_ui_router
from atelier.compat.ai_sdk.endpoints import router as ai_sdk_router
from atelier.compat.langgraph.endpoints import router as langgraph_router
from atelier.compat.openai.endpoints import router as openai_router
from atelier.console.endpoints import router as console_router
from atelier.conversations.endpoints import router as conversations_router
from atelier.db import models as _all_tables  # noqa: F401  (every mapper, for every FK)
from atelier.db.migrate import head_revision, schema_revision
from atelier.http.errors import install_error_handlers
from atelier.http.middleware.authentication import AuthenticationMiddleware
from atelier.http.middleware.authorization import AuthorizationMiddleware
from atelier.http.middleware.cors import CorsMiddleware
from atelier.http.middleware.idempotency import IdempotencyMiddleware
from atelier.http.middleware.metrics import MetricsMiddleware
from atelier.http.middleware.openai_errors import OpenAIErrorsMiddleware
from atelier.http.middleware.rate_limit import RateLimitMiddleware
from atelier.http.middleware.request_context import RequestContextMiddleware
from atelier.http.middleware.request_limits import RequestLimitsMiddleware
from atelier.http.middleware.security_headers import SecurityHeadersMiddleware
from atelier.http.openapi import document
from atelier.http.operations import router as operations_router
from atelier.llm.catalog import load_catalog, seed_catalog
from atelier.llm.endpoints import router as models_router
from atelier.observability.logging import configure_logging
from atelier.observability.metrics import Metrics
from atelier.resources import Resources, open_resources
from atelier.runs.endpoints import router as runs_router
from atelier.runs.events import CHAT_EVENTS, RUN_EVENTS
from atelier.settings import Settings
from atelier.tenants.endpoints import router as tenants_router
from atelier.usage.endpoints import router as usage_router
from atelier.webhooks.endpoints import router as webhooks_router
from atelier.workspace import cleanup
from atelier.workspace.endpoints import router as workspace_router


def create_app(settings: Settings) -> FastAPI:
    configure_logging(settings)
    metrics = Metrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with open_resources(settings, metrics) as resources:
            app.state.resources = resources
            await _require_schema_at_head(resources)
            await _seed_catalog(resources)
            async with resources.sessionmaker() as session:
                await resources.catalog.reload(session)
            # Everything alive now lives as long as the process: move it out of the
            # collector's reach, so full collections stay short pauses of the event loop.
            gc.collect()
            gc.freeze()
            # File, hash and zlib work runs on worker threads; a short GIL switch interval
            # bounds how long the event loop can wait for the GIL behind them (5 ms default,
            # and a loop that loses the hand-off several times in a row stalls for 25+ ms).
            sys.setswitchinterval(0.001)
            resources.supervisor.daemon(
                cleanup.run_forever(
                    resources.sessionmaker,
                    resources.storage,
                    settings.storage_cleanup_interval_seconds,
                ),
                name="storage-cleanup",
            )
            resources.runs.start_background()
            resources.supervisor.daemon(resources.webhooks.run_forever(), name="webhooks")
            try:
                yield
            finally:
                # New runs are refused; running ones get the grace period, then are
                # cancelled and saved: no row is left `running`.
                await resources.runs.shutdown(grace_seconds=settings.shutdown_grace_seconds)
                del app.state.resources

    docs = settings.environment == "development"
    app = FastAPI(
        title="Atelier",
        version=__version__,
        summary="A production backend for AI agents.",
        lifespan=lifespan,
        # The interactive docs load their script from a CDN, with inline script allowed:
        # never on an origin where the console keeps a key, so only in development.
        # /openapi.json is always served.
        docs_url="/docs" if docs else None,
        redoc_url="/redoc" if docs else None,
        # Spans and OTel metrics use the global providers when the operator enables them.
        telemetry={
            "tracing": settings.otel_enabled,
            "metrics": settings.otel_enabled,
            "operation_spans": settings.otel_enabled,
            "logs": False,  # our structured logs already record errors, without key material
        },
        # Outermost first. Every one is pure ASGI: nothing buffers a stream or breaks
        # contextvars and disconnect detection (BUG-002).
        middleware=[
            Middleware(RequestContextMiddleware, tag_spans=settings.otel_enabled),
            Middleware(MetricsMiddleware, metrics=metrics),
            # Before anything that may answer early (a 401, a 429): browsers read those too.
            Middleware(CorsMiddleware),
            Middleware(SecurityHeadersMiddleware, hsts=settings.hsts, docs=docs),
            Middleware(OpenAIErrorsMiddleware),  # every problem under /openai/, its shape
            Middleware(
                RequestLimitsMiddleware,
                max_json_body_bytes=settings.max_json_body_bytes,
                max_file_size=settings.max_file_size,
            ),
            Middleware(AuthenticationMiddleware),
            Middleware(RateLimitMiddleware, settings=settings),
            Middleware(AuthorizationMiddleware),
            Middleware(IdempotencyMiddleware),
        ],
    )
    app.state.settings = settings
    app.state.metrics = metrics
    install_error_handlers(app)
    document(app, {"RunEvent": RUN_EVENTS, "ChatEvent": CHAT_EVENTS})
    app.include_router(operations_router)
    app.include_router(agents_router)
    app.include_router(conversations_router)
    app.include_router(workspace_router)
    app.include_router(runs_router)
    app.include_router(chats_router)
    app.include_router(models_router)
    app.include_router(usage_router)
    app.include_router(webhooks_router)
    app.include_router(budgets_router)
    app.include_router(tenants_router)
    app.include_router(langgraph_router)
    app.include_router(openai_router)
    app.include_router(ai_sdk_router)
    app.include_router(ag_ui_router)
    app.include_router(console_router)
    return app


class SchemaNotAtHead(RuntimeError):
    pass


async def _require_schema_at_head(resources: Resources) -> None:
    # Alembic reads the migration scripts from disk: off the event loop.
    current, head = await schema_revision(resources.engine), await asyncio.to_thread(head_revision)
    if current != head:
        raise SchemaNotAtHead(
            f"the database schema is at {current or 'nothing'}, not {head}: run `atelier migrate`"
        )


async def _seed_catalog(resources: Resources) -> None:
    entries = await asyncio.to_thread(load_catalog, resources.settings.model_catalog_file)
    async with resources.sessionmaker() as session:
        try:
            await seed_catalog(session, entries)
            await session.commit()
        except IntegrityError:
            # Another process seeded the same rows at the same moment: theirs are as good.
            await session.rollback()
