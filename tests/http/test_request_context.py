import ipaddress

import httpx
import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from atelier.http.scope import client_ip

EXPORTER = InMemorySpanExporter()


@pytest.fixture(scope="module", autouse=True)
def _tracer_provider() -> None:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(EXPORTER))
    trace.set_tracer_provider(provider)


class TestOpenTelemetry:
    @pytest.fixture
    def settings_overrides(self) -> dict[str, object]:
        return {"otel_enabled": True}

    async def test_a_server_span_per_request_with_route_and_status(
        self, client: httpx.AsyncClient
    ) -> None:
        EXPORTER.clear()
        response = await client.get("/health", headers={"X-Request-ID": "trace-me"})
        assert response.status_code == 200
        (span,) = [s for s in EXPORTER.get_finished_spans() if s.kind == trace.SpanKind.SERVER]
        assert span.attributes["atelier.request_id"] == "trace-me"
        assert span.attributes["http.route"] == "/health"
        assert span.attributes["http.response.status_code"] == 200

    async def test_no_spans_unless_enabled(self, embedded_settings) -> None:
        from atelier.app import create_app

        app = create_app(embedded_settings())
        EXPORTER.clear()
        async with (
            app.router.lifespan_context(app),
            httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://x") as http,
        ):
            assert (await http.get("/health")).status_code == 200
        assert EXPORTER.get_finished_spans() == ()


class TestRequestIds:
    async def test_insane_request_ids_are_replaced(self, client: httpx.AsyncClient) -> None:
        response = await client.get("/health", headers={"X-Request-ID": "bad id with spaces"})
        assert response.headers["x-request-id"] != "bad id with spaces"
        assert len(response.headers["x-request-id"]) == 32

    async def test_validation_errors_are_problems(self, client: httpx.AsyncClient) -> None:
        response = await client.get("/health", headers={"X-User-ID": "a b"})
        assert response.status_code == 400
        assert response.json()["code"] == "invalid_user_id"


PROXIES = [ipaddress.ip_network("10.0.0.0/8")]


@pytest.mark.parametrize(
    ("peer", "forwarded", "expected"),
    [
        ("203.0.113.5", "198.51.100.1", "203.0.113.5"),  # not a proxy: header ignored
        ("10.0.0.2", "198.51.100.1", "198.51.100.1"),
        ("10.0.0.2", "198.51.100.1, 10.0.0.7", "198.51.100.1"),  # skip trusted hops
        ("10.0.0.2", "6.6.6.6, 198.51.100.1", "198.51.100.1"),  # leftmost is client-controlled
        ("10.0.0.2", "not-an-ip", "10.0.0.2"),
        ("10.0.0.2", None, "10.0.0.2"),
    ],
)
def test_client_ip(peer: str, forwarded: str | None, expected: str) -> None:
    headers = [(b"x-forwarded-for", forwarded.encode())] if forwarded else []
    scope = {"client": (peer, 1234), "headers": headers}
    assert client_ip(scope, PROXIES) == expected


class TestHsts:
    async def test_hsts_only_over_https(self, app) -> None:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="https://atelier.test") as https:
            secure = await https.get("/health")
        async with httpx.AsyncClient(transport=transport, base_url="http://atelier.test") as http:
            plain = await http.get("/health")
        assert secure.headers["strict-transport-security"].startswith("max-age=")
        assert "strict-transport-security" not in plain.headers
