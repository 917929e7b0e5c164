"""The HTTP edge over a real uvicorn socket, full middleware stack (BUG-002, 012, 014, 018, 021)."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator

import httpx
import pytest
import structlog
from fastapi import FastAPI, Request
from redis.asyncio import ConnectionPool

from atelier.http.sse import EventStreamResponse, ServerSentEvent
from atelier.settings import Settings
from tests.conftest import Caller, free_port, make_caller
from tests.live import serve

EVENTS = 10


def add_probe_routes(app: FastAPI, seen: dict[str, object]) -> None:
    """Endpoints that exist only in these tests, mounted behind the full middleware stack."""

    received = [asyncio.Event() for _ in range(EVENTS + 1)]
    seen["received"] = received

    @app.get("/v1/probe/stream")
    async def stream() -> EventStreamResponse:
        async def events() -> AsyncIterator[ServerSentEvent]:
            for n in range(1, EVENTS + 1):
                yield ServerSentEvent(json.dumps({"n": n}), "tick", n)
                # The next event is made only once the client has read this one: a stack
                # that holds events back (buffers, batches) would stall the stream for good.
                await received[n].wait()

        return EventStreamResponse(events())

    @app.get("/v1/probe/endless")
    async def endless(request: Request) -> EventStreamResponse:
        async def events() -> AsyncIterator[ServerSentEvent]:
            try:
                n = 0
                while True:
                    n += 1
                    yield ServerSentEvent("{}", "tick", n)
                    await asyncio.sleep(0.02)
            finally:
                seen["generator_closed"] = True
                seen["is_disconnected"] = await request.is_disconnected()

        return EventStreamResponse(events())

    @app.get("/v1/probe/context")
    async def context() -> dict[str, object]:
        bound = structlog.contextvars.get_contextvars()
        structlog.get_logger("atelier.probe").info("inside endpoint")
        return {"request_id": bound.get("request_id"), "tenant_id": bound.get("tenant_id")}

    @app.get("/v1/probe/boom")
    async def boom() -> None:
        raise RuntimeError("secret internal detail")


@pytest.fixture
async def live(unstarted_app: FastAPI) -> AsyncIterator[tuple[str, FastAPI, dict[str, object]]]:
    seen: dict[str, object] = {}
    add_probe_routes(unstarted_app, seen)
    async with serve(unstarted_app) as base_url:
        yield base_url, unstarted_app, seen


@pytest.fixture
async def live_caller(live: tuple[str, FastAPI, dict[str, object]]) -> Caller:
    return await make_caller(live[1])


class TestStreamingThroughTheStack:
    async def test_each_event_reaches_the_client_before_the_next_is_made(
        self, live, live_caller
    ) -> None:
        """BUG-002: no middleware buffers the stream. Each event must reach the client
        through the full stack before the endpoint produces the next one. (How fast:
        `bench/sse_latency.py`.)"""
        base_url, _, seen = live
        received: list[asyncio.Event] = seen["received"]  # type: ignore[assignment]
        numbers = []
        async with (
            asyncio.timeout(30),  # a stalled stream, never a slow one, runs into this
            httpx.AsyncClient(base_url=base_url) as http,
            http.stream("GET", "/v1/probe/stream", headers=live_caller.headers()) as response,
        ):
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            async for line in response.aiter_lines():
                if line.startswith("data: "):
                    numbers.append(json.loads(line[6:])["n"])
                    received[numbers[-1]].set()
        assert numbers == list(range(1, EVENTS + 1))

    async def test_client_disconnect_reaches_the_endpoint(self, live, live_caller) -> None:
        base_url, app, seen = live
        async with (
            httpx.AsyncClient(base_url=base_url) as http,
            http.stream("GET", "/v1/probe/endless", headers=live_caller.headers()) as response,
        ):
            async for line in response.aiter_lines():
                if line.startswith("data:"):
                    break
            assert app.state.metrics.sse_streams_open._value.get() == 1
        async with asyncio.timeout(10):  # the endpoint never saw the disconnect
            while "generator_closed" not in seen:
                await asyncio.sleep(0.02)
        assert seen["is_disconnected"] is True
        assert app.state.metrics.sse_streams_open._value.get() == 0

    async def test_context_set_in_middleware_is_seen_by_endpoint_and_logs(
        self, live, live_caller, caplog: pytest.LogCaptureFixture
    ) -> None:
        base_url, _, _ = live
        caplog.set_level(logging.INFO, logger="atelier.probe")
        async with httpx.AsyncClient(base_url=base_url) as http:
            response = await http.get(
                "/v1/probe/context", headers=live_caller.headers(**{"X-Request-ID": "req-123"})
            )
        assert response.headers["x-request-id"] == "req-123"
        assert response.json() == {"request_id": "req-123", "tenant_id": str(live_caller.tenant_id)}
        records = [r.msg for r in caplog.records if isinstance(r.msg, dict)]
        line = next(r for r in records if r.get("event") == "inside endpoint")
        assert line["request_id"] == "req-123"
        assert line["tenant_id"] == str(live_caller.tenant_id)
        assert line["user_id"] == "alice"


class TestIdentity:
    async def test_forged_tenant_header_is_forbidden(self, live, live_caller) -> None:
        base_url, app, _ = live
        other = await make_caller(app)
        async with httpx.AsyncClient(base_url=base_url) as http:
            forged = await http.get(
                "/v1/probe/context",
                headers=live_caller.headers(**{"X-Tenant-ID": str(other.tenant_id)}),
            )
            by_id = await http.get(
                "/v1/probe/context",
                headers=live_caller.headers(**{"X-Tenant-ID": str(live_caller.tenant_id)}),
            )
            by_name = await http.get(
                "/v1/probe/context",
                headers=live_caller.headers(**{"X-Tenant-ID": live_caller.tenant_name}),
            )
        assert forged.status_code == 403
        assert forged.json()["code"] == "tenant_mismatch"
        assert by_id.status_code == 200
        assert by_name.status_code == 200

    async def test_missing_and_invalid_keys_are_401(self, live) -> None:
        base_url, _, _ = live
        async with httpx.AsyncClient(base_url=base_url) as http:
            missing = await http.get("/v1/probe/context")
            malformed = await http.get("/v1/probe/context", headers={"X-API-Key": "nope"})
            wrong = await http.get(
                "/v1/probe/context",
                headers={"Authorization": "Bearer atl_0123456789ab_" + "x" * 43},
            )
        assert missing.status_code == 401
        assert missing.json()["code"] == "missing_api_key"
        assert missing.headers["www-authenticate"] == "Bearer"
        assert malformed.json()["code"] == "invalid_api_key"
        assert wrong.json()["code"] == "invalid_api_key"

    async def test_x_api_key_header_is_accepted(self, live, live_caller) -> None:
        base_url, _, _ = live
        async with httpx.AsyncClient(base_url=base_url) as http:
            response = await http.get("/v1/probe/context", headers={"X-API-Key": live_caller.key})
        assert response.status_code == 200


class TestErrors:
    async def test_unhandled_error_is_a_problem_with_the_request_id(
        self, live, live_caller
    ) -> None:
        base_url, _, _ = live
        async with httpx.AsyncClient(base_url=base_url) as http:
            response = await http.get("/v1/probe/boom", headers=live_caller.headers())
        assert response.status_code == 500
        assert response.headers["content-type"] == "application/problem+json"
        body = response.json()
        assert body["code"] == "internal_error"
        assert body["request_id"] == response.headers["x-request-id"]
        assert "secret internal detail" not in response.text
        assert "Traceback" not in response.text

    async def test_security_headers_and_docs_csp(self, live) -> None:
        base_url, _, _ = live
        async with httpx.AsyncClient(base_url=base_url) as http:
            health = await http.get("/health")
            docs = await http.get("/docs")
            schema = await http.get("/openapi.json")
        assert health.headers["x-content-type-options"] == "nosniff"
        assert health.headers["x-frame-options"] == "DENY"
        assert health.headers["referrer-policy"] == "no-referrer"
        assert health.headers["content-security-policy"].startswith("default-src 'none'")
        assert "strict-transport-security" not in health.headers  # plain http
        # Docs from a CDN with inline script: never beside the console's key, outside
        # development (the schema stays).
        assert docs.status_code == 404
        assert "cdn.jsdelivr.net" not in docs.headers["content-security-policy"]
        assert schema.status_code == 200

    async def test_docs_are_served_in_development_only(
        self, tmp_path, migrated_sqlite_template
    ) -> None:
        import shutil

        from atelier.app import create_app
        from atelier.settings import Settings

        for environment, status in (("development", 200), ("test", 404)):
            data_dir = tmp_path / environment
            data_dir.mkdir()
            shutil.copy(migrated_sqlite_template, data_dir / "atelier.db")
            app = create_app(Settings(environment=environment, data_dir=data_dir))
            async with app.router.lifespan_context(app):
                transport = httpx.ASGITransport(app=app)
                async with httpx.AsyncClient(transport=transport, base_url="http://a") as http:
                    docs = await http.get("/docs")
            assert docs.status_code == status, environment

    async def test_headers_over_32_kib_are_431(self, live) -> None:
        """RequestLimitsMiddleware: uvicorn's httptools parser has no header limit of its own."""
        base_url, _, _ = live
        async with httpx.AsyncClient(base_url=base_url) as http:
            fits = await http.get("/health", headers={"X-Padding": "a" * 30_000})
            too_big = await http.get("/health", headers={"X-Padding": "a" * 33_000})
            spread = await http.get(
                "/health", headers={f"X-Pad-{n}": "b" * 1000 for n in range(40)}
            )
        assert fits.status_code == 200
        for response in (too_big, spread):
            assert response.status_code == 431
            assert response.headers["content-type"] == "application/problem+json"
            assert response.json()["code"] == "headers_too_large"

    async def test_malformed_and_oversized_headers_never_5xx(self, live, live_caller) -> None:
        base_url, _, _ = live
        port = int(base_url.rsplit(":", 1)[1])
        hostile = [
            {"X-User-ID": "has space"},
            {"X-User-ID": "x" * 129},
            {"X-User-ID": "\x01ctl"},
            {"Authorization": "Bearer"},
            {"Authorization": "Basic Zm9vOmJhcg=="},
            {"Authorization": "Bearer " + "a" * 8000},
            {"X-Request-ID": "../../etc/passwd\x7f"},
            {"X-Tenant-ID": b"\xff\xfe"},
        ]
        async with httpx.AsyncClient(base_url=base_url) as http:
            for extra in hostile:
                headers = {**live_caller.headers(), **extra}
                response = await http.get("/v1/probe/context", headers=headers)
                assert 400 <= response.status_code < 500 or response.status_code == 200, extra
                assert response.status_code != 500
        # Headers too large for the HTTP parser, sent raw.
        for raw in (
            b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 70_000 + b"\r\n\r\n",
            b"GET /health HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n",
        ):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(raw)
            await writer.drain()
            status_line = await asyncio.wait_for(reader.readline(), 5)
            writer.close()
            assert status_line.split()[1].startswith(b"4"), status_line


