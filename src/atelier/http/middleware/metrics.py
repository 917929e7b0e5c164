"""Request count, latency and in-flight gauge, labelled by route *template* (bounded labels)."""

from __future__ import annotations

import time
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from atelier.observability.metrics import Metrics

ABORTED = "aborted"  # the status label of a response that broke off after it started


class MetricsMiddleware:
    def __init__(self, app: ASGIApp, *, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics
        # Resolving label values is the costly part of an observation; routes are few.
        self._children: dict[tuple[str, str, int | str], tuple[Any, Any]] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status: int | str = 500

        async def send_recording_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        self.metrics.http_in_flight.inc()
        started = time.perf_counter()
        try:
            await self.app(scope, receive, send_recording_status)
        except Exception:
            if status != 500:  # it failed after its status was sent: the client got less
                status = ABORTED
            raise
        finally:
            self.metrics.http_in_flight.dec()
            template = getattr(scope.get("route"), "path", None) or "unmatched"
            key = (scope["method"], template, status)
            children = self._children.get(key)
            if children is None:
                children = self._children[key] = (
                    self.metrics.http_requests.labels(key[0], template, str(status)),
                    self.metrics.http_duration.labels(key[0], template),
                )
            children[0].inc()
            children[1].observe(time.perf_counter() - started)
