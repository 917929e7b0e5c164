import httpx
import pytest
from pydantic import ValidationError

from atelier.app import create_app
from atelier.settings import Settings


class TestProductionRefusesUnsafeDefaults:
    def test_embedded_defaults_are_refused_with_every_reason(self) -> None:
        with pytest.raises(ValidationError) as raised:
            Settings(environment="production")
        message = str(raised.value)
        assert "ATELIER_DATABASE_URL" in message
        assert "ATELIER_REDIS_URL" in message
        assert "ATELIER_S3_BUCKET" in message

    def test_sqlite_url_is_refused_in_production(self) -> None:
        with pytest.raises(ValidationError, match="SQLite is embedded-only"):
            Settings(
                environment="production",
                database_url="sqlite+aiosqlite:///x.db",
                redis_url="redis://r",
                s3_bucket="b",
            )

    def test_production_with_real_backends_is_accepted(self) -> None:
        settings = Settings(
            environment="production",
            database_url="postgresql+asyncpg://db/atelier",
            redis_url="redis://redis:6379/0",
            s3_bucket="workspaces",
        )
        assert settings.json_logs

    def test_environment_variables_and_dotenv_are_read(
        self, monkeypatch: pytest.MonkeyPatch, tmp_path
    ) -> None:
        monkeypatch.chdir(tmp_path)
        (tmp_path / ".env").write_text("ATELIER_RATE_LIMIT_BURST=17\n")
        monkeypatch.setenv("ATELIER_TRUSTED_PROXIES", "10.0.0.0/8, 192.168.1.1")
        settings = Settings()
        assert settings.rate_limit_burst == 17
        assert settings.trusted_proxies == ["10.0.0.0/8", "192.168.1.1"]

    def test_invalid_proxy_network_is_refused(self) -> None:
        with pytest.raises(ValidationError):
            Settings(trusted_proxies=["not-a-network"])

    def test_expensive_cost_must_fit_the_burst(self) -> None:
        with pytest.raises(ValidationError, match="EXPENSIVE_COST"):
            Settings(rate_limit_burst=5, rate_limit_expensive_cost=6)


class TestTwoAppsInOneProcess:
    """BUG-020: settings are passed in, never cached globally."""

    async def test_apps_built_from_different_settings_behave_differently(
        self, embedded_settings
    ) -> None:
        guarded = create_app(embedded_settings("a", metrics_token="scrape-secret"))
        open_ = create_app(embedded_settings("b"))
        async with (
            guarded.router.lifespan_context(guarded),
            open_.router.lifespan_context(open_),
            httpx.AsyncClient(transport=httpx.ASGITransport(guarded), base_url="http://a") as a,
            httpx.AsyncClient(transport=httpx.ASGITransport(open_), base_url="http://b") as b,
        ):
            assert (await a.get("/metrics")).status_code == 401
            assert (await b.get("/metrics")).status_code == 200
            # Each app uses its own database file, too.
            assert guarded.state.resources.engine.url != open_.state.resources.engine.url
            # ... and its own metrics registry.
            assert guarded.state.metrics.registry is not open_.state.metrics.registry


class TestStartup:
    async def test_an_unmigrated_database_is_refused_with_a_clear_message(self, tmp_path) -> None:
        from atelier.app import SchemaNotAtHead

        app = create_app(Settings(environment="test", data_dir=tmp_path))
        with pytest.raises(SchemaNotAtHead, match="atelier migrate"):
            async with app.router.lifespan_context(app):
                pass


def test_importing_the_app_registers_every_table() -> None:
    """A fresh process that only imports the app must know every table a foreign key names
    (usage_records -> runs): the serving process never imports the migration environment."""
    import subprocess
    import sys

    code = (
        "import atelier.app; from atelier.db.base import Base; "
        "import sys; sys.exit(0 if {'runs', 'usage_records', 'messages', 'storage_cleanups'} "
        "<= set(Base.metadata.tables) else 1)"
    )
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0