class TestRevocation:
    @pytest.fixture
    def settings_overrides(self) -> dict[str, object]:
        return {"api_key_cache_seconds": 0.5}

    async def test_revoked_key_stops_working_within_the_cache_ttl(self, live, live_caller) -> None:
        from atelier.tenants.service import revoke_api_key, verify_api_key

        base_url, app, _ = live
        async with httpx.AsyncClient(base_url=base_url) as http:
            assert (
                await http.get("/v1/probe/context", headers=live_caller.headers())
            ).status_code == 200
            async with app.state.resources.sessionmaker() as session:
                verified = await verify_api_key(session, live_caller.key)
                assert verified is not None
                assert await revoke_api_key(session, verified.key_id)
                await session.commit()
            await asyncio.sleep(0.6)
            after = await http.get("/v1/probe/context", headers=live_caller.headers())
        assert after.status_code == 401


class TestMetricsEndpoint:
    async def test_unauthenticated_scrape_gets_metrics(self, live, live_caller) -> None:
        """BUG-014."""
        base_url, _, _ = live
        async with httpx.AsyncClient(base_url=base_url) as http:
            await http.get("/v1/probe/context", headers=live_caller.headers())
            response = await http.get("/metrics")
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/plain")
        text = response.text
        assert (
            'atelier_http_requests_total{method="GET",route="/v1/probe/context",status="200"} 1.0'
            in text
        )
        assert "atelier_http_request_duration_seconds_bucket" in text
        assert "atelier_http_requests_in_flight" in text
        assert "atelier_sse_streams_open" in text
        assert "atelier_rate_limit_decisions_total" in text


