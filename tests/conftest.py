"""Shared fixtures: a backend matrix (embedded vs PostgreSQL + Redis), apps, clients, keys.

PostgreSQL and Redis are used for real. Where they are unreachable, the cases that need
them skip -- unless ATELIER_REQUIRE_SERVICES=1 (CI), where they fail.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import asyncpg
import httpx
import pytest
import redis
from blockbuster import BlockBuster, blockbuster_ctx
from fastapi import FastAPI
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine

from atelier.app import create_app
from atelier.db.migrate import migrate
from atelier.db.models import Base
from atelier.settings import Settings
from atelier.tenants.service import create_api_key, create_tenant

# Fixtures of their own modules: several processes sharing the services, an MCP server.
pytest_plugins = ["tests.fixtures.processes", "tests.fixtures.mcp"]

if TYPE_CHECKING:
    from tests.faults import RedisServer

POSTGRES_URL = os.environ.get(
    "ATELIER_TEST_POSTGRES_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres"
)
REDIS_URL = os.environ.get("ATELIER_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
REQUIRE_SERVICES = os.environ.get("ATELIER_REQUIRE_SERVICES") == "1"
RUN_ID = uuid.uuid4().hex[:10]


@pytest.fixture(autouse=True)
def blockbuster() -> Iterator[BlockBuster]:
    """Any blocking call (file or socket I/O, ``time.sleep``, a held lock, sqlite3) made on the
    event loop with Atelier's code on the stack fails the test that made it: deterministic,
    where a loop-lag threshold fails on a busy machine and passes a short block."""
    with blockbuster_ctx(["atelier"]) as detector:
        for function in detector.functions.values():
            for module, names in UNAVOIDABLE_BLOCKING:
                function.can_block_in(module, names)
        yield detector


# What libraries do on the loop that we cannot move off it; each is short and rare.
UNAVOIDABLE_BLOCKING = [
    # FastAPI reads an endpoint's source file once (then caches it) for its error context.
    ("fastapi/routing.py", {"_extract_endpoint_context"}),
    # asyncpg looks for ~/.pgpass and ~/.postgresql/ certificates as it opens a connection.
    ("asyncpg/connect_utils.py", {"_parse_connect_dsn_and_args"}),
    # redis-py reads its own package version for CLIENT SETINFO on each new connection.
    ("redis/utils.py", {"get_lib_version"}),
    # Migrations are an admin command (`atelier migrate`, or `serve` before it serves):
    # Alembic reads its scripts from disk inside SQLAlchemy's run_sync.
    ("atelier/db/migrate.py", {"_upgrade", "current_revision", "head_revision"}),
    ("alembic/command.py", {"upgrade", "downgrade"}),
]


def unavailable(what: str, error: BaseException) -> None:
    message = f"{what} is not reachable: {error!r}"
    if REQUIRE_SERVICES:
        pytest.fail(f"{message} (ATELIER_REQUIRE_SERVICES=1)")
    pytest.skip(message)


def asyncpg_dsn(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


async def _admin(sql: str) -> None:
    connection = await asyncpg.connect(asyncpg_dsn(POSTGRES_URL), timeout=3)
    try:
        await connection.execute(sql)
    finally:
        await connection.close()


class PostgresDatabases:
    """Creates uniquely named databases on the test server and drops them at the end."""

    def __init__(self) -> None:
        self.created: list[str] = []

    def create(self, label: str) -> str:
        name = f"atelier_test_{RUN_ID}_{label}"
        asyncio.run(_admin(f'CREATE DATABASE "{name}"'))
        self.created.append(name)
        return make_url(POSTGRES_URL).set(database=name).render_as_string(hide_password=False)

    def drop_all(self) -> None:
        for name in self.created:
            asyncio.run(_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresDatabases]:
    try:
        asyncio.run(_admin("SELECT 1"))
    except Exception as exc:
        unavailable("PostgreSQL", exc)
    databases = PostgresDatabases()
    yield databases
    databases.drop_all()


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    """A redis-server of the test's own, that it may stop and start again."""
    from tests.faults import RedisServer  # here: tests.faults imports this module

    if shutil.which("redis-server") is None:
        if REQUIRE_SERVICES:
            pytest.fail("redis-server is needed to stop and start a Redis")
        pytest.skip("redis-server is not installed")
    server = RedisServer()
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def redis_url() -> str:
    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2).ping()
    except Exception as exc:
        unavailable("Redis", exc)
    return REDIS_URL


@pytest.fixture(scope="session")
def migrated_postgres_url(postgres: PostgresDatabases) -> str:
    url = postgres.create("shared")

    async def upgrade() -> None:
        engine = create_async_engine(url)
        await migrate(engine)
        await engine.dispose()

    asyncio.run(upgrade())
    return url


@pytest.fixture(scope="session")
def migrated_sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("sqlite-template") / "atelier.db"

    async def upgrade() -> None:
        engine = create_async_engine(f"sqlite+aiosqlite:///{path}")
        await migrate(engine)
        await engine.dispose()

    asyncio.run(upgrade())
    return path


def _truncate_all(url: str) -> None:
    # DELETE, children first, not TRUNCATE: a test leaves a few rows, and TRUNCATE makes
    # every table a new file (about 200 ms for 19 tables, per test; DELETE: about 1 ms).
    tables = reversed(Base.metadata.sorted_tables)
    asyncio.run(_admin_on(url, "; ".join(f'DELETE FROM "{table.name}"' for table in tables)))


async def _admin_on(url: str, sql: str) -> None:
    connection = await asyncpg.connect(asyncpg_dsn(url), timeout=3)
    try:
        await connection.execute(sql)
    finally:
        await connection.close()


