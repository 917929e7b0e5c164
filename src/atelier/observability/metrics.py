"""Prometheus metrics, one registry per app (two apps in one process never share counters)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.http_requests = Counter(
            "atelier_http_requests_total",
            "HTTP requests by method, route template and status.",
            ["method", "route", "status"],
            registry=r,
        )
        self.http_duration = Histogram(
            "atelier_http_request_duration_seconds",
            "Time until the response finished, by method and route template.",
            ["method", "route"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
            registry=r,
        )
        self.http_in_flight = Gauge(
            "atelier_http_requests_in_flight", "Requests being served now.", registry=r
        )
        self.sse_streams_open = Gauge(
            "atelier_sse_streams_open", "Server-Sent Event streams open now.", registry=r
        )
        self.rate_limit_decisions = Counter(
            "atelier_rate_limit_decisions_total",
            "Rate-limit decisions by outcome and the limiter that made them.",
            ["decision", "limiter"],
            registry=r,
        )
        self.rate_limit_fallbacks = Counter(
            "atelier_rate_limit_fallbacks_total",
            "Decisions made by the in-process limiter because the shared one failed.",
            registry=r,
        )
