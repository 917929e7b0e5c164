import httpx
import pytest

from atelier.settings import Settings
from tests.conftest import free_port


class TestHealth:
    async def test_health_is_open(self, client: httpx.AsyncClient) -> None:
        response = await client.get("/health")
        assert response.status_code == 200
        assert response.json() == {"status": "ok"}


class TestReady:
    async def test_ready_when_every_backend_answers(self, client: httpx.AsyncClient) -> None:
        response = await client.get("/ready")
        assert response.status_code == 200
        assert response.json()["checks"] == {
            "database": "ok",
            "coordination": "ok",
            "storage": "ok",
            "secrets": "ok",
        }


@pytest.mark.parametrize("backend", ["services"])
class TestNotReady:
    @pytest.fixture
    def settings_overrides(self) -> dict[str, object]:
        return {"redis_url": f"redis://127.0.0.1:{free_port()}/0"}

    async def test_ready_names_the_failed_backend(
        self, client: httpx.AsyncClient, settings: Settings
    ) -> None:
        response = await client.get("/ready")
        assert response.status_code == 503
        assert response.headers["content-type"] == "application/problem+json"
        body = response.json()
        assert body["code"] == "not_ready"
        assert "coordination" in body["detail"]
        assert body["checks"]["database"] == "ok"
        assert body["checks"]["coordination"].startswith("unavailable")


@pytest.mark.parametrize("backend", ["services"])
class TestStorageNotReady:
    @pytest.fixture
    def settings_overrides(self) -> dict[str, object]:
        return {"s3_endpoint_url": f"http://127.0.0.1:{free_port()}"}

    async def test_ready_names_storage_when_s3_is_down(self, client: httpx.AsyncClient) -> None:
        response = await client.get("/ready")
        assert response.status_code == 503
        assert response.json()["checks"]["storage"] != "ok"
        assert "storage" in response.json()["detail"]
