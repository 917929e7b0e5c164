"""The application factory: ``create_app(settings)`` builds one independent app."""

from __future__ import annotations

import asyncio
import contextlib
import gc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from starlette.middleware import Middleware

from atelier import __version__
from atelier.conversations.endpoints import router as conversations_router
from atelier.http.errors import install_error_handlers
from atelier.http.middleware.authentication import AuthenticationMiddleware
from atelier.http.middleware.authorization import AuthorizationMiddleware
from atelier.http.middleware.metrics import MetricsMiddleware
from atelier.http.middleware.rate_limit import RateLimitMiddleware
from atelier.http.middleware.request_limits import RequestLimitsMiddleware
from atelier.http.middleware.security_headers import SecurityHeadersMiddleware
from atelier.http.middleware.tracing import TracingMiddleware
from atelier.http.operations import router as operations_router
from atelier.observability.logging import configure_logging
from atelier.observability.metrics import Metrics
from atelier.resources import open_resources
from atelier.settings import Settings
from atelier.workspace import cleanup
from atelier.workspace.endpoints import router as workspace_router


def create_app(settings: Settings) -> FastAPI:
    configure_logging(settings)
    metrics = Metrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with open_resources(settings, metrics) as resources:
            app.state.resources = resources
            # Everything alive now lives as long as the process: move it out of the
            # collector's reach, so full collections stay short pauses of the event loop.
            gc.collect()
            gc.freeze()
            upkeep = asyncio.create_task(
                cleanup.run_forever(
                    resources.sessionmaker,
                    resources.storage,
                    settings.storage_cleanup_interval_seconds,
                ),
                name="storage-cleanup",
            )
            try:
                yield
            finally:
                upkeep.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await upkeep
                del app.state.resources

    app = FastAPI(
        title="Atelier",
        version=__version__,
        summary="A production backend for AI agents.",
        lifespan=lifespan,
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
            Middleware(TracingMiddleware, tag_spans=settings.otel_enabled),
            Middleware(MetricsMiddleware, metrics=metrics),
            Middleware(SecurityHeadersMiddleware, hsts=settings.hsts),
            Middleware(RequestLimitsMiddleware),
            Middleware(AuthenticationMiddleware),
            Middleware(RateLimitMiddleware, settings=settings),
            Middleware(AuthorizationMiddleware),
        ],
    )
    app.state.settings = settings
    app.state.metrics = metrics
    install_error_handlers(app)
    app.include_router(operations_router)
    app.include_router(conversations_router)
    app.include_router(workspace_router)
    return app
