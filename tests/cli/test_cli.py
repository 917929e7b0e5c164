import asyncio
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from sqlalchemy.ext.asyncio import create_async_engine
from typer.testing import CliRunner

from atelier.cli import app
from atelier.db.engine import create_sessionmaker
from atelier.tenants.service import verify_api_key
from tests.conftest import free_port


@pytest.fixture
def cli_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("ATELIER_ENVIRONMENT", "test")
    monkeypatch.setenv("ATELIER_DATA_DIR", str(tmp_path / ".atelier"))
    return tmp_path


async def _verify(db: Path, secret: str) -> bool:
    engine = create_async_engine(f"sqlite+aiosqlite:///{db}")
    try:
        async with create_sessionmaker(engine)() as session:
            return await verify_api_key(session, secret) is not None
    finally:
        await engine.dispose()


class TestTenantAndKeyCommands:
    def test_create_tenant_then_key_then_revoke(self, cli_env: Path) -> None:
        runner = CliRunner()
        assert runner.invoke(app, ["migrate"]).exit_code == 0
        created = runner.invoke(app, ["tenants", "create", "acme"])
        assert created.exit_code == 0, created.output
        assert "created tenant acme" in created.output

        issued = runner.invoke(app, ["keys", "create", "--tenant", "acme", "--name", "ci"])
        assert issued.exit_code == 0, issued.output
        secret = issued.stdout.strip().splitlines()[-1]
        assert secret.startswith("atl_")
        db = cli_env / ".atelier" / "atelier.db"
        assert asyncio.run(_verify(db, secret))

        key_id = next(
            line.split(": ")[1] for line in issued.output.splitlines() if line.startswith("key id")
        )
        revoked = runner.invoke(app, ["keys", "revoke", key_id])
        assert revoked.exit_code == 0, revoked.output
        assert not asyncio.run(_verify(db, secret))
        again = runner.invoke(app, ["keys", "revoke", key_id])
        assert again.exit_code == 1

    def test_duplicate_and_invalid_tenants_are_refused(self, cli_env: Path) -> None:
        runner = CliRunner()
        runner.invoke(app, ["migrate"])
        assert runner.invoke(app, ["tenants", "create", "acme"]).exit_code == 0
        duplicate = runner.invoke(app, ["tenants", "create", "acme"])
        assert duplicate.exit_code == 1
        assert "already exists" in duplicate.output
        assert runner.invoke(app, ["tenants", "create", "Bad Name!"]).exit_code == 1

    def test_key_for_unknown_tenant_is_refused(self, cli_env: Path) -> None:
        runner = CliRunner()
        runner.invoke(app, ["migrate"])
        result = runner.invoke(app, ["keys", "create", "--tenant", "nobody"])
        assert result.exit_code == 1
        assert "no tenant" in result.output

    def test_invalid_configuration_exits_with_a_clear_message(
        self, cli_env: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setenv("ATELIER_ENVIRONMENT", "production")
        result = CliRunner().invoke(app, ["migrate"])
        assert result.exit_code == 2
        assert "production mode refuses unsafe defaults" in result.output

    def test_serve_refuses_workers_without_redis(self, cli_env: Path) -> None:
        result = CliRunner().invoke(app, ["serve", "--workers", "2"])
        assert result.exit_code == 2
        assert "ATELIER_REDIS_URL" in result.output


class TestServeSmoke:
    """`atelier serve` as a newcomer runs it: embedded defaults, a dev key, a clean stop."""

    def test_serve_health_dev_key_and_clean_shutdown(self, tmp_path: Path) -> None:
        port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("ATELIER_")}
        process = subprocess.Popen(
            [sys.executable, "-m", "atelier", "serve", "--port", str(port)],
            cwd=tmp_path,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        try:
            base = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 30
            while True:
                assert process.poll() is None, process.stdout.read().decode()  # type: ignore[union-attr]
                try:
                    health = httpx.get(f"{base}/health", timeout=1)
                    break
                except httpx.TransportError:
                    assert time.monotonic() < deadline, "server did not start in 30 s"
                    time.sleep(0.1)
            assert health.status_code == 200
            assert health.json() == {"status": "ok"}

            key_file = tmp_path / ".atelier" / "dev-api-key"
            assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
            key = key_file.read_text().strip()
            # The key works: an authenticated request is routed (404), not rejected (401).
            known = httpx.get(f"{base}/v1/unknown", headers={"Authorization": f"Bearer {key}"})
            assert known.status_code == 404
            anonymous = httpx.get(f"{base}/v1/unknown")
            assert anonymous.status_code == 401
            assert httpx.get(f"{base}/ready").status_code == 200
            # What it writes is its own: an upload, the database and its WAL, the keys.
            user = {"Authorization": f"Bearer {key}", "X-User-ID": "me"}
            made = httpx.post(f"{base}/v1/conversations", json={}, headers=user)
            put = httpx.put(
                f"{base}/v1/conversations/{made.json()['id']}/files/notes.txt",
                content=b"private",
                headers=user,
            )
            assert put.status_code == 201
            data = tmp_path / ".atelier"
            for path in [data, *data.rglob("*")]:
                mode = stat.S_IMODE(path.stat().st_mode)
                assert mode & 0o077 == 0, f"{path} is {oct(mode)}"
            assert any(p.name == "atelier.db-wal" for p in data.rglob("*"))
            assert any(p.name == "notes.txt" for p in data.rglob("*"))
        finally:
            process.send_signal(signal.SIGTERM)
            output = process.communicate(timeout=30)[0].decode()
        # uvicorn re-raises SIGTERM after a graceful shutdown, so "killed by TERM" is clean too.
        assert process.returncode in (0, -signal.SIGTERM), output
        assert key in output  # printed once, for the newcomer
        assert "Application shutdown complete" in output

    def test_second_serve_keeps_the_first_key(self, cli_env: Path) -> None:
        from atelier.bootstrap import ensure_dev_tenant
        from atelier.db.migrate import migrate

        async def twice() -> tuple[str | None, str | None]:
            engine = create_async_engine(f"sqlite+aiosqlite:///{cli_env / 'dev.db'}")
            try:
                await migrate(engine)
                first = await ensure_dev_tenant(engine, cli_env / "key")
                second = await ensure_dev_tenant(engine, cli_env / "key")
                return first, second
            finally:
                await engine.dispose()

        first, second = asyncio.run(twice())
        assert first is not None
        assert second is None
        assert (cli_env / "key").read_text().strip() == first
