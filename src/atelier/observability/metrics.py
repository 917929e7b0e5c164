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
        self.event_loop_lag = Gauge(
            "atelier_event_loop_lag_seconds",
            "How late the event loop runs what is due (rises at once, falls gradually): "
            "past a few tens of milliseconds this process has all the work it can take.",
            registry=r,
        )
        self.sse_streams_open = Gauge(
            "atelier_sse_streams_open", "Server-Sent Event streams open now.", registry=r
        )
        self.sse_stream_failures = Counter(
            "atelier_sse_stream_failures_total",
            "Event streams that failed after they started (ended with an `error` event).",
            registry=r,
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
        self.runs_started = Counter(
            "atelier_runs_started_total", "Runs accepted by this process.", registry=r
        )
        self.runs_finished = Counter(
            "atelier_runs_finished_total",
            "Runs this process finished, by final status.",
            ["status"],
            registry=r,
        )
        self.runs_active = Gauge(
            "atelier_runs_active", "Runs executing in this process now.", registry=r
        )
        self.run_time_to_first_event = Histogram(
            "atelier_run_time_to_first_event_seconds",
            "From accepting a run to its model's first output.",
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            registry=r,
        )
        self.run_lock_contention = Counter(
            "atelier_run_lock_contention_total",
            "Runs refused because their conversation was busy (409 conversation_busy).",
            registry=r,
        )
        self.run_starts_refused = Counter(
            "atelier_run_starts_refused_total",
            "Runs refused because this process had all it takes on (503 at_capacity, server_busy).",
            ["code"],
            registry=r,
        )
        self.runs_reaped = Counter(
            "atelier_runs_reaped_total",
            "Runs failed as worker_lost because the process running them stopped.",
            registry=r,
        )