class TestMetricsToken:
    @pytest.fixture
    def settings_overrides(self) -> dict[str, object]:
        return {"metrics_token": "scrape-me"}

    async def test_scrape_token_is_enforced_when_configured(self, live) -> None:
        base_url, _, _ = live
        async with httpx.AsyncClient(base_url=base_url) as http:
            assert (await http.get("/metrics")).status_code == 401
            wrong = await http.get("/metrics", headers={"Authorization": "Bearer nope"})
            right = await http.get("/metrics", headers={"Authorization": "Bearer scrape-me"})
        assert wrong.status_code == 401
        assert right.status_code == 200


class TestCeilingsAboveUsers:
    @pytest.fixture
    def settings_overrides(self) -> dict[str, object]:
        return {
            "rate_limit_enabled": True,
            "rate_limit_burst": 3,
            "rate_limit_key_per_minute": 60,
            "rate_limit_key_burst": 5,
            "rate_limit_tenant_per_minute": 60,
            "rate_limit_tenant_burst": 8,
            "rate_limit_expensive_cost": 1,
        }

    async def test_rotating_user_ids_meets_the_keys_ceiling(self, live, live_caller) -> None:
        base_url, _, _ = live
        async with httpx.AsyncClient(base_url=base_url) as http:
            statuses = [
                (
                    await http.get("/v1/probe/context", headers=live_caller.headers(f"u{n}"))
                ).status_code
                for n in range(20)
            ]
        assert statuses == [200] * 5 + [429] * 15

    async def test_the_keys_of_a_tenant_share_its_ceiling(self, live, live_caller) -> None:
        from atelier.tenants.service import create_api_key, tenant_by_name

        base_url, app, _ = live
        async with app.state.resources.sessionmaker() as session:
            tenant = await tenant_by_name(session, live_caller.tenant_name)
            second = (await create_api_key(session, tenant, "second")).secret
            await session.commit()
        async with httpx.AsyncClient(base_url=base_url) as http:
            statuses = []
            for n in range(12):
                key = live_caller.key if n % 2 else second
                headers = {"Authorization": f"Bearer {key}", "X-User-ID": f"u{n}"}
                statuses.append((await http.get("/v1/probe/context", headers=headers)).status_code)
        assert statuses.count(200) == 8
        assert statuses[8:] == [429] * 4