class MotoS3:
    """moto's S3 server (ThreadedMotoServer) in a process of its own: real HTTP, real S3
    protocol, and its request parsing never competes with the app for our GIL."""

    def __init__(self) -> None:
        import subprocess
        import sys
        import time

        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        code = (
            "import time; from moto.server import ThreadedMotoServer; "
            f"s = ThreadedMotoServer(ip_address='127.0.0.1', port={self.port}, verbose=False); "
            "s.start(); time.sleep(10**9)"
        )
        self.process = subprocess.Popen([sys.executable, "-c", code])
        deadline = time.monotonic() + 30
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    break
            except OSError:
                if time.monotonic() > deadline or self.process.poll() is not None:
                    raise RuntimeError("moto server did not start") from None
                time.sleep(0.1)

    def client(self):  # type: ignore[no-untyped-def]
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            region_name="us-east-1",
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(10)


@pytest.fixture(scope="session")
def moto() -> Iterator[MotoS3]:
    server = MotoS3()
    yield server
    server.stop()


@pytest.fixture
def embedded_settings(tmp_path: Path, migrated_sqlite_template: Path):  # type: ignore[no-untyped-def]
    """Build embedded Settings on a fresh, migrated data dir: ``embedded_settings("a", k=v)``."""

    def build(name: str = "app", **overrides: object) -> Settings:
        data_dir = tmp_path / name / ".atelier"
        data_dir.mkdir(parents=True)
        shutil.copy(migrated_sqlite_template, data_dir / "atelier.db")
        return Settings(environment="test", data_dir=data_dir, **overrides)  # type: ignore[arg-type]

    return build


@pytest.fixture(params=["embedded", "services"])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def settings_overrides() -> dict[str, object]:
    """Override in a test module (or parametrize) to change the settings under test."""
    return {}


@pytest.fixture
def settings(
    backend: str,
    tmp_path: Path,
    request: pytest.FixtureRequest,
    settings_overrides: dict[str, object],
) -> Settings:
    data_dir = tmp_path / ".atelier"
    data_dir.mkdir()
    values: dict[str, object] = {
        "environment": "test",
        "data_dir": data_dir,
        "log_format": "console",
        # Limits are tested on their own (tests/http/test_edge.py); elsewhere they would only
        # make request-heavy tests depend on timing.
        "rate_limit_enabled": False,
    }
    if backend == "embedded":
        template = request.getfixturevalue("migrated_sqlite_template")
        shutil.copy(template, data_dir / "atelier.db")
    else:
        database_url = request.getfixturevalue("migrated_postgres_url")
        _truncate_all(database_url)
        values |= {"database_url": database_url, **redis_and_s3(request, "atelier-test")}
    return Settings(**(values | settings_overrides))  # type: ignore[arg-type]


def redis_and_s3(request: pytest.FixtureRequest, name: str) -> dict[str, object]:
    """Settings for the real Redis (a key prefix of its own) and a new bucket on moto."""
    moto: MotoS3 = request.getfixturevalue("moto")
    bucket = f"{name}-{uuid.uuid4().hex[:12]}"
    moto.client().create_bucket(Bucket=bucket)
    return {
        "redis_url": request.getfixturevalue("redis_url"),
        "redis_key_prefix": f"{name}:{uuid.uuid4().hex[:8]}:",
        "s3_bucket": bucket,
        "s3_endpoint_url": moto.endpoint,
        "s3_access_key_id": "testing",
        "s3_secret_access_key": "testing",
    }


@pytest.fixture
async def app(settings: Settings) -> AsyncIterator[FastAPI]:
    application = create_app(settings)
    async with application.router.lifespan_context(application):
        yield application


@dataclass
class Caller:
    tenant_id: uuid.UUID
    tenant_name: str
    key: str

    def headers(self, user: str | None = "alice", **extra: str) -> dict[str, str]:
        headers = {"Authorization": f"Bearer {self.key}", **extra}
        if user is not None:
            headers["X-User-ID"] = user
        return headers


async def make_caller(app: FastAPI, name: str | None = None) -> Caller:
    async with app.state.resources.sessionmaker() as session:
        tenant = await create_tenant(session, name or f"tenant-{uuid.uuid4().hex[:8]}")
        issued = await create_api_key(session, tenant, "test")
        await session.commit()
    return Caller(tenant_id=tenant.id, tenant_name=tenant.name, key=issued.secret)


@pytest.fixture
async def caller(app: FastAPI) -> Caller:
    return await make_caller(app)


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://atelier.test") as http:
        yield http


@pytest.fixture
async def served(app: FastAPI) -> AsyncIterator[str]:
    """The app served by uvicorn on a loopback port: its base URL, for real clients."""
    from tests.live import serve_started  # imported here: tests.live imports this module

    async with serve_started(app) as url:
        yield url


@pytest.fixture
async def elsewhere(
    app: FastAPI, settings: Settings, tmp_path: Path
) -> AsyncIterator[httpx.AsyncClient]:
    """A second process of the same deployment (its own Redis connections, run manager
    and workspace copies), reached as a client would reach it: for the services backend."""
    from tests.live import serve

    other = create_app(settings.model_copy(update={"data_dir": tmp_path / "other"}))
    async with serve(other) as url, httpx.AsyncClient(base_url=url, timeout=60) as there:
        yield there


@pytest.fixture
async def tcp(served: str) -> AsyncIterator[httpx.AsyncClient]:
    """A plain client of the served app, over a real socket."""
    async with httpx.AsyncClient(base_url=served, timeout=60) as client:
        yield client


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def unstarted_app(settings: Settings) -> FastAPI:
    """An app whose lifespan has not run (for real servers, which run it themselves)."""
    return create_app(settings)
