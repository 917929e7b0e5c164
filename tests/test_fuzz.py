"""The whole API fuzzed from its own OpenAPI schema (schemathesis), on a real server:
no input a client can send gets a 5xx, and every response matches what is documented
(its schema and content type). Embedded and on PostgreSQL + Redis + S3: PostgreSQL
refuses what SQLite takes (NUL characters in text, for one)."""

from __future__ import annotations

import asyncio
import os
import shutil
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import schemathesis
import uvicorn
from hypothesis import HealthCheck
from hypothesis import settings as hypothesis_settings
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
)
from sqlalchemy.ext.asyncio import create_async_engine

from atelier.app import create_app
from atelier.db.engine import create_sessionmaker
from atelier.db.migrate import migrate
from atelier.settings import Settings
from atelier.tenants.service import create_api_key, create_tenant
from tests.conftest import free_port, redis_and_s3

# `make test` replays the same examples on every run (derandomized), so CI never fails
# on an input it happened to draw that day; `make fuzz` draws new ones, more of them.
EXPLORE = os.environ.get("ATELIER_FUZZ_EXPLORE") == "1"
EXAMPLES = int(os.environ.get("ATELIER_FUZZ_EXAMPLES", "60"))


@dataclass
class LiveApi:
    url: str
    headers: dict[str, str]


def _key_for(database_url: str) -> str:
    async def make() -> str:
        engine = create_async_engine(database_url)
        await migrate(engine)
        async with create_sessionmaker(engine)() as session:
            tenant = await create_tenant(session, f"fuzz-{uuid.uuid4().hex[:6]}")
            issued = await create_api_key(session, tenant, "fuzz")
            await session.commit()
        await engine.dispose()
        return issued.secret

    return asyncio.run(make())


@pytest.fixture(scope="module", params=["embedded", "services"])
def live_api(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveApi]:
    data_dir = tmp_path_factory.mktemp("fuzz") / ".atelier"
    data_dir.mkdir()
    values: dict[str, object] = {
        "environment": "test",
        "data_dir": data_dir,
        "rate_limit_enabled": False,
        "log_level": "ERROR",
        "offline_model_delay_seconds": 0,
        "title_wait_seconds": 0,
    }
    if request.param == "embedded":
        shutil.copy(request.getfixturevalue("migrated_sqlite_template"), data_dir / "atelier.db")
        database_url = f"sqlite+aiosqlite:///{data_dir / 'atelier.db'}"
    else:
        database_url = request.getfixturevalue("postgres").create(f"fuzz_{uuid.uuid4().hex[:6]}")
        values |= {"database_url": database_url, **redis_and_s3(request, "atelier-fuzz")}
    key = _key_for(database_url)
    port = free_port()
    app = create_app(Settings(**values))  # type: ignore[arg-type]
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, lifespan="on")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        if not thread.is_alive():
            raise RuntimeError("the server did not start")
        threading.Event().wait(0.05)
    yield LiveApi(
        url=f"http://127.0.0.1:{port}",
        headers={"Authorization": f"Bearer {key}", "X-User-ID": "fuzzer"},
    )
    server.should_exit = True
    thread.join(30)


# The schema is the app's own (it needs no running app); the calls go to a live server.
schema = schemathesis.openapi.from_dict(create_app(Settings(environment="test")).openapi())


@schema.parametrize()
@hypothesis_settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    database=None,
    derandomize=not EXPLORE,
)
def test_no_input_gets_a_5xx_or_an_undocumented_response(case, live_api: LiveApi) -> None:
    case.call_and_validate(
        base_url=live_api.url,
        headers=live_api.headers,
        checks=[not_a_server_error, response_schema_conformance, content_type_conformance],
        timeout=30,
    )
