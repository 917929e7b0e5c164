"""Operational endpoints: liveness, readiness and Prometheus metrics (no API key)."""

from __future__ import annotations

import asyncio
import hmac
import time
import weakref
from collections.abc import Awaitable, Callable

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import select, text

from atelier.agents.models import AgentVersion
from atelier.agents.secrets import Sealer, SecretsUnavailable
from atelier.http.deps import ResourcesDep
from atelier.http.errors import problem_response
from atelier.resources import Resources
from atelier.webhooks.models import Webhook

router = APIRouter(tags=["operations"])
READY_CHECK_TIMEOUT = 2.0
SECRETS_CHECKED_FOR = 30.0
# When each process's keys last opened the newest sealed secrets (by its sealer).
_secrets_opened: weakref.WeakKeyDictionary[Sealer, float] = weakref.WeakKeyDictionary()


@router.get("/health")
async def health() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/ready", responses={503: {"description": "a backend did not answer"}})
async def ready(resources: ResourcesDep) -> Response:
    checks = await _run_checks(_ready_checks(resources))
    failed = {name: result for name, result in checks.items() if result != "ok"}
    if failed:
        return problem_response(
            503,
            "not_ready",
            "not ready: " + ", ".join(f"{name} ({result})" for name, result in failed.items()),
            {"retry-after": "5"},
            checks=checks,
        )
    return JSONResponse({"status": "ok", "checks": checks})


@router.get("/metrics", include_in_schema=False)
async def metrics(request: Request, resources: ResourcesDep) -> Response:
    token = resources.settings.metrics_token
    if token is not None:
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(
            given.strip().encode(), token.get_secret_value().encode()
        ):
            return problem_response(
                401, "invalid_metrics_token", "send the scrape token as 'Authorization: Bearer'"
            )
    return Response(generate_latest(resources.metrics.registry), media_type=CONTENT_TYPE_LATEST)


def _ready_checks(resources: Resources) -> dict[str, Callable[[], Awaitable[object]]]:
    async def database() -> None:
        async with resources.engine.connect() as connection:
            await connection.execute(text("SELECT 1"))

    async def secrets() -> None:
        """This process's keys open the deployment's newest sealed secrets: a process
        with another key (no ATELIER_SECRETS_KEY, another data directory) would fail
        every webhook and MCP call it takes up. A pass holds for ``SECRETS_CHECKED_FOR``
        (probes come every few seconds; the newest secrets are found by scanning)."""
        now = time.monotonic()
        if now - _secrets_opened.get(resources.sealer, -SECRETS_CHECKED_FOR) < SECRETS_CHECKED_FOR:
            return
        async with resources.sessionmaker() as session:
            newest = [
                await session.scalar(
                    select(Webhook.secret).order_by(Webhook.created_at.desc()).limit(1)
                ),
                await session.scalar(
                    select(AgentVersion.secrets)
                    .where(AgentVersion.secrets.is_not(None))
                    .order_by(AgentVersion.created_at.desc())
                    .limit(1)
                ),
            ]
        for sealed in newest:
            if sealed is not None:
                resources.sealer.open_text(sealed)
        _secrets_opened[resources.sealer] = now

    return {
        "database": database,
        "coordination": resources.coordination.ping,
        "storage": resources.storage.ping,
        "secrets": secrets,
    }


async def _run_checks(checks: dict[str, Callable[[], Awaitable[object]]]) -> dict[str, str]:
    async def run(check: Callable[[], Awaitable[object]]) -> str:
        try:
            await asyncio.wait_for(check(), READY_CHECK_TIMEOUT)
        except TimeoutError:
            return "timeout"
        except SecretsUnavailable as exc:
            return f"unavailable: {exc}; every process needs the same ATELIER_SECRETS_KEY"
        except Exception as exc:
            return f"unavailable: {type(exc).__name__}"
        return "ok"

    names = list(checks)
    results = await asyncio.gather(*(run(checks[name]) for name in names))
    return dict(zip(names, results, strict=True))