class TestRateLimits:
    @pytest.fixture
    def settings_overrides(self) -> dict[str, object]:
        return {
            "rate_limit_enabled": True,
            "rate_limit_per_minute": 60,
            "rate_limit_burst": 3,
            "rate_limit_anonymous_per_minute": 60,
            "rate_limit_anonymous_burst": 2,
            "rate_limit_expensive_cost": 2,
        }

    async def test_limit_headers_then_429_with_retry_after(self, live, live_caller) -> None:
        base_url, _, _ = live
        async with httpx.AsyncClient(base_url=base_url) as http:
            responses = [
                await http.get("/v1/probe/context", headers=live_caller.headers()) for _ in range(4)
            ]
        assert [r.status_code for r in responses] == [200, 200, 200, 429]
        assert responses[0].headers["ratelimit-limit"] == "3"
        assert [r.headers["ratelimit-remaining"] for r in responses[:3]] == ["2", "1", "0"]
        limited = responses[3]
        assert limited.json()["code"] == "rate_limited"
        assert int(limited.headers["retry-after"]) >= 1

    async def test_two_users_of_one_tenant_have_separate_buckets(self, live, live_caller) -> None:
        base_url, _, _ = live
        async with httpx.AsyncClient(base_url=base_url) as http:
            for _ in range(3):
                await http.get("/v1/probe/context", headers=live_caller.headers("alice"))
            alice = await http.get("/v1/probe/context", headers=live_caller.headers("alice"))
            bob = await http.get("/v1/probe/context", headers=live_caller.headers("bob"))
        assert alice.status_code == 429
        assert bob.status_code == 200

    async def test_headers_cannot_reach_another_tenants_bucket(self, live, live_caller) -> None:
        """BUG-018: the bucket comes from the verified key, not from X-Tenant-ID/X-User-ID."""
        base_url, app, _ = live
        victim = await make_caller(app)
        async with httpx.AsyncClient(base_url=base_url) as http:
            # The attacker exhausts "alice" while claiming to be the victim's tenant...
            for _ in range(5):
                await http.get(
                    "/v1/probe/context",
                    headers=live_caller.headers("alice", **{"X-Tenant-ID": str(victim.tenant_id)}),
                )
            # ...which only ever charged the attacker's own bucket.
            victim_alice = await http.get("/v1/probe/context", headers=victim.headers("alice"))
            attacker_alice = await http.get(
                "/v1/probe/context", headers=live_caller.headers("alice")
            )
        assert victim_alice.status_code == 200
        assert victim_alice.headers["ratelimit-remaining"] == "2"
        assert attacker_alice.status_code == 429

    async def test_anonymous_traffic_is_limited_by_client_ip(self, live) -> None:
        base_url, _, _ = live
        async with httpx.AsyncClient(base_url=base_url) as http:
            responses = [
                await http.get("/v1/probe/context", headers={"X-Forwarded-For": f"10.0.0.{n}"})
                for n in range(4)
            ]
            codes = [r.status_code for r in responses]
            health = await http.get("/health")
            console = [(await http.get("/console/app.js")).status_code for _ in range(5)]
        # Untrusted X-Forwarded-For is ignored: all four share 127.0.0.1's bucket.
        assert codes == [401, 401, 429, 429]
        assert health.status_code == 200  # operational endpoints are never limited
        assert console == [200] * 5  # nor are the console's files, loaded before any key

    async def test_forwarded_for_is_believed_only_from_trusted_proxies(
        self, unstarted_app: FastAPI, settings: Settings
    ) -> None:
        from atelier.app import create_app

        trusting = create_app(settings.model_copy(update={"trusted_proxies": ["127.0.0.0/8"]}))
        async with serve(trusting) as base_url, httpx.AsyncClient(base_url=base_url) as http:
            codes = [
                (
                    await http.get(
                        "/v1/probe/context",
                        headers={"X-Forwarded-For": f"203.0.113.{n}, 127.0.0.1"},
                    )
                ).status_code
                for n in range(4)
            ]
            spoofed_to_proxy = [
                (await http.get("/v1/x", headers={"X-Forwarded-For": "203.0.113.9"})).status_code
                for _ in range(3)
            ]
        # Behind a trusted proxy each client has its own bucket...
        assert codes == [401, 401, 401, 401]
        # ...and one client is still limited however the request is dressed.
        assert spoofed_to_proxy == [401, 401, 429]

    async def test_expensive_requests_cost_more(self, live, live_caller) -> None:
        base_url, _, _ = live
        async with httpx.AsyncClient(base_url=base_url) as http:
            first = await http.post("/v1/conversations/x/runs", headers=live_caller.headers())
            second = await http.post("/v1/conversations/x/runs", headers=live_caller.headers())
        assert first.headers["ratelimit-remaining"] == "1"
        assert second.status_code == 429


@pytest.mark.parametrize("backend", ["services"])
class TestRedisFailure:
    @pytest.fixture
    def settings_overrides(self) -> dict[str, object]:
        # Nothing listens there: every Redis call fails.
        return {
            "redis_url": f"redis://127.0.0.1:{free_port()}/0",
            "rate_limit_enabled": True,
            "rate_limit_per_minute": 60,
            "rate_limit_burst": 3,
            "rate_limit_expensive_cost": 2,
        }

    async def test_limits_still_enforced_and_fallback_counted(self, live, live_caller) -> None:
        """BUG-021: a dead Redis never switches limits off."""
        base_url, app, _ = live
        async with httpx.AsyncClient(base_url=base_url) as http:
            codes = [
                (await http.get("/v1/probe/context", headers=live_caller.headers())).status_code
                for _ in range(5)
            ]
            metrics = (await http.get("/metrics")).text
        assert codes == [200, 200, 200, 429, 429]
        fallbacks = app.state.metrics.rate_limit_fallbacks._value.get()
        assert fallbacks == 5
        assert "atelier_rate_limit_fallbacks_total 5.0" in metrics
        assert (
            'atelier_rate_limit_decisions_total{decision="limited",limiter="fallback"} 2.0'
            in metrics
        )


@pytest.mark.parametrize("backend", ["services"])
class TestSharedLimitsOnRedis:
    @pytest.fixture
    def settings_overrides(self) -> dict[str, object]:
        return {
            "rate_limit_enabled": True,
            "rate_limit_per_minute": 60,
            "rate_limit_burst": 3,
            "rate_limit_expensive_cost": 2,
        }

    async def test_two_processes_share_one_bucket_through_redis(
        self, live, live_caller, settings: Settings
    ) -> None:
        from atelier.app import create_app

        base_url, _, _ = live
        second = create_app(settings)
        add_probe_routes(second, {})
        headers = live_caller.headers()
        async with serve(second) as second_url, httpx.AsyncClient() as http:
            codes = [
                (await http.get(f"{url}/v1/probe/context", headers=headers)).status_code
                for url in (base_url, second_url, base_url, second_url)
            ]
            metrics = (await http.get(f"{second_url}/metrics")).text
        assert codes == [200, 200, 200, 429]
        assert (
            'atelier_rate_limit_decisions_total{decision="limited",limiter="redis"} 1.0' in metrics
        )


@pytest.mark.parametrize("backend", ["services"])
class TestOneRedisPool:
    @pytest.fixture
    def settings_overrides(self) -> dict[str, object]:
        return {"rate_limit_enabled": True}  # every request goes to Redis

    async def test_concurrent_first_requests_create_exactly_one_pool(
        self, unstarted_app: FastAPI, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """BUG-012: the client is created once, in the lifespan."""
        created: list[ConnectionPool] = []
        original = ConnectionPool.__init__

        def counting_init(self, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
            created.append(self)
            original(self, *args, **kwargs)

        monkeypatch.setattr(ConnectionPool, "__init__", counting_init)
        add_probe_routes(unstarted_app, {})
        async with serve(unstarted_app) as base_url:
            caller = await make_caller(unstarted_app)
            async with httpx.AsyncClient(base_url=base_url) as http:
                responses = await asyncio.gather(
                    *(
                        http.get("/v1/probe/context", headers=caller.headers(f"u{n}"))
                        for n in range(50)
                    )
                )
        assert {r.status_code for r in responses} == {200}
        assert len(created) == 1
